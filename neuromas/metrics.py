"""One step's metrics: reward and message statistics, phase times, transcripts, and `Stats`,
the one rule by which statistics of micro-batches and of ranks combine."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from neuromas.rollout import Episodes
from neuromas.tasks.split import part_correct
from neuromas.topology import parse_node_id


REDUCTIONS = {"sum": sum, "max": max, "mean": lambda v: sum(v) / len(v), "same": lambda v: v[0]}


class Stats:
    """Named statistics that carry their own reduction, declared when first recorded: `add`
    (sums add up), `peak` (the largest is kept), `mean` (the average over parts that each hold an
    equal share, such as ranks) and `same` (equal everywhere, or text: the first part's). The
    same rule combines micro-batches within a step (`add`, `peak`) and ranks (`combine`)."""

    def __init__(self, values: dict | None = None, kind: str = "same"):
        self.values: dict[str, float | str] = {}
        self.kinds: dict[str, str] = {}
        for key, value in (values or {}).items():
            self.set(key, value, kind)

    def _kind(self, key: str, kind: str) -> None:
        if self.kinds.setdefault(key, kind) != kind:
            raise ValueError(f"statistic {key!r} is recorded as {self.kinds[key]!r} and as {kind!r}")

    def add(self, key: str, value: float) -> None:
        self._kind(key, "sum")
        self.values[key] = self.values.get(key, 0.0) + value

    def peak(self, key: str, value: float) -> None:
        self._kind(key, "max")
        self.values[key] = max(self.values.get(key, value), value)

    def set(self, key: str, value: float | str, kind: str = "same") -> None:
        self._kind(key, kind)
        self.values[key] = value

    def update(self, values: dict, kind: str) -> None:
        for key, value in values.items():
            self.set(key, value, kind)

    def get(self, key: str, default: float = 0.0) -> float:
        return self.values.get(key, default)

    def __getitem__(self, key: str) -> float | str:
        return self.values[key]

    def __contains__(self, key: str) -> bool:
        return key in self.values

    @staticmethod
    def combine(parts: list[Stats]) -> Stats:
        """One set of statistics from several parts' (each key over the parts that hold it)."""
        out = Stats()
        for key in dict.fromkeys(k for part in parts for k in part.values):
            have = [part for part in parts if key in part.values]
            out.kinds[key] = have[0].kinds[key]
            out.values[key] = REDUCTIONS[out.kinds[key]]([part.values[key] for part in have])
        return out


class Timer(dict):
    """Accumulates seconds per phase: ``with timer("rollout"): ...`` -> ``{"time/rollout": s}``."""

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        yield
        self[f"time/{phase}"] = self.get(f"time/{phase}", 0.0) + time.perf_counter() - start


def step_metrics(episodes: Episodes, rewards: torch.Tensor, node_ids: list[str]) -> Stats:
    """What one step's rollout shows: rewards (overall and per node) and message lengths, means
    over this process's episodes (ranks hold equal shares), and the volume generated (sums)."""
    stats = Stats({**reward_metrics(rewards, episodes, node_ids), **message_metrics(episodes, node_ids),
                   **part_metrics(episodes)}, "mean")
    stats.add("rollout/tokens", float(sum(m.num_sampled for m in episodes.messages)))
    stats.add("rollout/messages", float(len(episodes.messages)))
    return stats


def summary_line(step: int, steps: int, m: dict[str, float], node_ids: list[str]) -> str:
    """The step's one printed line."""
    lengths = " ".join(f"{n} {m[f'node/{n}/msg_tokens']:.0f}" if f"node/{n}/msg_tokens" in m else f"{n} -"
                       for n in node_ids)  # "-": gated out of every episode of the step
    return (f"step {step:>4}/{steps} | reward {m['reward/mean']:.3f} | acc {m['reward/accuracy']:.3f}"
            f" | len {lengths}" + (f" | loss {m['train/loss']:+.4f}" if "train/loss" in m else "")
            + f" | {m['time/step']:.1f}s")


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


def transcripts(episodes: Episodes, rewards: torch.Tensor, count: int) -> list[dict]:
    """The first `count` episodes as plain dicts: question, each node's message, answer, reward."""
    answers = episodes.answers()
    return [{"id": episodes.samples[e].id, "question": episodes.samples[e].question,
             "reference": episodes.samples[e].answer,
             "answer": answers[e], "reward": float(rewards[e]), "messages": dict(episodes.transcript(e)),
             **({"turns": episodes.turns[e]} if episodes.turns is not None else {})}
            for e in range(min(count, episodes.num_regular))]


def part_metrics(episodes: Episodes) -> dict[str, float]:
    """node/<id>/part_correct: the share of a first-layer node's regular-episode messages that state
    its own part's value, on split tasks (samples with meta["parts"]); empty otherwise. A diagnostic,
    not part of the reward."""
    scores: dict[str, list[float]] = {}
    first_layer = {m.node_id for m in episodes.messages if parse_node_id(m.node_id).layer == 0}
    if len(first_layer) < 2 or len(set(episodes.answer_ids)) != 1 or episodes.answer_ids[0] in first_layer:
        return {}  # a one-node system is given the whole question: it has no part
    for m in episodes.messages:
        if m.node_id in first_layer and m.episode < episodes.num_regular:
            score = part_correct(m.text, episodes.samples[m.episode], parse_node_id(m.node_id).index)
            if score is not None:
                scores.setdefault(m.node_id, []).append(score)
    return {f"node/{n}/part_correct": sum(v) / len(v) for n, v in scores.items()}


def message_metrics(episodes: Episodes, node_ids: list[str]) -> dict[str, float]:
    metrics = {}
    for node_id in node_ids:
        messages = episodes.of_node(node_id)
        if not messages:
            continue  # gated out of every episode of this step
        metrics[f"node/{node_id}/msg_tokens"] = sum(m.num_sampled for m in messages) / len(messages)
        metrics[f"node/{node_id}/truncated"] = sum(m.truncated for m in messages) / len(messages)
        if any(m.tool_calls for m in messages):  # per message: calls made, and those that came back an error
            metrics[f"node/{node_id}/tool_calls"] = sum(m.tool_calls for m in messages) / len(messages)
            metrics[f"node/{node_id}/tool_errors"] = sum(m.tool_errors for m in messages) / len(messages)
    return metrics
