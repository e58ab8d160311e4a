"""The policy update: one loss over every node's sampled tokens, one optimizer over all adapters.

Rows of every node go through one mixed-adapter forward/backward per micro-batch (equal to
per-adapter passes, tests/test_agents.py); `epochs` > 1 re-uses the stored rollout, with the
importance ratio taken against the sampling log-probs (PPO).
"""

from __future__ import annotations

import torch

from neuromas.agents import Agents
from neuromas.algorithms import (KL_ESTIMATORS, clipped_surrogate_loss, clipped_tokens, kl_k3, loss_weights,
                                 policy_gradient_loss, sampler_weights)
from neuromas.config import AlgorithmConfig, TrainConfig
from neuromas.metrics import Stats
from neuromas.rollout import Episodes, Message


class PolicyUpdate:
    def __init__(self, cfg: AlgorithmConfig, train: TrainConfig, temperature: float):
        self.cfg, self.train, self.temperature = cfg, train, temperature

    def needs_all_rows(self) -> bool:
        """Zero-advantage rows still matter when a per-token KL or entropy term is in the loss."""
        return (self.cfg.kl.coef > 0 and self.cfg.kl.applied_to == "loss") or self.cfg.entropy_coef > 0

    def totals(self, episodes: Episodes, advantages: torch.Tensor, node_ids: list[str]) -> dict[str, torch.Tensor]:
        """What the loss is normalised by, counted over this process's episodes: tokens per node
        and in all, rows, and rows to train. With N processes, pass their sum over ranks to `run`."""
        index = {node_id: i for i, node_id in enumerate(node_ids)}
        candidates, trained = self._rows(episodes, advantages, index)
        return {**_totals(candidates, index), "trained_rows": torch.tensor(float(len(trained)))}

    def run(self, agents: Agents, optimizer, episodes: Episodes, advantages: torch.Tensor, node_ids: list[str],
            totals: dict[str, torch.Tensor] | None = None) -> Stats:
        """`epochs` optimizer steps on `episodes` with advantages [E, N]; returns raw statistics
        (`finish` turns them into metrics, after `Stats.combine` over ranks).

        `optimizer` is a backend of neuromas.optim. `totals`: `self.totals` of the whole batch
        (default: of `episodes`); with N processes, `episodes` is this rank's shard and the totals
        are over every rank, so the reduced gradient is the gradient of the whole batch's loss.
        """
        index = {node_id: i for i, node_id in enumerate(node_ids)}
        totals = self.totals(episodes, advantages, node_ids) if totals is None else totals
        _, trained = self._rows(episodes, advantages, index)
        adv = {id(m): float(advantages[m.episode, index[m.node_id]]) for m in trained}
        stats = Stats()
        proximal: dict[int, torch.Tensor] = {}  # each row's log-probs under the trainer before this update
        stats.add("rows_trained", float(len(trained)))
        trained.sort(key=lambda m: len(m.prompt_ids) + len(m.completion_ids))
        for epoch in range(self.cfg.epochs):
            optimizer.zero_grad()
            for start in range(0, len(trained), self.train.micro_batch_size):
                chunk = trained[start:start + self.train.micro_batch_size]
                loss = self._loss(agents, chunk, torch.tensor([adv[id(m)] for m in chunk]), index, totals, stats,
                                  proximal, first_epoch=epoch == 0)
                optimizer.accumulate(loss)
            # Every rank steps when any rank trained (the step is collective), even with nothing of its own.
            if totals["trained_rows"] > 0:
                for node_id, norm in optimizer.node_grad_norms(node_ids).items():
                    stats.set(f"node/{node_id}/grad_norm", norm)  # of the reduced gradient: the same on every rank
                stats.set("train/grad_norm", optimizer.step())
        return stats

    def _rows(self, episodes: Episodes, advantages: torch.Tensor,
              index: dict[str, int]) -> tuple[list[Message], list[Message]]:
        """(messages the loss could train, those it does). The loss is normalised over every
        candidate, so skipping the zero-advantage ones (no forward pass needed) leaves the loss and
        its gradient unchanged."""
        candidates, all_rows = trainable(episodes, self.train.frozen_nodes), self.needs_all_rows()
        trained = [m for m in candidates if float(advantages[m.episode, index[m.node_id]]) != 0
                   or (all_rows and m.episode < episodes.num_regular)]
        return candidates, trained

    def finish(self, stats: Stats, node_ids: list[str]) -> dict[str, float]:
        """Per-node means (over tokens and epochs) from the accumulated sums, and their node average."""
        return _finish(stats, node_ids, stats["rows_trained"], self.cfg.epochs)

    @staticmethod
    def _sampler_stats(chunk: list[Message], trained: torch.Tensor, sampled: torch.Tensor, mask: torch.Tensor,
                       stats: Stats) -> None:
        """How far the sampler's log-probs are from the trainer's, per node: the mean and largest
        absolute gap per token and a k3 estimate of KL(sampler || trainer) per token."""
        gap, kl = (trained - sampled).abs() * mask, kl_k3(sampled, trained) * mask
        stats.peak("train/logprob_gap", float(gap.max()))  # in fp32 a gap above ~1e-4 means stale weights
        for row, m in enumerate(chunk):
            prefix = f"node/{m.node_id}/"
            stats.add(prefix + "sampler_tokens", float(mask[row].sum()))
            stats.add(prefix + "sampler_gap_sum", float(gap[row].sum()))
            stats.add(prefix + "sampler_kl_sum", float(kl[row].sum()))
            stats.peak(prefix + "sampler_gap_max", float(gap[row].max()))

    def _loss(self, agents: Agents, chunk: list[Message], adv: torch.Tensor, index: dict[str, int],
              totals: dict[str, torch.Tensor], stats: Stats, proximal: dict[int, torch.Tensor],
              first_epoch: bool) -> torch.Tensor:
        """The loss of one micro-batch (its share of the whole batch's loss), and its statistics."""
        cfg = self.cfg
        prompts, completions = [m.prompt_ids for m in chunk], [m.completion_ids for m in chunk]
        logprobs, mask, entropy = agents.completion_stats(prompts, completions, [m.node_id for m in chunk],
                                                          self.temperature, entropy_grad=cfg.entropy_coef > 0)
        device = logprobs.device
        mask = mask * own_masks(chunk, mask.shape[1]).to(device)  # tool results: in the prompt, not in the loss
        sampled = torch.zeros_like(logprobs)
        for row, m in enumerate(chunk):
            sampled[row, :len(m.logprobs)] = m.logprobs.to(device)
        nodes = torch.tensor([index[m.node_id] for m in chunk], device=device)
        weights = loss_weights(cfg.loss_agg, nodes, mask, {k: v.to(device) for k, v in totals.items()})
        if first_epoch:
            self._sampler_stats(chunk, logprobs.detach(), sampled, mask, stats)
        old = sampled
        if cfg.off_policy.correction != "none":  # ratios against the trainer's own log-probs, reweighted
            if first_epoch:
                for row, m in enumerate(chunk):
                    proximal[id(m)] = logprobs[row].detach().clone()
            old = torch.stack([proximal[id(m)] for m in chunk])
            weights = weights * sampler_weights(old, sampled, cfg.off_policy.correction, cfg.off_policy.cap) * mask
        adv = adv.to(device)
        if cfg.loss == "clip":
            loss = clipped_surrogate_loss(logprobs, old, adv, weights, cfg.clip_low, cfg.clip_high)
        else:
            loss = policy_gradient_loss(logprobs, old, adv, weights)
        per_token = {"entropy": entropy.detach(), "ratio": torch.exp(logprobs.detach() - old)}
        if cfg.kl.coef > 0 and cfg.kl.applied_to == "loss":
            ref = agents.base_logprobs(prompts, completions, self.temperature)
            kl = KL_ESTIMATORS[cfg.kl.estimator](logprobs, ref)
            loss = loss + cfg.kl.coef * (kl * weights).sum()
            per_token["kl"] = kl.detach()
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * (entropy * weights).sum()
        stats.add("train/loss", float(loss.detach()))
        per_token["clipped"] = clipped_tokens(logprobs.detach(), old, adv, cfg.clip_low, cfg.clip_high).float()
        for row, m in enumerate(chunk):
            n = int(mask[row].sum())
            prefix = f"node/{m.node_id}/"
            stats.add(prefix + "tokens", n)
            for name, values in per_token.items():
                stats.add(prefix + name + "_sum", float((values[row] * mask[row]).sum()))
            stats.peak(prefix + "ratio_max", float((per_token["ratio"][row] * mask[row]).max()))
            stats.add(prefix + "adv_sum", float(adv[row]))
            stats.add(prefix + "adv_sq", float(adv[row]) ** 2)
            stats.add(prefix + "rows", 1)
        return loss


