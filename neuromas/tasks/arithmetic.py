"""Nested arithmetic: a seeded generator of expressions that need several steps.

``depth`` is the number of operators; ``(7 - 3) * (2 + 5)`` has depth 3. The test split is a
fixed set drawn from its own seed, as is a validation split; the train stream never yields
an expression of either.
"""

from __future__ import annotations

import random
from functools import cached_property

from neuromas.tasks.rewards import Sample

OPERATORS = ("+", "-", "*")


def make_expression(rng: random.Random, depth: int, max_value: int) -> tuple[str, int]:
    """A random expression with exactly `depth` operators and its integer value."""
    if depth == 0:
        value = rng.randint(1, max_value)
        return str(value), value
    left_ops = rng.randint(0, depth - 1)
    left, lv = make_expression(rng, left_ops, max_value)
    right, rv = make_expression(rng, depth - 1 - left_ops, max_value)
    op = rng.choice(OPERATORS)
    value = {"+": lv + rv, "-": lv - rv, "*": lv * rv}[op]
    wrap = lambda text, ops: f"({text})" if ops else text  # noqa: E731 - parenthesise sub-expressions
    return f"{wrap(left, left_ops)} {op} {wrap(right, depth - 1 - left_ops)}", value


class GeneratedSource:
    """A seeded generator as a task source: `make(rng)` gives (question, answer, meta).

    The test and validation splits are `num_test` distinct questions each, from their own
    seeds; the train stream is a pure function of the sample index and never yields a question
    of either split.
    """

    kind = "generated"

    def __init__(self, seed: int, num_test: int):
        self.seed, self.num_test = seed, num_test

    def make(self, rng: random.Random) -> tuple[str, str, dict]:
        raise NotImplementedError

    def _sample(self, rng: random.Random, sample_id: str) -> Sample:
        question, answer, meta = self.make(rng)
        return Sample(id=sample_id, question=question, answer=answer, meta=meta)

    def test_samples(self) -> list[Sample]:
        return self._splits["test"]

    def validation_samples(self) -> list[Sample]:
        return self._splits["validation"]

    @cached_property
    def _splits(self) -> dict[str, list[Sample]]:
        """Test, then validation: each `num_test` distinct questions, disjoint from each other."""
        seen: set[str] = set()
        splits = {}
        for split in ("test", "validation"):
            rng = random.Random(f"{self.kind}-{split}-{self.seed}")
            samples = []
            # Small spaces (depth 1, max 3) may hold fewer distinct questions than asked for.
            for _ in range(self.num_test * 50):
                sample = self._sample(rng, f"{split}-{len(samples)}")
                if sample.question not in seen:
                    seen.add(sample.question)
                    samples.append(sample)
                    if len(samples) == self.num_test:
                        break
            splits[split] = samples
        return splits

    @cached_property
    def _test_questions(self) -> set[str]:
        """Questions the train stream never yields: the test and validation splits."""
        return {s.question for split in self._splits.values() for s in split}

    def train_sample(self, index: int) -> Sample:
        rng = random.Random(f"{self.kind}-train-{self.seed}-{index}")
        for _ in range(1000):
            sample = self._sample(rng, f"train-{index}")
            if sample.question not in self._test_questions:
                return sample
        raise AssertionError("the test split covers the whole question space; lower task.num_test")


class ArithmeticSource(GeneratedSource):
    kind = "arithmetic"

    def __init__(self, depth: int, max_value: int, seed: int, num_test: int):
        super().__init__(seed, num_test)
        self.depth, self.max_value = depth, max_value

    def make(self, rng: random.Random) -> tuple[str, str, dict]:
        text, value = make_expression(rng, self.depth, self.max_value)
        return f"Compute {text}.", str(value), {}
