"""Joint policy-gradient training of every node from the final task reward.

One step: sample questions -> roll out K full-system episodes each -> score the sink's
answers -> group-relative advantages, shared by every node of an episode -> one loss over
every node's sampled tokens (each node's term averaged over its tokens, summed over nodes)
-> one optimizer step on all adapters.
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from neuromas.agents import Agents
from neuromas.algorithms import ADVANTAGES, kl_k3, policy_gradient_loss, token_weights
from neuromas.checkpoint import save_checkpoint, write_atomically
from neuromas.config import Config, save_config, to_dict
from neuromas.prompts import PromptBuilder
from neuromas.rollout import Episodes, Message, RolloutEngine
from neuromas.tasks import build_task
from neuromas.topology import Topology
from neuromas.tracking import Tracker


class Timer(dict):
    """Accumulates seconds per phase: ``with timer("rollout"): ...`` -> ``{"time/rollout": s}``."""

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        yield
        self[f"time/{phase}"] = self.get(f"time/{phase}", 0.0) + time.perf_counter() - start


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, agents: Agents | None = None):
        self.cfg = cfg
        self.run_dir = run_dir
        random.seed(cfg.train.seed)
        torch.manual_seed(cfg.train.seed)
        self.topology = Topology.from_config(cfg.topology)
        self.task = build_task(cfg.task)
        prompts = PromptBuilder(cfg.prompts, self.topology, self.task.answer_format)
        self.agents = agents or Agents.build(cfg.model, cfg.agents, self.topology.node_ids)
        self.engine = RolloutEngine(cfg.rollout, self.agents, self.topology, prompts)
        self.optimizer = torch.optim.AdamW(self.agents.parameters(), lr=cfg.train.lr,
                                           weight_decay=cfg.train.weight_decay)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "topology.txt").write_text(self.topology.describe() + "\n")
        self.tracker = Tracker(cfg.tracking, run_dir, cfg.name, to_dict(cfg))

    def fit(self) -> list[dict]:
        """Train for `train.steps` steps; returns the per-step metrics."""
        cfg = self.cfg
        history = []
        self._evaluate(step=0)
        for step in tqdm(range(1, cfg.train.steps + 1), desc="train", unit="step", dynamic_ncols=True):
            metrics = self.train_step(step)
            history.append(metrics)
            self.tracker.log(metrics, step)
            tqdm.write(self._summary(step, metrics))
            if cfg.eval.every and step % cfg.eval.every == 0 and step != cfg.train.steps:
                self._evaluate(step)
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0:
                save_checkpoint(self.run_dir / "checkpoints", step, self.agents, self.optimizer,
                                {"topology": self.topology.to_dict()}, cfg.checkpoint.keep_last)
        self._evaluate(cfg.train.steps)
        write_atomically(self.run_dir / "adapters", self.agents.save)
        self.tracker.close()
        return history

    def train_step(self, step: int) -> dict[str, float]:
        cfg, timer = self.cfg, Timer()
        with timer("step"):
            questions = self.task.train_batch(step - 1, cfg.train.questions_per_step)
            with timer("rollout"):
                episodes = self.engine.run(questions, cfg.rollout.samples_per_question)
            with timer("reward"):
                rewards = self.task.score(episodes.answers(), episodes.samples)
            groups = rewards.view(len(questions), cfg.rollout.samples_per_question)
            advantages = ADVANTAGES[cfg.algorithm.advantage](groups).flatten()
            with timer("update"):
                update_metrics = self.update(episodes, advantages)
        return {**reward_metrics(rewards), **update_metrics, **message_metrics(episodes, self.topology.node_ids),
                **timer}

    def update(self, episodes: Episodes, advantages: torch.Tensor) -> dict[str, float]:
        """One optimizer step on every adapter from the episodes' shared advantages [E]."""
        cfg = self.cfg
        node_index = {node_id: i for i, node_id in enumerate(self.topology.node_ids)}
        num_tokens = torch.zeros(len(node_index))
        for m in episodes.messages:
            num_tokens[node_index[m.node_id]] += len(m.completion_ids)
        # A zero advantage contributes nothing to the policy gradient: skip its forward pass
        # (its tokens still count in the per-node average, so the loss is unchanged).
        rows = [m for m in episodes.messages if cfg.algorithm.kl_coef > 0 or advantages[m.episode] != 0]
        rows.sort(key=lambda m: len(m.prompt_ids) + len(m.completion_ids))
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"loss": 0.0, "kl": 0.0, "kl_tokens": 0.0, "logprob_gap": 0.0}
        for start in range(0, len(rows), cfg.train.micro_batch_size):
            chunk = rows[start:start + cfg.train.micro_batch_size]
            self._accumulate(chunk, advantages, node_index, num_tokens, totals)
        params = self.agents.parameters()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm) if rows else torch.tensor(0.0)
        if rows:
            self.optimizer.step()
        metrics = {"train/loss": totals["loss"], "train/grad_norm": float(grad_norm),
                   "train/rows_updated": float(len(rows)), "train/logprob_gap": totals["logprob_gap"]}
        if cfg.algorithm.kl_coef > 0:
            metrics["train/kl"] = totals["kl"] / max(totals["kl_tokens"], 1.0)
        return metrics

    def _accumulate(self, chunk: list[Message], advantages: torch.Tensor, node_index: dict[str, int],
                    num_tokens: torch.Tensor, totals: dict[str, float]) -> None:
        """Forward + backward of one micro-batch; gradients add up across micro-batches."""
        cfg, agents = self.cfg, self.agents
        prompts, completions = [m.prompt_ids for m in chunk], [m.completion_ids for m in chunk]
        logprobs, mask = agents.completion_logprobs(prompts, completions, [m.node_id for m in chunk],
                                                    cfg.rollout.temperature)
        old = torch.zeros_like(logprobs)
        for row, m in enumerate(chunk):
            old[row, :len(m.logprobs)] = m.logprobs.to(old.device)
        weights = token_weights(torch.tensor([node_index[m.node_id] for m in chunk], device=mask.device), mask,
                                num_tokens.to(mask.device))
        adv = advantages[[m.episode for m in chunk]].to(logprobs.device)
        loss = policy_gradient_loss(logprobs, old, adv, weights)
        if cfg.algorithm.kl_coef > 0:
            with torch.no_grad():
                ref, _ = agents.completion_logprobs(prompts, completions, None, cfg.rollout.temperature)
            kl = kl_k3(logprobs, ref)
            loss = loss + cfg.algorithm.kl_coef * (kl * weights).sum()
            totals["kl"] += float((kl.detach() * mask).sum())
            totals["kl_tokens"] += float(mask.sum())
        loss.backward()
        totals["loss"] += float(loss.detach())
        # Sampling and training log-probs must agree; a gap means stale or wrong weights.
        gap = ((logprobs.detach() - old).abs() * mask).max()
        totals["logprob_gap"] = max(totals["logprob_gap"], float(gap))

    @torch.no_grad()
    def _evaluate(self, step: int) -> None:
        num = min(self.cfg.eval.num_questions, len(self.task.test))
        if num == 0:
            return
        questions = self.task.test[:num]
        episodes = self.engine.run(questions, samples_per_question=1, greedy=True)
        rewards = self.task.score(episodes.answers(), episodes.samples)
        metrics = {"eval/accuracy": float((rewards >= 1.0).float().mean()), "eval/reward": float(rewards.mean()),
                   "eval/num_questions": float(num)}
        self.tracker.log(metrics, step)
        tqdm.write(f"eval  step {step:>4} | accuracy {metrics['eval/accuracy']:.3f} on {num} test questions (greedy)")

    def _summary(self, step: int, m: dict[str, float]) -> str:
        lengths = " ".join(f"{n} {m[f'node/{n}/msg_tokens']:.0f}" for n in self.topology.node_ids)
        return (f"step {step:>4}/{self.cfg.train.steps} | reward {m['reward/mean']:.3f} | acc {m['reward/accuracy']:.3f}"
                f" | len {lengths} | loss {m['train/loss']:+.4f} | {m['time/step']:.1f}s")


def reward_metrics(rewards: torch.Tensor) -> dict[str, float]:
    """An episode counts as correct when its reward reaches 1."""
    return {"reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            "reward/accuracy": float((rewards >= 1.0).float().mean())}


def message_metrics(episodes: Episodes, node_ids: list[str]) -> dict[str, float]:
    metrics = {}
    for node_id in node_ids:
        messages = episodes.of_node(node_id)
        metrics[f"node/{node_id}/msg_tokens"] = sum(len(m.completion_ids) for m in messages) / len(messages)
        metrics[f"node/{node_id}/truncated"] = sum(m.truncated for m in messages) / len(messages)
    return metrics