def trainable(episodes: Episodes, frozen: list[str] = ()) -> list[Message]:
    """Messages the loss covers: every message of a regular episode, and the branched node's
    resamples in branch copies (what those copies re-run downstream is only there to score);
    none of a `frozen` node."""
    branched = {(e, node) for _, node, copies in episodes.branches for e in copies}
    return [m for m in episodes.messages if m.node_id not in frozen
            and (m.episode < episodes.num_regular or (m.episode, m.node_id) in branched)]


def own_masks(messages: list[Message], width: int) -> torch.Tensor:
    """[B, width] 1.0 on each message's own sampled tokens, 0.0 on its tool results and padding."""
    out = torch.zeros(len(messages), width)
    for row, m in enumerate(messages):
        out[row, :len(m.completion_ids)] = m.own_mask
    return out


def _totals(rows: list[Message], index: dict[str, int]) -> dict[str, torch.Tensor]:
    node_tokens = torch.zeros(len(index))
    for m in rows:
        node_tokens[index[m.node_id]] += m.num_sampled
    return {"node_tokens": node_tokens, "tokens": node_tokens.sum(), "rows": torch.tensor(float(len(rows)))}


STAT_NAMES = {"entropy": "entropy", "ratio": "ratio_mean", "kl": "kl", "clipped": "clip_frac"}


