"""Tasks: where questions come from and how an answer is scored.

A task gives an endless, deterministic train stream (`train_batch(step, n)`), a fixed test
split, a reward function ``reward(completion, sample) -> float`` and the answer format the
answering node is told to use.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from neuromas.config import TaskConfig
from neuromas.errors import ConfigError, NeuromasError
from neuromas.tasks.arithmetic import ArithmeticSource
from neuromas.tasks.choice import choice_match, states_letter
from neuromas.tasks.code import CodeReward, has_code_block
from neuromas.tasks.generated import GeneratedSource
from neuromas.tasks.jsonl import RowSource, choice_row, code_row, math_row, qa_row, read_hf_dataset, read_jsonl
from neuromas.tasks.math_answers import has_boxed, math_match
from neuromas.tasks.rewards import boxed_match, exact_match, resolve_reward
from neuromas.tasks.sample import Sample
from neuromas.tasks.sandbox import Limits
from neuromas.tasks.gym import ReasoningGymReward, ReasoningGymSource
from neuromas.tasks.navigate import NavigateSource, yes_no_boxed, yes_no_match, yes_no_vote
from neuromas.tasks.guess import GuessSource
from neuromas.tasks.taskset import TasksetReward, TasksetSource
from neuromas.tasks.split import SplitArithmeticSource, SplitLookupSource
from neuromas.tasks.synthetic import CountdownSource, LookupSource, countdown_match, lookup_match
from neuromas.tasks.votes import boxed_vote, choice_vote, code_vote, lookup_vote, math_vote

if TYPE_CHECKING:  # torch is imported when rewards are scored: a recipe's data is checked without it
    import torch

RewardFn = Callable[[str, Sample], float]

__all__ = ["Sample", "Task", "RewardFn", "build_task", "KINDS"]


@dataclass(frozen=True)
class Kind:
    """One row of the table of task kinds: everything a kind is, in one place. A generated kind
    has `source` (its questions from the config's knobs); a data kind has `convert` (a JSONL or
    hub row -> Sample). Adding a kind is a module with its source or converter and its reward,
    and one row here."""

    reward: str  # the default reward's name (REWARDS)
    answer_format: str
    format_ok: Callable[[str], bool]  # is the reply in the required form (the optional format reward)
    convert: Callable | None = None  # row -> Sample, for kinds read from data
    vote: Callable[[str], "tuple[str, str] | None"] = boxed_vote  # the answer a reply holds (voting layers)
    source: Callable[[TaskConfig], GeneratedSource | ReasoningGymSource] | None = None  # generated kinds

    @property
    def generated(self) -> bool:
        return self.source is not None


BOXED = "Put the final answer in \\boxed{}."
KINDS = {
    "arithmetic": Kind("exact_match", BOXED, has_boxed, source=lambda c: ArithmeticSource(
        depth=c.depth, max_value=c.max_value, seed=c.seed, num_test=c.num_test)),
    "lookup": Kind("lookup_match", "Put the name you reach in \\boxed{}.", has_boxed, vote=lookup_vote,
                   source=lambda c: LookupSource(depth=c.depth, seed=c.seed, num_test=c.num_test,
                                                 table_size=c.table_size)),
    "countdown": Kind("countdown_match", "Put one expression that uses every number in \\boxed{}, e.g. "
                      "\\boxed{(3 + 5) * 2}.", has_boxed, source=lambda c: CountdownSource(
                          depth=c.depth, max_value=c.max_value, seed=c.seed, num_test=c.num_test)),
    "math": Kind("math_match", BOXED, has_boxed, math_row, math_vote),
    "choice": Kind("choice_match", "Put the letter of the right choice in \\boxed{}, e.g. \\boxed{B}.",
                   states_letter, choice_row, choice_vote),
    "code": Kind("code_tests", "Write the complete Python function in one ```python code block.",
                 has_code_block, code_row, code_vote),
    "jsonl": Kind("exact_match", BOXED, has_boxed, qa_row),
    "split_arithmetic": Kind("exact_match", BOXED, has_boxed, source=lambda c: SplitArithmeticSource(
        max_value=c.max_value, seed=c.seed, num_test=c.num_test)),
    "split_lookup": Kind("lookup_match", "Put the name you reach in \\boxed{}.", has_boxed, vote=lookup_vote,
                         source=lambda c: SplitLookupSource(depth=c.depth, seed=c.seed, num_test=c.num_test,
                                                            table_size=c.table_size)),
    "reasoning_gym": Kind("reasoning_gym", BOXED, has_boxed, source=lambda c: ReasoningGymSource(
        c.dataset, c.generator_config, c.seed, c.num_test)),
    "verifiers": Kind("verifiers", "Give your final answer at the end of your reply.", has_boxed,
                      source=lambda c: TasksetSource(c.taskset, c.taskset_config, c.seed, c.num_test)),
    "guess": Kind("exact_match", "Put your guess in \\boxed{}.", has_boxed, source=lambda c: GuessSource(
        max_value=c.max_value, seed=c.seed, num_test=c.num_test)),
    "navigate": Kind("yes_no_match", "Put Yes or No in \\boxed{}, e.g. \\boxed{No}.", has_boxed, vote=yes_no_vote,
                     source=lambda c: NavigateSource(depth=c.depth, seed=c.seed, num_test=c.num_test)),
}
# The one table of built-in rewards (code_tests is built per task, with its sandbox limits).
REWARDS = {"exact_match": exact_match, "boxed_match": boxed_match, "math_match": math_match,
           "choice_match": choice_match, "lookup_match": lookup_match, "countdown_match": countdown_match,
           "yes_no_match": yes_no_match, "yes_no_boxed": yes_no_boxed, "code_tests": None, "reasoning_gym": None,
           "verifiers": None}
# `task.extract: boxed`: the reward that reads only a \boxed{} answer, for each reward with a fallback.
BOXED_ONLY = {"exact_match": "boxed_match", "yes_no_match": "yes_no_boxed"}


@dataclass
class Task:
    source: GeneratedSource | RowSource | ReasoningGymSource
    reward: RewardFn
    answer_format: str
    vote: Callable[[str], "tuple[str, str] | None"] = boxed_vote  # the answer a reply holds (voting layers)

    def check_batch(self, num_questions: int) -> None:
        """A step's questions must be distinct: fixed training data must hold at least that many."""
        if isinstance(self.source, RowSource) and len(self.source.train) < num_questions:
            raise NeuromasError(f"train.questions_per_step: {num_questions} is more than the "
                                f"{len(self.source.train)} training questions of the task (a step would repeat some)")

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
    num_scored: int = field(default=0, init=False)
    _warned_most: bool = field(default=False, init=False)

    def rewards(self, episodes) -> torch.Tensor:
        """Each episode's reward [E]: its environment's (a multi-turn episode's return), else the
        score of its answer."""
        if episodes.returns is not None:
            return episodes.returns.clone()
        return self.score(episodes.answers(), episodes.samples)

    def score(self, answers: list[str], samples: list[Sample]) -> torch.Tensor:
        """Rewards [E] fp32, always finite. A reward function that raises, or returns something
        that is not a finite number (None, a string, NaN, ±inf), scores that answer 0 (warned once,
        counted in `num_reward_errors`, logged as reward/errors) instead of stopping the run or
        reaching the loss. But a reward that fails on every answer of the first batch it scores is
        a bug, not a signal: that stops the run before any update, naming the error and the sample;
        one that fails on more than half of a batch is warned once more, with the share."""
        import torch

        rewards, errors = [], []
        for answer, sample in zip(answers, samples, strict=True):
            try:
                value = self.reward(answer, sample)
                if isinstance(value, (str, bytes)) or not math.isfinite(value := float(value)):
                    raise ValueError(f"returned {value!r}, not a finite number")
                rewards.append(value)
            except Exception as e:  # noqa: BLE001 - user code; one bad sample must not end training
                errors.append((e, sample))
                rewards.append(0.0)
        first_batch, self.num_scored = not self.num_scored, self.num_scored + len(answers)
        if errors:
            self._report(errors, len(answers), first_batch)
        return torch.tensor(rewards, dtype=torch.float32)

    def _report(self, errors: list[tuple[Exception, Sample]], num_answers: int, first_batch: bool) -> None:
        (e, sample), name = errors[0], getattr(self.reward, "__name__", repr(self.reward))
        if first_batch and len(errors) == num_answers:
            raise NeuromasError(f"task.reward: {name} failed on every answer of the first batch, e.g. sample "
                                f"{sample.id!r}: {type(e).__name__}: {e} (a reward is f(completion: str, sample) -> "
                                "float; sample.answer, or sample['answer'], is the reference)")
        if not self.num_reward_errors:
            warnings.warn(f"reward function: {type(e).__name__}: {e}; scoring such answers 0")
        elif len(errors) > num_answers / 2 and not self._warned_most:
            self._warned_most = True
            warnings.warn(f"reward function {name} failed on {len(errors)} of {num_answers} answers in one batch "
                          f"({type(e).__name__}: {e}); see reward/errors in metrics.jsonl")
        self.num_reward_errors += len(errors)


