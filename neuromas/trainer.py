"""Joint policy-gradient training of every node from the final task reward.

One step: sample questions -> roll out K full-system episodes each -> score the sink's
answers -> group-relative advantages, shared by every node of an episode -> one loss over
every node's sampled tokens (each node's term averaged over its tokens, summed over nodes)
-> one optimizer step on all adapters.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from neuromas import checkpoint as ckpt
from neuromas.agents import Agents
from neuromas import credit
from neuromas.algorithms import KL_ESTIMATORS, shape_rewards, update_baseline
from neuromas.config import Config, StageConfig, save_config, to_dict
from neuromas.errors import NeuromasError
from neuromas.models import pick_device
from neuromas.distributed import init_world
from neuromas.evaluate import correct_answers
from neuromas.growth import gate_value, grow_agents, load_adapter_states, plan_growth
from neuromas.optim import build_optimizer, resolve_deepspeed_config
from neuromas.pictures import draw_topology
from neuromas.prompts import PromptBuilder
from neuromas.rollout import Episodes, RolloutEngine
from neuromas.stats import Accuracy
from neuromas.tasks import build_task
from neuromas.topology import Topology
from neuromas.tracking import NullTracker, Tracker, record_eval, truncate_jsonl
from neuromas.update import PolicyUpdate


class Timer(dict):
    """Accumulates seconds per phase: ``with timer("rollout"): ...`` -> ``{"time/rollout": s}``."""

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        yield
        self[f"time/{phase}"] = self.get(f"time/{phase}", 0.0) + time.perf_counter() - start


class Trainer:
    """Runs a recipe's stages: train, validate, grow, train again. Resumable from any checkpoint.

    Under a launcher with N processes every rank runs this same loop on its shard of each step's
    questions (data parallel); DeepSpeed reduces the gradients, so every rank ends each step with
    the same adapters. Rank 0 alone logs, prints and writes files.
    """

    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg = cfg
        on_gpu = pick_device(cfg.model).type == "cuda"
        self.world = init_world(cfg.distributed.deepspeed is not None, on_gpu)
        self.run_dir = Path(self.world.gather(str(run_dir))[0])  # rank 0's (a default name holds the time)
        self.deepspeed = resolve_deepspeed_config(cfg.distributed.deepspeed, self.world, cfg.train, on_gpu)
        self.world.shard(list(range(cfg.train.questions_per_step)))  # fails early if the batch does not split
        random.seed(cfg.train.seed)
        torch.manual_seed(cfg.train.seed)  # the same initial adapters on every rank
        self.stages = cfg.stages()
        self.topology = Topology.from_config(self.stages[0].topology)
        self.task = build_task(cfg.task)
        all_ids = sorted({i for st in self.stages for i in Topology.from_config(st.topology).node_ids})
        with self.world.main_first():  # rank 0 prepares the model cache, if needed, alone
            self.agents = Agents.build(cfg.model, cfg.agents, self.topology.node_ids, all_ids)
        if self.world.size > 1:  # ranks sample differently from here on
            random.seed(cfg.train.seed + 7919 * self.world.rank)
            torch.manual_seed(cfg.train.seed + 7919 * self.world.rank)
        self.engine = RolloutEngine(cfg.rollout, self.agents, self.topology,
                                    PromptBuilder(cfg.prompts, self.task.answer_format))
        self.policy_update = PolicyUpdate(cfg.algorithm, cfg.train, cfg.rollout.temperature)
        self.credit_state = credit.CreditState()
        # Where the run stands; all of it goes into every checkpoint.
        self.step, self.stage_index, self.stage_step, self.attempt = 0, 0, 0, 0
        self.new_nodes: frozenset[str] = frozenset()
        self.best_validation, self.stale_validations = None, 0
        start = self._check_start(Path(cfg.train.init_from)) if cfg.train.init_from else None
        if self.world.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
            self.tracker = Tracker(cfg.tracking, run_dir, cfg.name, to_dict(cfg))
        else:
            self.tracker = NullTracker()
        self._record_topology()
        if start is not None:
            self._start_from(*start)
        # Built last: DeepSpeed copies the adapters into its own fp32 master weights when it starts.
        self.optimizer = self._new_optimizer()

    def _new_optimizer(self):
        """A fresh optimizer over the current adapters (rebuilt on growth: DeepSpeed only trains
        what was trainable when its engine was made)."""
        return build_optimizer(self.agents, self.cfg.train, self.world, self.deepspeed)

    def _print(self, line: str) -> None:
        if self.world.main:
            tqdm.write(line)

    def fit(self) -> list[dict]:
        """Run every remaining stage; returns the per-step metrics of this call."""
        history = []
        if self.step == 0:
            self._evaluate(step=0)
        with tqdm(total=self.cfg.train.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                  disable=not self.world.main) as bar:
            while self.stage_index < len(self.stages):
                stage = self.stages[self.stage_index]
                while self.stage_step < stage.steps and not self._plateaued(stage):
                    history.append(self._one_step(stage))
                    bar.update(1)
                self._end_stage(stage)
        if not (self.cfg.eval.every and self.step % self.cfg.eval.every == 0):  # else the last step just did
            self._evaluate(self.step)
        self.save(self.run_dir / "adapters", adapters_only=True)
        self._check_ranks_agree()
        self.tracker.close()
        return history

    def _one_step(self, stage: StageConfig) -> dict[str, float]:
        cfg = self.cfg
        self.step += 1
        self.stage_step += 1
        gate = self._gate()
        metrics = {**self.train_step(self.step, gate), "growth/stage": float(self.stage_index), "growth/gate": gate}
        self.tracker.log(metrics, self.step)
        every = cfg.tracking.transcripts_every
        if every and self.step % every == 0:
            self.tracker.transcripts(transcripts(*self.last_rollout, cfg.tracking.transcripts_per_step), self.step)
        self._print(self._summary(self.step, metrics))
        if cfg.eval.every and self.step % cfg.eval.every == 0:
            self._evaluate(self.step)
            if stage.patience:
                self._track_validation(self._validate())
        if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0:
            self.save(self.run_dir / "checkpoints" / f"step_{self.step}")
            if self.world.main:
                ckpt.prune(self.run_dir / "checkpoints", cfg.checkpoint.keep_last)
        return metrics

    def _gate(self) -> float:
        """The gate of the current stage's new nodes at its current step (1 when none are gated)."""
        if not self.new_nodes or self.stage_index >= len(self.stages):
            return 1.0
        return gate_value(self.stage_step, self.stages[self.stage_index].gate_steps)

    def train_step(self, step: int, gate: float = 1.0) -> dict[str, float]:
        """Roll out, score, assign credit and update once on the questions of `step` (1-based)."""
        cfg, alg, timer = self.cfg, self.cfg.algorithm, Timer()
        k = cfg.rollout.samples_per_question
        with timer("step"):
            questions = self.world.shard(self.task.train_batch(step - 1, cfg.train.questions_per_step))
            branches = [] if alg.credit != "branch" else credit.plan_branches(
                self.topology.node_ids, len(questions), k, alg.branch_per_question, alg.branch_samples, step)
            with timer("rollout"):
                episodes = self.engine.run(questions, k, gate=gate, branches=branches)
            with timer("reward"):
                task_rewards = self.task.score(episodes.answers(), episodes.samples)
            with timer("credit"):
                advantages, extra = self._credit(episodes, task_rewards)
            with timer("update"):
                update_metrics = self.update(episodes, advantages)
        self.last_rollout = (episodes, task_rewards)
        extra["reward/errors"] = float(self.task.num_reward_errors)  # answers a raising reward scored 0, so far
        metrics = {**reward_metrics(task_rewards, episodes, self.topology.node_ids), **update_metrics,
                   **message_metrics(episodes, self.topology.node_ids), **extra, "credit/mode": alg.credit,
                   "credit/branched_episodes": float(episodes.num_episodes - episodes.num_regular),
                   "rollout/tokens": float(sum(len(m.completion_ids) for m in episodes.messages)),
                   "rollout/messages": float(len(episodes.messages)), **timer}
        if self.world.size > 1:
            metrics = combine_rank_metrics(self.world.gather(metrics))
            everyone = torch.cat(self.world.gather(task_rewards[:episodes.num_regular]))
            metrics.update(reward_summary(everyone, "reward"))
        return metrics

    def _credit(self, episodes: Episodes, task_rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Rewards -> advantages [E, N] by the configured credit mode, and the metrics it adds."""
        cfg, alg = self.cfg, self.cfg.algorithm
        rewards = shape_rewards(task_rewards, alg.reward_scale, alg.reward_clip)
        extra = {}
        if alg.kl_coef > 0 and alg.kl_in == "reward":
            kl = self._episode_kl(episodes)
            rewards, extra["train/kl_penalty"] = rewards - alg.kl_coef * kl, float(kl.mean())
        shares = widths = None
        if alg.credit == "attribution":
            shares = credit.attribution_shares(self.agents, episodes, alg, cfg.rollout.temperature,
                                               cfg.train.micro_batch_size)
            widths = {n.id: self.topology.widths[n.layer] for n in self.topology.nodes}
        advantages = credit.advantages(alg, episodes, rewards, self.topology.node_ids,
                                       cfg.rollout.samples_per_question, self.credit_state, shares, widths)
        if alg.advantage == "reinforce":  # one baseline on every rank: from every rank's rewards
            everyone = torch.cat(self.world.gather(rewards[:episodes.num_regular]))
            self.credit_state.baseline = update_baseline(self.credit_state.baseline, everyone, alg.baseline_decay)
        return advantages, extra

    @torch.no_grad()
    def _episode_kl(self, episodes: Episodes) -> torch.Tensor:
        """Sum over every message of an episode of the per-token KL to the base: [E]."""
        kl = torch.zeros(episodes.num_episodes)
        estimator = KL_ESTIMATORS[self.cfg.algorithm.kl_estimator]
        size = self.cfg.train.micro_batch_size
        for start in range(0, len(episodes.messages), size):
            chunk = episodes.messages[start:start + size]
            prompts, completions = [m.prompt_ids for m in chunk], [m.completion_ids for m in chunk]
            ref, mask = self.agents.completion_logprobs(prompts, completions, None, self.cfg.rollout.temperature)
            for row, m in enumerate(chunk):
                n = len(m.completion_ids)
                kl[m.episode] += float(estimator(m.logprobs, ref[row, :n].cpu()).sum())
        return kl

    def update(self, episodes: Episodes, advantages: torch.Tensor) -> dict[str, float]:
        """Optimizer step(s) on every adapter; advantages [E] (shared) or [E, N] (per node)."""
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1).expand(-1, len(self.topology.node_ids))
        return self.policy_update.run(self.agents, self.optimizer, episodes, advantages, self.topology.node_ids,
                                      self.world)

    @torch.no_grad()
    def accuracy(self, questions: list) -> Accuracy:
        """Greedy accuracy of the whole system (gates open) on `questions`, shared out over ranks."""
        mine = questions[self.world.rank::self.world.size]
        correct = correct_answers(self.engine, self.task, mine).view(-1).tolist() if mine else []
        per_rank = self.world.gather(correct)
        return Accuracy.of(per_rank[i % self.world.size][i // self.world.size] for i in range(len(questions)))

    def _evaluate(self, step: int) -> None:
        questions = self.task.test[:self.cfg.eval.num_questions]
        if not questions:
            return
        accuracy = self.accuracy(questions)
        self.tracker.log({"eval/accuracy": accuracy.mean, "eval/accuracy_se": accuracy.se,
                          "eval/num_questions": float(accuracy.n)}, step)
        self._print(f"eval  step {step:>4} | accuracy {accuracy} on the test split (greedy)")
        change = record_eval(self.run_dir / "evals.jsonl", step, [q.id for q in questions], accuracy) \
            if self.world.main else None
        if change is not None:
            self.tracker.log({"eval/change": change.difference, "eval/change_se": change.se}, step)
            self._print(f"eval  step {step:>4} | change since step 0: {change}")

    def _validate(self) -> float:
        questions = self.task.validation[:self.cfg.growth.validation_questions]
        if not questions:
            raise NeuromasError("growth.margin and stage patience need a validation split (task.validation_path)")
        accuracy = self.accuracy(questions).mean
        self.tracker.log({"growth/validation_accuracy": accuracy}, self.step)
        return accuracy

    def _track_validation(self, accuracy: float) -> None:
        if self.best_validation is None or accuracy > self.best_validation:
            self.best_validation, self.stale_validations = accuracy, 0
        else:
            self.stale_validations += 1

    def _plateaued(self, stage: StageConfig) -> bool:
        return bool(stage.patience) and self.stale_validations >= stage.patience

    # ---- growth -------------------------------------------------------------------------

    def _end_stage(self, stage: StageConfig) -> None:
        """Validation gate, then the stage checkpoint (the rollback point), then grow."""
        cfg = self.cfg
        validation = self._validate() if cfg.growth.margin is not None else None
        if self.stage_index > 0 and validation is not None:
            parent = ckpt.read_state(self._stage_dir(self.stage_index - 1))["validation"]
            if validation < parent - cfg.growth.margin:
                return self._roll_back(stage, validation, parent)
        if self.stage_index + 1 < len(self.stages):  # the rollback point of the next stage
            self.save(self._stage_dir(self.stage_index), validation=validation)
        self._next_stage()

    def _next_stage(self) -> None:
        """Leave the current stage: fresh per-stage counters, and grow into the next one if any."""
        self.stage_index += 1
        self.stage_step, self.attempt, self.best_validation, self.stale_validations = 0, 0, None, 0
        if self.stage_index < len(self.stages):
            next_stage = self.stages[self.stage_index]
            self._grow(next_stage, next_stage.init)

    def _stage_dir(self, index: int) -> Path:
        return self.run_dir / "checkpoints" / f"stage_{index}"

    def _grow(self, stage: StageConfig, init: str) -> None:
        new_topology = Topology.from_config(stage.topology)
        plan = plan_growth(self.topology, new_topology, stage.copy_from)
        old_state = self.optimizer.named_state()
        self.agents = grow_agents(self.agents, plan, new_topology.node_ids, init, stage.noise)
        self.optimizer = self._new_optimizer()
        self.optimizer.load_named_state(old_state, plan.old_to_new)
        self._use_topology(new_topology, frozenset(plan.new_nodes))
        event = f"growth: stage {self.stage_index} {new_topology.widths} (init {init}, gate over {stage.gate_steps} steps)"
        self._print(f"{event}: {plan.describe()}")
        if not self.world.main:
            return
        with (self.run_dir / "growth.jsonl").open("a") as f:
            f.write(json.dumps({"step": self.step, "stage": self.stage_index, "widths": new_topology.widths,
                                "init": init, "old_to_new": plan.old_to_new, "new_nodes": plan.new_nodes,
                                "parents": plan.parents}) + "\n")

    def _use_topology(self, topology: Topology, new_nodes: frozenset[str]) -> None:
        self.topology, self.new_nodes = topology, new_nodes
        self.engine.agents = self.agents
        self.engine.set_topology(topology, new_nodes)
        self._record_topology()

    def _record_topology(self) -> None:
        if not self.world.main:
            return
        (self.run_dir / "topology.txt").write_text(self.topology.describe() + "\n")
        picture = draw_topology(self.topology, self.run_dir / "topology.png")
        self.tracker.image("topology", picture, self.step)

    def _roll_back(self, stage: StageConfig, validation: float, parent: float) -> None:
        inits = [stage.init, *self.cfg.growth.retry_inits]
        self._print(f"growth: stage {self.stage_index} validation {validation:.3f} < parent {parent:.3f} - margin; "
                   f"rolling back (tried init {inits[self.attempt]})")
        self.attempt += 1
        if self.attempt >= len(inits):
            raise NeuromasError(f"stage {self.stage_index} ({stage.topology.widths}) stayed below its parent on "
                                f"validation with inits {', '.join(inits)}; the parent system is in "
                                f"{self._stage_dir(self.stage_index - 1)}")
        self._load(self._stage_dir(self.stage_index - 1), restore_rng=False)
        self.stage_step, self.best_validation, self.stale_validations = 0, None, 0
        self._grow(stage, inits[self.attempt])

    # ---- checkpoints ----------------------------------------------------------------------

    def save(self, target: Path, adapters_only: bool = False, **extra) -> Path:
        """A checkpoint at `target`; `adapters_only`: the final system, peft adapters at the top level."""
        state = {"step": self.step, "stage_index": self.stage_index, "stage_step": self.stage_step,
                 "attempt": self.attempt, "new_nodes": sorted(self.new_nodes), "topology": self.topology.to_dict(),
                 "best_validation": self.best_validation, "stale_validations": self.stale_validations,
                 "baseline": self.credit_state.baseline, "gate": self._gate(), **extra}
        if adapters_only:
            if self.world.main:
                ckpt.save_adapters(target, self.agents, state)
        else:  # every rank takes part in gathering the state; rank 0 writes it
            self._check_ranks_agree()
            optimizer, rng = {"state": self.optimizer.named_state()}, self.world.gather(ckpt.rng_state())
            if self.world.main:
                ckpt.save_checkpoint(target, self.agents, optimizer, state, rng)
        self.world.barrier()  # nobody reads the checkpoint before it is complete
        return target

    def _check_ranks_agree(self) -> None:
        """Data parallelism keeps every rank's adapters identical; stop loudly if they are not."""
        if self.world.size == 1:
            return
        params = self.agents.parameters()
        digest = torch.stack([torch.stack([p.detach().double().sum(), p.detach().double().abs().sum()])
                              for p in params]).cpu()
        differ = [r for r, d in enumerate(self.world.gather(digest)) if not torch.equal(d, digest)]
        if differ:
            raise NeuromasError(f"step {self.step}: rank {self.world.rank} and rank(s) {differ} hold different "
                                "adapters; data-parallel training went out of step (please report this)")

    def resume(self) -> None:
        """Continue from the latest checkpoint of the run directory."""
        path = ckpt.latest_checkpoint(self.run_dir)
        state = self._load(path, restore_rng=True)
        self.step, self.stage_index, self.stage_step = state["step"], state["stage_index"], state["stage_step"]
        self.attempt, self.best_validation = state["attempt"], state["best_validation"]
        self.stale_validations = state["stale_validations"]
        self.credit_state.baseline = state.get("baseline")
        if path.name.startswith("stage_"):  # saved as the stage closed: go on to the next one
            self._next_stage()
        # Drop what was logged after the checkpoint: those steps run again.
        self.tracker.truncate_after(self.step)
        if self.world.main:
            truncate_jsonl(self.run_dir / "growth.jsonl", self.step, inclusive=path.name.startswith("stage_"))
            truncate_jsonl(self.run_dir / "evals.jsonl", self.step)
        self._print(f"resumed from {path} at step {self.step} (stage {self.stage_index})")

    def _check_start(self, source: Path) -> tuple[Path, dict]:
        """The saved system `train.init_from` names, checked against this run's first topology."""
        path = ckpt.system_dir(source)
        state = ckpt.read_state(path)
        if state["topology"] != self.topology.to_dict():
            raise NeuromasError(f"train.init_from: {source} holds topology {state['topology']['widths']}, "
                                f"but this run starts with {self.topology.widths}")
        return path, state

    def _start_from(self, path: Path, state: dict) -> None:
        """Begin from another run's adapters (e.g. a hand-grown system); its new nodes stay gated."""
        load_adapter_states(self.agents, ckpt.adapter_states_from(path, self.topology.node_ids))
        self._use_topology(self.topology, frozenset(state.get("new_nodes", [])))

    def _load(self, path: Path, restore_rng: bool) -> dict:
        """Make the trainer hold the system saved at `path`: topology, adapters, optimizer."""
        state = ckpt.read_state(path)
        topology = Topology.from_dict(state["topology"])
        agents = Agents(self.agents.model.unload(), self.agents.tokenizer, self.cfg.agents, topology.node_ids,
                        all_node_ids=self.agents.all_node_ids)
        load_adapter_states(agents, ckpt.adapter_states_from(path, topology.node_ids))
        self.agents = agents
        self.optimizer = self._new_optimizer()
        identity = {n: n for n in topology.node_ids}
        self.optimizer.load_named_state(ckpt.optimizer_state_from(path)["state"], identity)
        self._use_topology(topology, frozenset(state["new_nodes"]))
        if restore_rng:
            ckpt.restore_rng(path, self.world.rank)
        return state

    def _summary(self, step: int, m: dict[str, float]) -> str:
        lengths = " ".join(f"{n} {m[f'node/{n}/msg_tokens']:.0f}" for n in self.topology.node_ids)
        return (f"step {step:>4}/{self.cfg.train.steps} | reward {m['reward/mean']:.3f} | acc {m['reward/accuracy']:.3f}"
                f" | len {lengths} | loss {m['train/loss']:+.4f} | {m['time/step']:.1f}s")


def reward_summary(rewards: torch.Tensor, prefix: str) -> dict[str, float]:
    """Mean, std and accuracy (share of rewards reaching 1) of a reward vector."""
    return {f"{prefix}/mean": float(rewards.mean()), f"{prefix}/std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            f"{prefix}/accuracy": float((rewards >= 1.0).float().mean())}


def reward_metrics(rewards: torch.Tensor, episodes: Episodes, node_ids: list[str]) -> dict[str, float]:
    """Task reward over the regular episodes, overall and per node (over the episodes a node took part in)."""
    regular = rewards[:episodes.num_regular]
    out = reward_summary(regular, "reward")
    for node_id in node_ids:
        seen = sorted({m.episode for m in episodes.of_node(node_id) if m.episode < episodes.num_regular})
        if seen:
            out.update(reward_summary(regular[seen], f"node/{node_id}/reward"))
    return out


def combine_rank_metrics(per_rank: list[dict]) -> dict:
    """One step's metrics from every rank's: phase times take the slowest rank, reward errors and
    generated tokens add up, text is rank 0's, and the rest is the mean over the ranks that have the key (each rank has
    an equal share of the questions; the update's metrics are already global and equal)."""
    out = {}
    for key in dict.fromkeys(k for m in per_rank for k in m):
        values = [m[key] for m in per_rank if key in m]
        if isinstance(values[0], str):
            out[key] = values[0]
        elif key.startswith("time/"):
            out[key] = max(values)
        elif key in ("reward/errors", "rollout/tokens", "rollout/messages"):
            out[key] = sum(values)
        else:
            out[key] = sum(values) / len(values)
    return out


def transcripts(episodes: Episodes, rewards: torch.Tensor, count: int) -> list[dict]:
    """The first `count` episodes as plain dicts: question, each node's message, answer, reward."""
    answers = episodes.answers()
    return [{"question": episodes.samples[e].question, "reference": episodes.samples[e].answer,
             "answer": answers[e], "reward": float(rewards[e]), "messages": dict(episodes.transcript(e))}
            for e in range(min(count, episodes.num_regular))]


def message_metrics(episodes: Episodes, node_ids: list[str]) -> dict[str, float]:
    metrics = {}
    for node_id in node_ids:
        messages = episodes.of_node(node_id)
        if not messages:
            continue  # gated out of every episode of this step
        metrics[f"node/{node_id}/msg_tokens"] = sum(len(m.completion_ids) for m in messages) / len(messages)
        metrics[f"node/{node_id}/truncated"] = sum(m.truncated for m in messages) / len(messages)
    return metrics
