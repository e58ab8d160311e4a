"""A `verifiers` taskset as a task source (`task.name: verifiers`, `task.taskset: pkg.module:Cls`).

verifiers' v1 API (the optional extra `neuromas[verifiers]`): a `Taskset` yields typed `Task`s
whose data carries the prompt, and a task scores a finished `Trace` with its own `@reward` and
`@metric` methods (`await task.score(trace)`). Here every task of the taskset is a sample: its
prompt is the question, the task itself rides along in `meta`, and the reward is the task's own
score of a trace whose reply is the graph's answer. Signals that need a sandbox runtime are
skipped, as verifiers skips them offline.

Splits: the taskset's tasks in a fixed order shuffled by `task.seed`; the first `num_test` are the
test split, the next `num_test` the validation split, and the rest the train stream, cycled. The
taskset must hold more than 2 x num_test tasks.
"""

from __future__ import annotations

import asyncio
import random
import typing
from functools import cached_property

from neuromas.errors import ConfigError
from neuromas.plugins import load_named
from neuromas.tasks.sample import Sample


def _import():
    try:
        import verifiers.v1 as vf
    except ImportError:
        raise ConfigError("task.name=verifiers needs verifiers: pip install 'neuromas[verifiers]'") from None
    return vf


def _prompt_text(prompt) -> str:
    """A task's prompt as one text: a string, or the contents of its chat messages."""
    if prompt is None or isinstance(prompt, str):
        return prompt or ""
    parts = [m.get("content") if isinstance(m, dict) else getattr(m, "content", None) for m in prompt]
    return "\n\n".join(p for p in parts if isinstance(p, str))


class TasksetSource:
    kind = "verifiers"
    stream_seed: int | None = None

    def __init__(self, spec: str, config: dict, seed: int, num_test: int):
        vf = _import()
        cls = load_named(spec, "task.taskset", noun=None)
        if not (isinstance(cls, type) and issubclass(cls, vf.Taskset)):
            raise ConfigError(f"task.taskset: {spec} is not a verifiers Taskset class")
        config_type = next((a for base in getattr(cls, "__orig_bases__", ()) for a in typing.get_args(base)
                            if isinstance(a, type) and issubclass(a, vf.TasksetConfig)), vf.TasksetConfig)
        try:
            self.taskset = cls(config_type(**config))
            tasks = list(self.taskset)
        except Exception as e:  # pydantic's ValidationError, or the taskset's own load failing
            raise ConfigError(f"task.taskset_config: {spec}: {str(e).splitlines()[0]}") from None
        if len(tasks) <= 2 * num_test:
            raise ConfigError(f"task.num_test: {spec} holds {len(tasks)} tasks; test and validation take "
                              f"{num_test} each and training needs the rest (lower task.num_test)")
        random.Random(f"verifiers-{seed}").shuffle(tasks)
        self.tasks, self.num_test, self.seed = tasks, num_test, seed

    def _sample(self, position: int, sample_id: str) -> Sample:
        task = self.tasks[position]
        data = task.data
        return Sample(id=sample_id, question=_prompt_text(data.prompt), answer=str(getattr(data, "answer", "") or ""),
                      meta={"task": task, "key": task.key})

    def test_samples(self) -> list[Sample]:
        return [self._sample(i, f"test-{i}") for i in range(self.num_test)]

    def validation_samples(self) -> list[Sample]:
        return [self._sample(self.num_test + i, f"validation-{i}") for i in range(self.num_test)]

    @cached_property
    def _train_order(self) -> list[int]:
        order = list(range(2 * self.num_test, len(self.tasks)))
        if self.stream_seed is not None:
            random.Random(f"verifiers-train-{self.stream_seed}").shuffle(order)
        return order

    def train_sample(self, index: int) -> Sample:
        order = self._train_order
        return self._sample(order[index % len(order)], f"train-{index}")


class TasksetReward:
    """The task's own rewards (their weighted sum, as `Trace.reward`) of a trace whose reply is the
    graph's answer; the task's metrics are computed too and dropped."""

    def __init__(self):
        self.vf = _import()

    def __call__(self, completion: str, sample: Sample) -> float:
        vf, task = self.vf, sample.meta["task"]
        trace = vf.Trace(task=vf.TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
                         agent=vf.AgentInfo(config=vf.AgentConfig()), root_reply=completion)
        asyncio.run(task.score(trace))
        return float(trace.reward)