def build_source(cfg: TaskConfig) -> GeneratedSource | RowSource | ReasoningGymSource:
    source = _build_source(cfg)
    source.stream_seed = cfg.stream_seed
    return source


def _build_source(cfg: TaskConfig) -> GeneratedSource | RowSource | ReasoningGymSource:
    kind = KINDS[cfg.name]
    if kind.generated:
        return kind.source(cfg)
    convert = kind.convert
    if cfg.dataset:
        def split(name):
            return read_hf_dataset(cfg.dataset, cfg.dataset_config, name, convert) if name else []
        return RowSource(split(cfg.split), split(cfg.test_split), split(cfg.validation_split), cfg.seed)
    def read(path):
        return read_jsonl(path, convert) if path else []
    return RowSource(read(cfg.path), read(cfg.test_path), read(cfg.validation_path), cfg.seed)


def build_reward(cfg: TaskConfig, source=None) -> RewardFn:
    """The configured reward, plus `format_weight` x (reply in the kind's required form). `source`:
    the task's source, for rewards built from it (reasoning_gym: the generator's own checker)."""
    kind = KINDS[cfg.name]
    name = kind.reward if cfg.reward == "auto" else cfg.reward
    if cfg.extract == "boxed" and name not in BOXED_ONLY.values():
        if name not in BOXED_ONLY:
            raise ConfigError(f"task.extract: boxed reads a \\boxed{{}} answer for {', '.join(BOXED_ONLY)}; "
                              f"{name} reads its answer its own way (use extract: last_number)")
        name = BOXED_ONLY[name]
    if name == "reasoning_gym":
        if not isinstance(source, ReasoningGymSource):
            raise ConfigError("task.reward: reasoning_gym scores a reasoning_gym task only")
        reward = ReasoningGymReward(source)
    elif name == "verifiers":
        if not isinstance(source, TasksetSource):
            raise ConfigError("task.reward: verifiers scores a verifiers task only")
        reward = TasksetReward()
    elif name == "code_tests":
        reward = CodeReward(cfg.code_score, Limits(wall_s=cfg.sandbox.wall_s, cpu_s=cfg.sandbox.cpu_s,
                                                   memory_mb=cfg.sandbox.memory_mb))
    else:
        reward = resolve_reward(name, REWARDS)
    if not cfg.format_weight:
        return reward
    weight, format_ok = cfg.format_weight, kind.format_ok

    def with_format(completion: str, sample: Sample) -> float:
        return float(reward(completion, sample)) + weight * float(format_ok(completion))
    return with_format


def build_task(cfg: TaskConfig) -> Task:
    answer_format = KINDS[cfg.name].answer_format if cfg.answer_format == "auto" else cfg.answer_format
    source = build_source(cfg)
    return Task(source=source, reward=build_reward(cfg, source), answer_format=answer_format,
                vote=KINDS[cfg.name].vote)
