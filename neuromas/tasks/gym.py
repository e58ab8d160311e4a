"""reasoning-gym's generators as a task source (`task.name: reasoning_gym`, `task.dataset: <generator>`).

reasoning-gym (the optional extra `neuromas[reasoning-gym]`) ships about a hundred seeded
procedural generators, each with its own `score_answer` checker, and works offline. A generator
item depends only on (seed, index), so the train stream is endless and reproducible: item i of
the stream seed, skipping any question of the test and validation splits, which come from seeds
of their own. The reward is the generator's own checker, given the boxed answer (else the last
line of the reply).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
from functools import cached_property

from neuromas.errors import ConfigError
from neuromas.tasks.generated import distinct_splits
from neuromas.tasks.rewards import last_boxed
from neuromas.tasks.sample import Sample

STREAM = 10**12  # the size given to a generator: indices are never exhausted


def _import():
    try:
        import reasoning_gym
    except ImportError:
        raise ConfigError("task.name=reasoning_gym needs reasoning-gym: "
                          "pip install 'neuromas[reasoning-gym]'") from None
    return reasoning_gym


def _seed(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)


class ReasoningGymSource:
    kind = "reasoning_gym"
    stream_seed: int | None = None

    def __init__(self, generator: str, config: dict, seed: int, num_test: int):
        self.generator, self.config, self.seed, self.num_test = generator, dict(config), seed, num_test
        self.scorer = self._dataset("probe")  # a wrong name or knob is an error now, before any model

    def _dataset(self, split: str):
        rg = _import()
        try:
            return rg.create_dataset(self.generator, size=STREAM, seed=_seed(f"{split}-{self.seed}"), **self.config)
        except ValueError as e:
            if "not registered" not in str(e):
                raise ConfigError(f"task.generator_config: {self.generator}: {e}") from None
            names = sorted(rg.factory.DATASETS)
            close = difflib.get_close_matches(self.generator, names, n=3) or names[:5]
            raise ConfigError(f"task.dataset: {self.generator!r} is not a reasoning-gym generator (e.g. "
                              f"{', '.join(close)}; {len(names)} in all)") from None
        except (TypeError, AssertionError) as e:  # an unknown knob, or a value the generator's config refuses
            raise ConfigError(f"task.generator_config: {self.generator}: {e}") from None

    def _sample(self, entry: dict, sample_id: str) -> Sample:
        return Sample(id=sample_id, question=str(entry["question"]), answer=str(entry["answer"]),
                      meta={"entry": entry})

    @cached_property
    def _splits(self) -> dict[str, list[Sample]]:
        def draw(split: str):
            dataset, index = self._dataset(split), itertools.count()
            return lambda sample_id: self._sample(dataset[next(index)], sample_id)
        return distinct_splits(self.num_test, draw)

    def test_samples(self) -> list[Sample]:
        return self._splits["test"]

    def validation_samples(self) -> list[Sample]:
        return self._splits["validation"]

    @cached_property
    def _train(self):
        stream = "train" if self.stream_seed is None else f"train.{self.stream_seed}"
        return self._dataset(stream)

    def train_sample(self, index: int) -> Sample:
        held_out = {s.question for split in self._splits.values() for s in split}
        for attempt in range(1000):
            sample = self._sample(self._train[index + attempt * (STREAM // 1000)], f"train-{index}")
            if sample.question not in held_out:
                return sample
        raise AssertionError("the test split covers the generator's questions; lower task.num_test")


class ReasoningGymReward:
    """The generator's own checker on the boxed answer (else the reply's last line)."""

    __name__ = "reasoning_gym"

    def __init__(self, source: ReasoningGymSource):
        self.scorer = source.scorer

    def __call__(self, completion: str, sample: Sample) -> float:
        boxed = last_boxed(completion)
        lines = completion.strip().splitlines()
        answer = boxed.strip() if boxed is not None else lines[-1].strip() if lines else ""
        return float(self.scorer.score_answer(answer, sample.meta["entry"]))
