"""One step's metrics: reward and message statistics, phase times, transcripts, and how the
metrics of several ranks combine into one step's."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from neuromas.rollout import Episodes


class Timer(dict):
    """Accumulates seconds per phase: ``with timer("rollout"): ...`` -> ``{"time/rollout": s}``."""

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        yield
        self[f"time/{phase}"] = self.get(f"time/{phase}", 0.0) + time.perf_counter() - start


def step_metrics(episodes: Episodes, rewards: torch.Tensor, node_ids: list[str]) -> dict[str, float]:
    """What one step's rollout shows: rewards (overall and per node), message lengths, volume."""
    return {**reward_metrics(rewards, episodes, node_ids), **message_metrics(episodes, node_ids),
            "rollout/tokens": float(sum(len(m.completion_ids) for m in episodes.messages)),
            "rollout/messages": float(len(episodes.messages))}


def summary_line(step: int, steps: int, m: dict[str, float], node_ids: list[str]) -> str:
    """The step's one printed line."""
    lengths = " ".join(f"{n} {m[f'node/{n}/msg_tokens']:.0f}" if f"node/{n}/msg_tokens" in m else f"{n} -"
                       for n in node_ids)  # "-": gated out of every episode of the step
    return (f"step {step:>4}/{steps} | reward {m['reward/mean']:.3f} | acc {m['reward/accuracy']:.3f}"
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
