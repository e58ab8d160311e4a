"""Credit assignment: which advantage each node's message gets. Returns advantages [E, N].

- shared: every node of an episode gets the episode's group-relative advantage (NeuroMAS).
- per_node: each node's advantages use only the episodes it took part in (growth gates make
  those differ) and are normalised by that node's own reward spread.
- branch: counterfactual credit. For a budget of (episode, node) pairs per question, the node
  is resampled M times with its inputs held fixed and everything downstream re-run (batched
  into the same per-layer generate calls, see `RolloutEngine.run`); the node's message is
  then judged against its own siblings: leave-one-out over the M + 1 rewards. Only branched
  messages are trained (pure counterfactual credit), unless `branch.shared` gives every other
  message the shared advantage too; re-run downstream messages are never trained.
- attribution: gradient-based connection weights (GBC/AgentChord). For each message, the
  gradient of its node's log-probability of that message with respect to the embeddings of
  the upstream messages in its prompt gives each input a salience (mean or max L1 norm over
  the span, or |gradient x input|); normalised over a node's inputs (optionally its top k)
  these are shares that sum to 1. From the answering nodes (weight 1 each), a node's weight is the sum over
  its readers of reader weight x share, and its advantage is the episode's advantage times
  its weight times its layer's width (so with full connectivity the mean scale is 1).
With `cutoff_penalty`, each node's advantage also carries a leave-one-out penalty for its own
messages cut off at the token limit, in every mode.
With one final reward per episode, per-node grouping of K full-system samples equals
per-question grouping: only `branch` (and gates, for `per_node`) separates nodes' credit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from neuromas.agents import Agents
from neuromas.algorithms import (ADVANTAGES, KL_ESTIMATORS, reinforce_advantages, rloo_advantages, shape_rewards,
                                 update_baseline)
from neuromas.attribution import attribution_weights, input_scores, normalise_shares
from neuromas.config import AlgorithmConfig
from neuromas.rollout import Branch, Episodes
from neuromas.topology import Topology


@dataclass
class Credit:
    """Advantages [E, N] (episodes x nodes) for one step's episodes, and the metrics it adds.

    `baseline` is reinforce's moving average of the reward (None before the first step); the
    caller keeps it in the run state and passes it back each step.
    """

    advantages: torch.Tensor
    baseline: float | None
    metrics: dict[str, float] = field(default_factory=dict)


def _one_rank(values: torch.Tensor) -> list[torch.Tensor]:
    return [values]


def assign(cfg: AlgorithmConfig, episodes: Episodes, task_rewards: torch.Tensor, agents: Agents, topology: Topology,
           samples_per_question: int, baseline: float | None, temperature: float, micro_batch_size: int,
           gather: Callable[[torch.Tensor], list[torch.Tensor]] = _one_rank) -> Credit:
    """The credit phase: shape the rewards, charge the KL to the base when it is in the reward,
    attribute (attribution mode), and turn rewards into advantages by the configured credit
    mode. `gather` collects a tensor from every rank, so the reinforce baseline is the same on all."""
    rewards = shape_rewards(task_rewards, cfg.reward_scale, cfg.reward_clip)
    metrics = {}
    if cfg.kl.coef > 0 and cfg.kl.applied_to == "reward":
        kl = episode_kl(agents, episodes, cfg.kl.estimator, temperature, micro_batch_size)
        rewards, metrics["train/kl_penalty"] = rewards - cfg.kl.coef * kl, float(kl.mean())
    shares = widths = None
    if cfg.credit == "attribution":
        shares = attribution_shares(agents, episodes, cfg, temperature, micro_batch_size)
        widths = {n.id: topology.widths[n.layer] for n in topology.nodes}
    out = advantages(cfg, episodes, rewards, topology.node_ids, samples_per_question, baseline, shares, widths)
    if cfg.advantage == "reinforce":  # one baseline on every rank: from every rank's rewards
        baseline = update_baseline(baseline, torch.cat(gather(rewards[:episodes.num_regular])), cfg.baseline_decay)
    metrics["credit/branched_episodes"] = float(episodes.num_episodes - episodes.num_regular)
    return Credit(out, baseline, metrics)


@torch.no_grad()
def episode_kl(agents: Agents, episodes: Episodes, estimator: str, temperature: float,
               micro_batch_size: int) -> torch.Tensor:
    """Sum over every message of an episode of the per-token KL to the base: [E]."""
    kl = torch.zeros(episodes.num_episodes)
    for start in range(0, len(episodes.messages), micro_batch_size):
        chunk = episodes.messages[start:start + micro_batch_size]
        ref = agents.base_logprobs([m.prompt_ids for m in chunk], [m.completion_ids for m in chunk], temperature)
        for row, m in enumerate(chunk):
            n = len(m.completion_ids)  # tool results (own_mask 0) are not the node's: no KL on them
            kl[m.episode] += float((KL_ESTIMATORS[estimator](m.logprobs, ref[row, :n].cpu()) * m.own_mask).sum())
    return kl


def group_advantages(cfg: AlgorithmConfig, rewards: torch.Tensor, baseline: float | None) -> torch.Tensor:
    """rewards [G, K] -> advantages [G, K] with the configured estimator."""
    if cfg.advantage == "reinforce":
        return reinforce_advantages(rewards, float(rewards.mean()) if baseline is None else baseline)
    return ADVANTAGES[cfg.advantage](rewards)


def plan_branches(node_ids: list[str], num_questions: int, samples_per_question: int, per_question: int,
                  copies: int, step: int) -> list[Branch]:
    """Which (episode, node) pairs to branch this step: nodes in turn, step after step."""
    branches = []
    for q in range(num_questions):
        for j in range(per_question):
            turn = (step * num_questions + q) * per_question + j
            branches.append(Branch(q * samples_per_question + j % samples_per_question,
                                   node_ids[turn % len(node_ids)], copies))
    return branches


def advantages(cfg: AlgorithmConfig, episodes: Episodes, rewards: torch.Tensor, node_ids: list[str],
               samples_per_question: int, baseline: float | None = None, shares=None, widths=None) -> torch.Tensor:
    """Advantages [E_total, N] (E_total counts branch copies; their rows are 0 unless branched).
    `shares` and `widths` (node -> its layer's width): attribution mode only."""
    num_regular = episodes.num_regular
    regular = rewards[:num_regular]
    shared = group_advantages(cfg, regular.view(-1, samples_per_question), baseline).flatten()
    out = torch.zeros(len(rewards), len(node_ids))
    if cfg.credit == "per_node":
        for n, node_id in enumerate(node_ids):
            out[:num_regular, n] = _node_advantages(cfg, episodes, regular, node_id, samples_per_question)
    elif cfg.credit in ("shared", "attribution") or cfg.branch.shared:
        out[:num_regular] = shared.unsqueeze(1)
    if cfg.credit == "attribution":
        _attribution(out, episodes, shares, node_ids, widths)
    if cfg.credit == "branch":
        for source, node_id, copies in episodes.branches:
            trial = rewards[[source, *copies]].unsqueeze(0)  # [1, M + 1]: the original first
            loo = rloo_advantages(trial).squeeze(0)
            column = node_ids.index(node_id)
            out[source, column] = loo[0]
            out[copies, column] = loo[1:]
    if cfg.cutoff_penalty:
        out[:num_regular] -= cfg.cutoff_penalty * cutoff_advantages(episodes, node_ids, samples_per_question)
    return out


def cutoff_advantages(episodes: Episodes, node_ids: list[str], samples_per_question: int) -> torch.Tensor:
    """[E_regular, N]: per node, whether its message was cut off at the token limit (1) or not (0),
    leave-one-out against the same question's other samples the node took part in; 0 where it
    took no part, or was alone in its group."""
    cut = torch.full((episodes.num_regular, len(node_ids)), float("nan"))  # nan: absent
    for m in episodes.messages:
        if m.episode < episodes.num_regular:
            cut[m.episode, node_ids.index(m.node_id)] = float(m.truncated)
    out = torch.zeros_like(cut)
    for start in range(0, episodes.num_regular, samples_per_question):
        for n in range(len(node_ids)):
            group = cut[start:start + samples_per_question, n]
            rows = (~group.isnan()).nonzero().flatten()
            if len(rows) >= 2:
                out[start + rows, n] = rloo_advantages(group[rows].unsqueeze(0)).squeeze(0)
    return out


def attribution_shares(agents, episodes: Episodes, cfg: AlgorithmConfig, temperature: float,
                       micro_batch_size: int) -> dict[tuple[int, str], dict[str, float]]:
    """(episode, node) -> {upstream node: share}, shares of one reader summing to 1."""
    scores = input_scores(agents, episodes, range(episodes.num_regular), cfg.attribution.agg,
                          cfg.attribution.objective, temperature, micro_batch_size)
    return {key: normalise_shares(score, cfg.attribution.top_k) for key, score in scores.items()}


def _attribution(out: torch.Tensor, episodes: Episodes, shares, node_ids: list[str], widths: dict[str, int]) -> None:
    """Scale each regular episode's advantages by its nodes' attribution weights, in place."""
    for e in range(episodes.num_regular):
        order = [m.node_id for m in episodes.messages if m.episode == e]
        weights = attribution_weights(episodes.answer_ids, order, {n: shares.get((e, n), {}) for n in order})
        for node, weight in weights.items():
            scale = 1.0 if node in episodes.answer_ids else weight * widths[node]
            out[e, node_ids.index(node)] *= scale


def _node_advantages(cfg: AlgorithmConfig, episodes: Episodes, rewards: torch.Tensor, node_id: str,
                     samples_per_question: int) -> torch.Tensor:
    """One node's advantages over the regular episodes: group mean over the episodes it took
    part in, divided by the spread of its own rewards; 0 where it was absent or alone."""
    present = torch.zeros(len(rewards), dtype=torch.bool)
    present[[m.episode for m in episodes.of_node(node_id) if m.episode < len(rewards)]] = True
    out = torch.zeros(len(rewards))
    if present.sum() < 2:
        return out
    for group in range(len(rewards) // samples_per_question):
        idx = torch.arange(group * samples_per_question, (group + 1) * samples_per_question)
        idx = idx[present[idx]]
        if len(idx) >= 2:
            out[idx] = rewards[idx] - rewards[idx].mean()
    if cfg.advantage in ("grpo", "rloo"):  # normalise by this node's own spread
        out = out / (rewards[present].std() + 1e-6)
    return out
