"""Joint policy-gradient training of every node from the final task reward.

The steps themselves are `step.PolicyGradientStep`'s; around them, `StageSchedule` decides when a
stage ends, grows or rolls back, and `RunState` is where the run stands (what a checkpoint holds).
The trainer carries those decisions out and is the one place the live system changes hands.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from neuromas import checkpoint as ckpt
from neuromas.agents import Agents
from neuromas.config import Config, StageConfig
from neuromas.recipe import save_config, to_dict
from neuromas.distributed import StopRequests, init_world
from neuromas.errors import Interrupted, NeuromasError
from neuromas.accuracy import accuracy_over_ranks
from neuromas.metrics import summary_line, transcripts
from neuromas.models import pick_device
from neuromas.optim import build_optimizer, resolve_deepspeed_config
from neuromas.rollout import Episodes, RolloutEngine, build_generator
from neuromas.schedule import RunState, StageSchedule
from neuromas.step import PolicyGradientStep, StepResult
from neuromas.step_eval import StepEvaluator
from neuromas.system import System, recipe_texts
from neuromas.tasks import Task, build_task
from neuromas.topology import Topology
from neuromas.textual import TextualStep
from neuromas.tracking import NullTracker, Tracker


class Trainer:
    """Runs a recipe's stages: train, validate, grow, train again. Resumable from any checkpoint.

    Under a launcher with N processes every rank runs this same loop on its shard of each step's
    questions (data parallel); DeepSpeed reduces the gradients, so every rank ends each step with
    the same adapters. Rank 0 alone logs, prints and writes files.
    """

    def __init__(self, cfg: Config, run_dir: Path, task: Task | None = None, resume: bool = False):
        """Set up where the run starts: fresh, from `train.init_from`, or (`resume`) from the latest
        checkpoint of `run_dir`. The system and its optimizer are built once, in that order."""
        self.cfg = cfg
        on_gpu = pick_device(cfg.model).type == "cuda"
        self.world = init_world(cfg.distributed.deepspeed is not None, on_gpu)
        self.run_dir = Path(self.world.gather(str(run_dir))[0])  # rank 0's (a default name holds the time)
        self.deepspeed = resolve_deepspeed_config(cfg.distributed.deepspeed, self.world, cfg.train, on_gpu)
        self.world.shard(list(range(cfg.train.questions_per_step)))  # fails early if the batch does not split
        random.seed(cfg.train.seed)
        torch.manual_seed(cfg.train.seed)  # the same initial adapters on every rank
        self.schedule = StageSchedule(cfg.stages(), cfg.growth)
        self.task = task or build_task(cfg.task)  # the CLI's, already checked
        self.task.check_batch(cfg.train.questions_per_step)
        first = Topology.from_config(self.schedule.stages[0].topology)
        with self.world.main_first():  # rank 0 prepares the model cache, if needed, alone; seeded adapters
            system = System(Agents.build(cfg.model, cfg.agents, first.node_ids, cfg.node_ids()), first,
                            texts=recipe_texts(cfg.agents.texts, first.node_ids))
        if self.world.size > 1:  # ranks sample differently from here on
            random.seed(cfg.train.seed + 7919 * self.world.rank)
            torch.manual_seed(cfg.train.seed + 7919 * self.world.rank)
        self.engine = RolloutEngine.for_run(cfg, self.task, build_generator(cfg, system.agents,
                                                                            cfg.train.seed + 7919 * self.world.rank))
        self.steps = PolicyGradientStep(cfg, self.task, self.engine, self.world)
        self.textual = TextualStep.for_run(cfg, self.task, self.engine, self.world)
        self.state = RunState()
        start = ckpt.check_start(Path(cfg.train.init_from), system.topology.to_dict()) if cfg.train.init_from else None
        if self.world.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
            self.tracker = Tracker(cfg.tracking, self.run_dir, cfg.name, to_dict(cfg))
        else:
            self.tracker = NullTracker()
        self.evaluator = StepEvaluator(cfg.eval, self.engine, self.task, self.world, self.tracker, self._print)
        self.system = system
        if resume:
            try:
                self._resume(ckpt.latest_checkpoint(self.run_dir))
            except BaseException:
                self.close()  # the serving backend and process group, which the caller cannot reach yet
                raise
        else:  # another run's adapters (e.g. a hand-grown system), or the fresh ones
            self._adopt(ckpt.with_weights_from(system, start) if start is not None else system)

    def _adopt(self, system: System, optimizer_state: dict | None = None,
               old_to_new: dict[str, str] | None = None) -> None:
        """Hold `system` from here on, the one place a system changes hands (start, resume, growth,
        rollback): the optimizer is built over its adapters with `optimizer_state` carried over
        (node ids renamed by `old_to_new`), the textual history follows the renames, and the
        topology is recorded. DeepSpeed copies the adapters into its fp32 master weights here."""
        self.system = system
        self.optimizer = build_optimizer(self.agents, self.cfg.train, self.world, self.deepspeed)
        if optimizer_state is not None:
            self.optimizer.load_named_state(optimizer_state, old_to_new or {n: n for n in self.topology.node_ids})
        if self.textual is not None and old_to_new:
            self.textual.renamed(old_to_new)
        self.tracker.topology(self.topology, self.step)

    def close(self) -> None:
        """Release what the run holds beyond this object: the rollout backend, the process group."""
        self.engine.close()
        self.world.close()

    @property
    def agents(self) -> Agents:
        return self.system.agents

    @property
    def topology(self) -> Topology:
        return self.system.topology

    @property
    def step(self) -> int:
        return self.state.step

    def _print(self, line: str) -> None:
        if self.world.main:
            tqdm.write(line)

    def fit(self) -> list[dict]:
        """Run every remaining stage; returns the per-step metrics of this call. A signal (Ctrl-C,
        SIGTERM) stops after the step or evaluation in progress, with what a resume needs."""
        history = []
        with StopRequests() as stop:
            if self.step == 0 and self.cfg.eval.before:
                self.evaluator(self.system, step=0)
                if stop.requested(self.world):
                    self.tracker.close()
                    raise Interrupted(0, None, self.run_dir)
            # A bar on a terminal only: in a log file its redraws would interleave with the step lines.
            with tqdm(total=self.cfg.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                      disable=None if self.world.main else True) as bar:
                while self.schedule.stage(self.state) is not None:
                    while self.schedule.keep_training(self.state):
                        history.append(self._one_step())
                        bar.update(1)
                        if stop.requested(self.world):
                            checkpoint = self.save(self.run_dir / "checkpoints" / f"step_{self.step}")
                            self.tracker.close()
                            raise Interrupted(self.step, checkpoint, self.run_dir)
                    self._end_stage()
            if not (self.cfg.eval.every and self.step % self.cfg.eval.every == 0):  # else the last step just did
                self.evaluator(self.system, self.step)  # a signal here: the evaluation ends, the run completes
            self.save(self.run_dir / "adapters", adapters_only=True)
        self.world.check_same(self.agents.parameters(), self.step)
        self.tracker.close()
        return history

    def _one_step(self) -> dict[str, float]:
        cfg = self.cfg
        self.state = self.state.stepped()
        step, gate = self.step, self.schedule.gate(self.state, gated=bool(self.system.new_nodes))
        texts = dict(self.system.texts)  # what this step's rollout was prompted with (a textual step may edit them)
        made = self.steps.sample_only(self.system, step, gate) if cfg.textual.only else self.train_step(step, gate)
        metrics = made.metrics
        if self.textual is not None and (cfg.textual.only or step % cfg.textual.every == 0):
            metrics.update(self.textual_step(step, made.episodes, made.rewards))
        metrics.update({"growth/stage": float(self.state.stage_index), "growth/gate": gate})
        self.tracker.log(metrics, step)
        every = cfg.tracking.transcripts_every
        if every and step % every == 0:
            rows = transcripts(made.episodes, made.rewards, cfg.tracking.transcripts_per_step)
            self.tracker.transcripts([{**row, "node_texts": texts} for row in rows], step)
        self._print(summary_line(step, cfg.total_steps, metrics, self.topology.node_ids))
        if cfg.eval.every and step % cfg.eval.every == 0:
            self.evaluator(self.system, step)
            if self.schedule.validates_each_eval(self.state):
                self.state = self.state.validated(self._validate())
        if cfg.checkpoint.every and step % cfg.checkpoint.every == 0:
            self.save(self.run_dir / "checkpoints" / f"step_{step}")
            if self.world.main:
                ckpt.prune(self.run_dir / "checkpoints", cfg.checkpoint.keep_last)
        return metrics

    def train_step(self, step: int, gate: float = 1.0) -> StepResult:
        """One policy-gradient step on the questions of `step` (1-based), on the live system."""
        made = self.steps.train(self.system, self.optimizer, step, gate, self.state.baseline)
        self.state = replace(self.state, baseline=made.baseline)
        return made

    def textual_step(self, step: int, episodes: Episodes, rewards: torch.Tensor) -> dict[str, float]:
        """One gated textual step on this step's rollout (neuromas.textual); the system it commits
        is the one the next rollout runs (its prompts, so no log-prob from before the edit is reused)."""
        aggregation = self.topology.aggregation
        self.system, metrics, record, line = self.textual(self.system, episodes, rewards, step)
        if self.topology.aggregation != aggregation:
            self.tracker.topology(self.topology, self.step)
        self.tracker.textual(record, step)
        self._print(line)
        return metrics

    def _validate(self) -> float:
        questions = self.task.validation[:self.cfg.growth.validation_questions]
        if not questions:
            raise NeuromasError("growth.margin and stage patience need a validation split (task.validation_path)")
        accuracy = accuracy_over_ranks(self.engine, self.system, self.task, questions, self.world).mean
        self.tracker.log({"growth/validation_accuracy": accuracy}, self.step)
        return accuracy

    # ---- the schedule's decisions, carried out --------------------------------------------

    def _end_stage(self) -> None:
        """Validation gate, then the stage checkpoint (the rollback point), then grow."""
        index, parent_dir = self.state.stage_index, ckpt.stage_dir(self.run_dir, self.state.stage_index - 1)
        validation = self._validate() if self.schedule.validates_at_stage_end() else None
        parent = ckpt.read_state(parent_dir)["validation"] if index and validation is not None else None
        end = self.schedule.end_stage(self.state, validation, parent)
        if end.action != "next":
            self._print(f"growth: stage {index} validation {validation:.3f} < parent {parent:.3f} - margin; "
                        f"rolling back (tried init {end.tried})")
        if end.action == "give_up":
            raise NeuromasError(f"stage {index} ({self.topology.widths}) stayed below its parent on validation with "
                                f"inits {', '.join(end.inits)}; the parent system is in {parent_dir}")
        if end.action == "roll_back":
            self._load(parent_dir, restore_rng=False)
            self.state = self.state.retried()
            return self._grow(self.schedule.stage(self.state), end.init)
        if self.schedule.has_next(self.state):  # the rollback point of the next stage
            self.save(ckpt.stage_dir(self.run_dir, index), validation=validation)
        self._next_stage()

    def _next_stage(self) -> None:
        self.state = self.state.next_stage()
        stage = self.schedule.stage(self.state)
        if stage is not None:
            self._grow(stage, stage.init)

    def _grow(self, stage: StageConfig, init: str) -> None:
        old_state = self.optimizer.named_state()  # before growth unloads the old adapters from the base
        system, plan = self.system.grow(Topology.from_config(stage.topology), init, stage.noise, stage.copy_from,
                                        self.cfg.agents.texts)
        self._adopt(system, old_state, plan.old_to_new)
        widths = self.topology.widths
        self._print(f"growth: stage {self.state.stage_index} {widths} (init {init}, gate over {stage.gate_steps} "
                    f"steps): {plan.describe()}")
        self.tracker.growth(self.step, self.state.stage_index, widths, init, plan)

    # ---- checkpoints ----------------------------------------------------------------------

    def save(self, target: Path, adapters_only: bool = False, **extra) -> Path:
        """A checkpoint at `target`; `adapters_only`: the final system, peft adapters at the top level."""
        state = {**self.state.to_dict(), "topology": self.topology.to_dict(),
                 "new_nodes": sorted(self.system.new_nodes),
                 "gate": self.schedule.gate(self.state, gated=bool(self.system.new_nodes)),
                 "reward_errors": self.task.num_reward_errors,
                 **({"textual": self.textual.state()} if self.textual is not None else {}), **extra}
        return ckpt.save_run(target, self.agents, self.system.texts, state, self.world,
                             None if adapters_only else self.optimizer, self.engine.sampler)

    def _resume(self, path: Path) -> None:
        """Continue from the checkpoint at `path` (the latest of the run directory)."""
        saved = self._load(path, restore_rng=True)
        self.state = RunState.from_dict(saved)
        self.task.num_reward_errors = saved.get("reward_errors", 0)
        if path.name.startswith("stage_"):  # saved as the stage closed: go on to the next one
            self._next_stage()
        self.tracker.rewind(self.step, stage_closed=path.name.startswith("stage_"))  # those steps run again
        self._print(f"resumed from {path} at step {self.step} (stage {self.state.stage_index})")

    def _load(self, path: Path, restore_rng: bool) -> dict:
        """Hold the system saved at `path` (topology, adapters, gated nodes) and its optimizer state."""
        self._adopt(ckpt.with_saved(self.system, path), ckpt.optimizer_state_from(path)["state"])
        if restore_rng:
            ckpt.restore_rng(path, self.world.rank, self.engine.sampler)
        saved = ckpt.read_state(path)
        if self.textual is not None:
            self.textual.load_state(saved.get("textual"))
        return saved
