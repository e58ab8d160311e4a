"""Tasks: where questions come from and how an answer is scored.

A task gives an endless, deterministic train stream (`train_batch(step, n)`), a fixed test
split, a reward function ``reward(completion, sample) -> float`` and the answer format the
answering node is told to use.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

from neuromas.config import TaskConfig
from neuromas.tasks.arithmetic import ArithmeticSource
from neuromas.tasks.jsonl import JsonlSource
from neuromas.tasks.rewards import Sample, resolve_reward

RewardFn = Callable[[str, Sample], float]

__all__ = ["Sample", "Task", "RewardFn", "build_task"]


@dataclass
class Task:
    source: ArithmeticSource | JsonlSource
    reward: RewardFn
    answer_format: str

    def train_batch(self, step: int, num_questions: int) -> list[Sample]:
        """The questions of training step `step` (a pure function of step: resumable)."""
        start = step * num_questions
        return [self.source.train_sample(i) for i in range(start, start + num_questions)]

    @property
    def test(self) -> list[Sample]:
        return self.source.test_samples()

    @property
    def validation(self) -> list[Sample]:
        return self.source.validation_samples()

    num_reward_errors: int = field(default=0, init=False)

    def score(self, answers: list[str], samples: list[Sample]) -> torch.Tensor:
        """Rewards [E] fp32. A reward function that raises scores that answer 0 (warned once,
        counted in `num_reward_errors`) instead of stopping the run."""
        rewards = []
        for answer, sample in zip(answers, samples, strict=True):
            try:
                rewards.append(float(self.reward(answer, sample)))
            except Exception as e:  # noqa: BLE001 - user code; one bad sample must not end training
                if not self.num_reward_errors:
                    warnings.warn(f"reward function raised {type(e).__name__}: {e}; scoring such answers 0")
                self.num_reward_errors += 1
                rewards.append(0.0)
        return torch.tensor(rewards, dtype=torch.float32)


def build_task(cfg: TaskConfig) -> Task:
    if cfg.name == "arithmetic":
        source = ArithmeticSource(depth=cfg.depth, max_value=cfg.max_value, seed=cfg.seed, num_test=cfg.num_test)
    else:
        source = JsonlSource(cfg.path, cfg.test_path, seed=cfg.seed, validation_path=cfg.validation_path)
    return Task(source=source, reward=resolve_reward(cfg.reward), answer_format=cfg.answer_format)
