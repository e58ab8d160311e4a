"""Credit assignment: which advantage each node's message gets. Returns advantages [E, N].

- shared: every node of an episode gets the episode's group-relative advantage (NeuroMAS).
- per_node: each node's advantages use only the episodes it took part in (growth gates make
  those differ) and are normalised by that node's own reward spread.
- branch: counterfactual credit. For a budget of (episode, node) pairs per question, the node
  is resampled M times with its inputs held fixed and everything downstream re-run (batched
  into the same per-layer generate calls, see `RolloutEngine.run`); the node's message is
  then judged against its own siblings: leave-one-out over the M + 1 rewards. Only branched
  messages are trained (pure counterfactual credit), unless `branch_shared` gives every other
  message the shared advantage too; re-run downstream messages are never trained.
With one final reward per episode, per-node grouping of K full-system samples equals
per-question grouping: only `branch` (and gates, for `per_node`) separates nodes' credit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neuromas.algorithms import ADVANTAGES, reinforce_advantages, rloo_advantages
from neuromas.config import AlgorithmConfig
from neuromas.rollout import Branch, Episodes


@dataclass
class CreditState:
    baseline: float | None = None  # reinforce's moving average (saved in checkpoints)


def group_advantages(cfg: AlgorithmConfig, rewards: torch.Tensor, state: CreditState) -> torch.Tensor:
    """rewards [G, K] -> advantages [G, K] with the configured estimator."""
    if cfg.advantage == "reinforce":
        baseline = float(rewards.mean()) if state.baseline is None else state.baseline
        return reinforce_advantages(rewards, baseline)
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
               samples_per_question: int, state: CreditState) -> torch.Tensor:
    """Advantages [E_total, N] (E_total counts branch copies; their rows are 0 unless branched)."""
    num_regular = episodes.num_regular
    regular = rewards[:num_regular]
    shared = group_advantages(cfg, regular.view(-1, samples_per_question), state).flatten()
    out = torch.zeros(len(rewards), len(node_ids))
    if cfg.credit == "per_node":
        for n, node_id in enumerate(node_ids):
            out[:num_regular, n] = _node_advantages(cfg, episodes, regular, node_id, samples_per_question)
    elif cfg.credit == "shared" or cfg.branch_shared:
        out[:num_regular] = shared.unsqueeze(1)
    if cfg.credit == "branch":
        for source, node_id, copies in episodes.branches:
            trial = rewards[[source, *copies]].unsqueeze(0)  # [1, M + 1]: the original first
            loo = rloo_advantages(trial).squeeze(0)
            column = node_ids.index(node_id)
            out[source, column] = loo[0]
            out[copies, column] = loo[1:]
    return out


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
