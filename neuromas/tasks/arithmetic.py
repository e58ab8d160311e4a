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


class ArithmeticSource:
    def __init__(self, depth: int, max_value: int, seed: int, num_test: int):
        self.depth, self.max_value, self.seed, self.num_test = depth, max_value, seed, num_test

    def _sample(self, rng: random.Random, sample_id: str) -> Sample:
        text, value = make_expression(rng, self.depth, self.max_value)
        return Sample(id=sample_id, question=f"Compute {text}.", answer=str(value))

    def test_samples(self) -> list[Sample]:
        return self._splits["test"]

    def validation_samples(self) -> list[Sample]:
        return self._splits["validation"]

    @cached_property
    def _splits(self) -> dict[str, list[Sample]]:
        """Test, then validation: each `num_test` distinct expressions, disjoint from each other."""
        seen: set[str] = set()
        splits = {}
        for split in ("test", "validation"):
            rng = random.Random(f"arithmetic-{split}-{self.seed}")
            samples = []
            # Small spaces (depth 1, max 3) may hold fewer distinct expressions than asked for.
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
        rng = random.Random(f"arithmetic-train-{self.seed}-{index}")
        for _ in range(1000):
            sample = self._sample(rng, f"train-{index}")
            if sample.question not in self._test_questions:
                return sample
        raise AssertionError("the test split covers the whole expression space; lower task.num_test")
