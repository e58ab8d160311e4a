"""Task sources made by a seeded generator, with held-out test and validation splits."""

from __future__ import annotations

import random
from functools import cached_property
from typing import Callable

from neuromas.tasks.sample import Sample


def distinct_splits(num_test: int, draw: Callable[[str], Callable[[str], Sample]]) -> dict[str, list[Sample]]:
    """Test, then validation: `num_test` distinct questions each, disjoint from each other.
    `draw(split)` starts that split's own stream: a function from a sample id to its next sample."""
    seen: set[str] = set()
    splits = {}
    for split in ("test", "validation"):
        next_sample, samples = draw(split), []
        # Small spaces (depth 1, max 3) may hold fewer distinct questions than asked for.
        for _ in range(num_test * 50):
            sample = next_sample(f"{split}-{len(samples)}")
            if sample.question not in seen:
                seen.add(sample.question)
                samples.append(sample)
                if len(samples) == num_test:
                    break
        splits[split] = samples
    return splits


class GeneratedSource:
    """A seeded generator as a task source: `make(rng)` gives (question, answer, meta).

    The test and validation splits are `num_test` distinct questions each, from their own
    seeds; the train stream is a pure function of the sample index and never yields a question
    of either split.
    """

    kind = "generated"
    stream_seed: int | None = None  # the train stream's own seed (task.stream_seed); None: `seed`

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
        def draw(split: str):
            rng = random.Random(f"{self.kind}-{split}-{self.seed}")
            return lambda sample_id: self._sample(rng, sample_id)
        return distinct_splits(self.num_test, draw)

    @cached_property
    def _test_questions(self) -> set[str]:
        """Questions the train stream never yields: the test and validation splits."""
        return {s.question for split in self._splits.values() for s in split}

    def train_sample(self, index: int) -> Sample:
        stream = self.seed if self.stream_seed is None else f"{self.seed}.{self.stream_seed}"
        rng = random.Random(f"{self.kind}-train-{stream}-{index}")
        for _ in range(1000):
            sample = self._sample(rng, f"train-{index}")
            if sample.question not in self._test_questions:
                return sample
        raise AssertionError("the test split covers the whole question space; lower task.num_test")
