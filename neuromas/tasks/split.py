"""Tasks where communication is necessary: each first-layer node is given its own part of the
input, and the answering node only what it must combine (distributed context).

- ``split_arithmetic``: ``(a op b) op2 (c op d)`` with op in + - and op2 in + -. First-layer
  node i is given only part i (``Compute X = a op b.`` or ``Compute Y = c op d.``); the
  answering node is given only ``X op2 Y`` and where X and Y are, so it can answer only from
  the messages. Each part's value lies in ``0..2 * max_value``. A one-node system is given the
  whole expression.
- ``split_lookup``: the lookup task (follow a table of names `depth` times) with the table split
  between the first-layer nodes: node i holds every `width`-th row from row i (2 nodes: halves
  by alternation). The answering node is given the start and the number of hops but no row.

A first-layer message is scored for its own part (`part_correct`): a diagnostic that is logged
per node and is not in the reward.
"""

from __future__ import annotations

import random

from neuromas.tasks.generated import GeneratedSource
from neuromas.tasks.synthetic import LookupSource
from neuromas.tasks.rewards import extract_answer, normalize
from neuromas.tasks.sample import Sample

PART_NAMES = ("X", "Y")
PART_OPERATORS = ("+", "-")
OUTER_OPERATORS = ("+", "-")


class SplitArithmeticSource(GeneratedSource):
    kind = "split_arithmetic"

    def __init__(self, max_value: int, seed: int, num_test: int):
        super().__init__(seed, num_test)
        self.max_value = max_value

    def _part(self, rng: random.Random) -> tuple[str, int]:
        a, b, op = rng.randint(1, self.max_value), rng.randint(1, self.max_value), rng.choice(PART_OPERATORS)
        a, b = (a, b) if op == "+" or a >= b else (b, a)  # a part's value is never negative
        return f"{a} {op} {b}", a + b if op == "+" else a - b

    def _sample(self, rng: random.Random, sample_id: str) -> Sample:
        (left, x), (right, y) = self._part(rng), self._part(rng)
        op = rng.choice(OUTER_OPERATORS)
        value = x + y if op == "+" else x - y
        first = [f"Compute X = {left}.", f"Compute Y = {right}."]
        sink = (f"Compute X {op} Y, where X is the value in the message from layer 1, node 1, and Y the value "
                "in the message from layer 1, node 2.")
        return Sample(id=sample_id, question=f"Compute ({left}) {op} ({right}).", answer=str(value),
                      meta={"parts": [x, y]}, views={"first": first, "sink": sink})


class SplitLookupSource(LookupSource):
    """Lookup with the table's rows shared out between `num_parts` first-layer nodes."""

    kind = "split_lookup"

    def __init__(self, depth: int, seed: int, num_test: int, table_size: int = 8, num_parts: int = 2):
        super().__init__(depth, seed, num_test, table_size)
        self.num_parts = num_parts

    def _sample(self, rng: random.Random, sample_id: str) -> Sample:
        question, answer, meta = self.make(rng)
        rows, task = question.split("\n")[1:-1], question.split("\n")[-1]
        first = ["You hold these rows of a table that maps each name to another name:\n"
                 + "\n".join(rows[i::self.num_parts]) + f"\nThe whole task: {task}" for i in range(self.num_parts)]
        sink = f"A table maps each name to another name; its rows are held by the nodes whose messages you read. {task}"
        return Sample(id=sample_id, question=question, answer=answer, meta=meta, views={"first": first, "sink": sink})


def part_correct(message: str, sample: Sample, index: int) -> float | None:
    """Whether first-layer node `index`'s message states its part's value (the boxed answer, else
    the last number); None for a sample without parts."""
    parts = sample.meta.get("parts")
    if not parts:
        return None
    answer = extract_answer(message)
    return float(answer is not None and normalize(answer) == str(parts[index % len(parts)]))