def _finish(stats: Stats, node_ids: list[str], num_rows: int, epochs: int) -> dict[str, float]:
    out = {"train/loss": stats.get("train/loss") / epochs, "train/grad_norm": stats.get("train/grad_norm"),
           "train/rows_updated": float(num_rows), "train/logprob_gap": stats.get("train/logprob_gap")}
    for node_id in node_ids:
        prefix = f"node/{node_id}/"
        tokens, rows = stats.get(prefix + "tokens"), stats.get(prefix + "rows")
        if not rows:
            continue
        for key, name in STAT_NAMES.items():
            if prefix + key + "_sum" in stats:
                out[prefix + name] = stats[prefix + key + "_sum"] / max(tokens, 1)
        mean = stats[prefix + "adv_sum"] / rows
        out[prefix + "adv_mean"] = mean
        out[prefix + "adv_std"] = max(stats[prefix + "adv_sq"] / rows - mean ** 2, 0.0) ** 0.5
        out[prefix + "ratio_max"] = stats[prefix + "ratio_max"]
        out[prefix + "grad_norm"] = stats.get(prefix + "grad_norm")
        if stats.get(prefix + "sampler_tokens"):
            out[prefix + "sampler_gap_mean"] = stats[prefix + "sampler_gap_sum"] / stats[prefix + "sampler_tokens"]
            out[prefix + "sampler_gap_max"] = stats[prefix + "sampler_gap_max"]
            out[prefix + "sampler_kl"] = stats[prefix + "sampler_kl_sum"] / stats[prefix + "sampler_tokens"]
    for name in ("entropy", "kl", "clip_frac", "sampler_kl"):
        values = [out[f"node/{n}/{name}"] for n in node_ids if f"node/{n}/{name}" in out]
        if values:
            out[f"train/{name}"] = sum(values) / len(values)
    return out
