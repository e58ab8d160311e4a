"""One training step, in named phases: sample questions -> roll out K full-system episodes each
-> score the sink's answers -> assign credit (advantages per episode and node, `credit.assign`)
-> one loss over every node's sampled tokens -> one optimizer step on all adapters.

`PolicyGradientStep` holds what every step reads (the settings, the task, the rollout engine, the
update rule, the process group) and is given what changes (the system, its optimizer, the running
baseline); the trainer decides which system runs and when.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neuromas import credit
from neuromas.config import Config
from neuromas.metrics import Stats, Timer, reward_summary, step_metrics
from neuromas.rollout import Episodes, RolloutEngine
from neuromas.system import System
from neuromas.tasks import Task
from neuromas.update import PolicyUpdate


@dataclass
class StepResult:
    """What one step made: its metrics, the rollout and rewards they came from (which the textual
    step and the kept transcripts read), and the running baseline after it (reinforce)."""

    metrics: dict[str, float]
    episodes: Episodes
    rewards: torch.Tensor
    baseline: float | None = None


class PolicyGradientStep:
    def __init__(self, cfg: Config, task: Task, engine: RolloutEngine, world):
        self.cfg, self.task, self.engine, self.world = cfg, task, engine, world
        self.policy_update = PolicyUpdate(cfg.algorithm, cfg.train, cfg.rollout.temperature)

    def train(self, system: System, optimizer, step: int, gate: float = 1.0,
              baseline: float | None = None) -> StepResult:
        """Roll out, score, assign credit and update once on the questions of `step` (1-based)."""
        cfg, timer = self.cfg, Timer()
        with timer("step"):
            questions = self.world.shard(self.task.train_batch(step - 1, cfg.train.questions_per_step))
            with timer("rollout"):
                episodes = self.roll_out(system, questions, step, gate)
            with timer("reward"):
                task_rewards = self.task.rewards(episodes)
            with timer("credit"):
                assigned = credit.assign(cfg.algorithm, episodes, task_rewards, system.agents, system.topology,
                                         cfg.rollout.samples_per_question, baseline, cfg.rollout.temperature,
                                         cfg.train.micro_batch_size, self.world.gather)
            with timer("update"):
                update_metrics = self.update(system, optimizer, episodes, assigned.advantages)
        stats = step_metrics(episodes, task_rewards, system.topology.node_ids)
        stats.update({**update_metrics, "credit/mode": cfg.algorithm.credit}, "same")  # already global
        stats.update(assigned.metrics, "mean")
        stats.add("reward/errors", float(self.task.num_reward_errors))  # answers a raising reward scored 0, so far
        stats.update(timer, "max")  # the slowest rank's
        if self.engine.sync_seconds() is not None:  # adapters sent to a serving backend before this rollout
            stats.peak("time/sync", self.engine.sync_seconds())
        metrics = Stats.combine(self.world.gather(stats)).values
        if self.world.size > 1:  # exact over every rank's episodes
            metrics.update(reward_summary(torch.cat(self.world.gather(task_rewards[:episodes.num_regular])), "reward"))
        return StepResult(metrics, episodes, task_rewards, assigned.baseline)

    def sample_only(self, system: System, step: int, gate: float = 1.0) -> StepResult:
        """The rollout and rewards of `step`, without credit or update (`textual.only`: the
        textual step that follows is the only training)."""
        timer = Timer()
        with timer("step"), timer("rollout"):
            episodes = self.roll_out(system, self.task.train_batch(step - 1, self.cfg.train.questions_per_step),
                                     step, gate)
        task_rewards = self.task.rewards(episodes)
        stats = step_metrics(episodes, task_rewards, system.topology.node_ids)
        stats.update(timer, "max")
        return StepResult(Stats.combine([stats]).values, episodes, task_rewards)

    def roll_out(self, system: System, questions: list, step: int, gate: float = 1.0) -> Episodes:
        """K sampled episodes per question, plus branch copies under branch credit."""
        cfg, alg = self.cfg, self.cfg.algorithm
        branches = [] if alg.credit != "branch" else credit.plan_branches(
            system.topology.node_ids, len(questions), cfg.rollout.samples_per_question, alg.branch.per_question,
            alg.branch.samples, step)
        return self.engine.run(system, questions, cfg.rollout.samples_per_question, gate=gate, branches=branches)

    def update(self, system: System, optimizer, episodes: Episodes, advantages: torch.Tensor) -> dict[str, float]:
        """Optimizer step(s) on every adapter; advantages [E, N] (episodes x nodes)."""
        node_ids, update = system.topology.node_ids, self.policy_update
        totals = {k: self.world.sum(v) for k, v in update.totals(episodes, advantages, node_ids).items()}
        stats = update.run(system.agents, optimizer, episodes, advantages, node_ids, totals)
        return update.finish(Stats.combine(self.world.gather(stats)), node_ids)
