"""Policy-gradient algorithms as pure tensor functions (tensors in, tensors out).

Shapes: G question groups of K samples each; B rows (one node's message in one episode);
T completion tokens (padded; `mask` marks real tokens).
"""

from __future__ import annotations

import torch


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out: each sample's baseline is the mean reward of the *other* samples.

    rewards: [G, K] (K >= 2) -> advantages [G, K]. Equal to K/(K-1) * (r - mean(r)).
    """
    assert rewards.dim() == 2 and rewards.shape[1] >= 2, "RLOO needs K >= 2 samples per question"
    k = rewards.shape[1]
    others_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)
    return rewards - others_mean


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO: (r - group mean) / (group std + eps), std unbiased. rewards: [G, K] -> [G, K]."""
    assert rewards.dim() == 2 and rewards.shape[1] >= 2, "GRPO needs K >= 2 samples per question"
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + eps)


def dr_grpo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Dr. GRPO: r - group mean, no std normalisation (pair with token-level aggregation,
    i.e. no per-sequence length normalisation). rewards: [G, K] -> [G, K]."""
    return rewards - rewards.mean(dim=1, keepdim=True)


def reinforce_advantages(rewards: torch.Tensor, baseline: float) -> torch.Tensor:
    """REINFORCE with a moving-average baseline: r - b. rewards: [G, K] -> [G, K]."""
    return rewards - baseline


def update_baseline(baseline: float | None, rewards: torch.Tensor, decay: float) -> float:
    """Exponential moving average of the mean reward; starts at the first batch's mean."""
    mean = float(rewards.mean())
    return mean if baseline is None else decay * baseline + (1 - decay) * mean


ADVANTAGES = {"rloo": rloo_advantages, "grpo": grpo_advantages, "dr_grpo": dr_grpo_advantages}


def shape_rewards(rewards: torch.Tensor, scale: float = 1.0, clip: float | None = None) -> torch.Tensor:
    """Scale, then clip to [-clip, clip]. Any shape."""
    rewards = rewards * scale
    return rewards.clamp(-clip, clip) if clip is not None else rewards


def loss_weights(mode: str, node_index: torch.Tensor, mask: torch.Tensor,
                 totals: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-token weights [B, T] of the loss sum, for one micro-batch of a larger batch.

    node_index: [B] the node of each row; mask: [B, T]. `totals` are whole-batch counts (so
    micro-batches add up exactly): "node_tokens" [N], "tokens" [], "node_rows" [N], "rows" [].
      node:     each node's tokens averaged, then summed over nodes (the default)
      token:    one mean over every token of every node (DAPO / Dr. GRPO)
      sequence: each row's tokens averaged, then rows averaged (original GRPO)
    """
    if mode == "node":
        return mask / totals["node_tokens"][node_index].clamp(min=1).unsqueeze(1)
    if mode == "token":
        return mask / totals["tokens"].clamp(min=1)
    if mode == "sequence":
        return mask / mask.sum(dim=1, keepdim=True).clamp(min=1) / totals["rows"].clamp(min=1)
    raise AssertionError(mode)


def clipped_surrogate_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                           weights: torch.Tensor, clip_low: float, clip_high: float) -> torch.Tensor:
    """PPO's clipped surrogate: sum(-min(r * A, clip(r, 1 - lo, 1 + hi) * A) * w), r = exp(logp - old).

    logprobs, old_logprobs, weights: [B, T]; advantages: [B]. Equals `policy_gradient_loss`
    while r stays in the clip range; outside it (in the direction A pushes) the gradient is 0.
    """
    ratio = torch.exp(logprobs - old_logprobs.detach())
    adv = advantages.unsqueeze(1)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_low, 1 + clip_high) * adv)
    return -(surrogate * weights).sum()


def clipped_tokens(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                   clip_low: float, clip_high: float) -> torch.Tensor:
    """[B, T] bool: tokens whose clipped term is active (their gradient is zero)."""
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.unsqueeze(1)
    return ((ratio > 1 + clip_high) & (adv > 0)) | ((ratio < 1 - clip_low) & (adv < 0))



def policy_gradient_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                         weights: torch.Tensor) -> torch.Tensor:
    """Plain policy gradient in importance-ratio form: sum(-A * exp(logp - logp_old) * w).

    logprobs: [B, T] (with grad), old_logprobs: [B, T] from sampling, advantages: [B],
    weights: [B, T] (zero on padding). On-policy the ratio is 1, so the gradient is
    -A * grad(logp) per token, as in REINFORCE; the ratio form extends to clipped losses.
    """
    ratio = torch.exp(logprobs - old_logprobs.detach())
    return -(advantages.unsqueeze(1) * ratio * weights).sum()


def sampler_weights(train_logprobs: torch.Tensor, sample_logprobs: torch.Tensor, mode: str,
                    cap: float) -> torch.Tensor:
    """Per-token importance weights p_train / p_sample for samples drawn by another engine.

    [B, T] -> [B, T], detached. truncate: min(ratio, cap) (truncated importance sampling);
    mask: the ratio where 1/cap <= ratio <= cap, else 0 (the token leaves the loss); none: 1.
    """
    if mode == "none":
        return torch.ones_like(train_logprobs)
    ratio = torch.exp(train_logprobs.detach() - sample_logprobs.detach())
    if mode == "truncate":
        return ratio.clamp(max=cap)
    return torch.where((ratio <= cap) & (ratio >= 1 / cap), ratio, torch.zeros_like(ratio))


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(policy || reference) per token: exp(d) - d - 1 with d = ref - logp.

    Non-negative, unbiased, low variance (Schulman, "Approximating KL divergence"). [B, T] -> [B, T].
    """
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k1 estimator of KL(policy || reference) per token: logp - ref (unbiased, can be < 0). [B, T]."""
    return logprobs - ref_logprobs


KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}


def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) per position. [B, T, V] -> [B, T] fp32, one row
    at a time: a full fp32 copy of [B, T, V] at a 150k vocabulary is gigabytes."""
    def row_entropy(row: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(row.float() / temperature, dim=-1)
        return -(logp.exp() * logp).sum(dim=-1)
    return torch.stack([row_entropy(row) for row in logits])


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) at `tokens`, without materialising the full log-softmax.

    logits: [B, T, V] (any float dtype; computed in fp32, one row at a time), tokens: [B, T] -> [B, T] fp32.
    """
    def row_logprobs(row: torch.Tensor, row_tokens: torch.Tensor) -> torch.Tensor:
        row = row.float() / temperature
        return row.gather(-1, row_tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row, dim=-1)
    return torch.stack([row_logprobs(row, row_tokens) for row, row_tokens in zip(logits, tokens)])
