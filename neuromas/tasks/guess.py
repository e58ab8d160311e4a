"""The guessing game's games (task.name: guess; played in `envs.GuessingGame`)."""

from __future__ import annotations

import random
from functools import cached_property

from neuromas.tasks.generated import GeneratedSource
from neuromas.tasks.sample import Sample


class GuessSource(GeneratedSource):
    """The guessing game's games: a secret in [1, max_value] each (task.max_value)."""

    kind = "guess"

    def __init__(self, max_value: int, seed: int, num_test: int):
        super().__init__(seed, num_test)
        self.max_value = max_value

    def _sample(self, rng: random.Random, sample_id: str) -> Sample:
        secret = rng.randint(1, self.max_value)
        # The game's rules, which every turn's prompt repeats; the secret differs across samples, but
        # the question does not, so the splits tell games apart by id (the secret is in the answer).
        question = (f"Find my secret whole number from 1 to {self.max_value}. Each reply is one guess; I answer "
                    f"whether it is too low, too high or right.")
        return Sample(id=sample_id, question=question, answer=str(secret), meta={"high": self.max_value})

    # Every game has the same question (the secret is the answer, which no node sees), so the splits
    # are told apart by their seeds alone: a secret may recur, a game cannot be memorised.
    def _game(self, stream: str, index: int, prefix: str) -> Sample:
        return self._sample(random.Random(f"guess-{stream}-{self.seed}-{index}"), f"{prefix}-{index}")

    @cached_property
    def _splits(self) -> dict[str, list[Sample]]:
        return {split: [self._game(split, i, split) for i in range(self.num_test)] for split in ("test", "validation")}

    def train_sample(self, index: int) -> Sample:
        return self._game("train" if self.stream_seed is None else f"train.{self.stream_seed}", index, "train")
