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


ADVANTAGES = {"rloo": rloo_advantages, "grpo": grpo_advantages}


def token_weights(node_index: torch.Tensor, mask: torch.Tensor, num_tokens_per_node: torch.Tensor) -> torch.Tensor:
    """Per-token weights that average each node's term over its tokens and sum over nodes.

    node_index: [B] int, the node of each row; mask: [B, T]; num_tokens_per_node: [N], the
    node's token count over the *whole* batch (not the micro-batch), so micro-batches add up
    exactly. Returns [B, T]: mask / num_tokens_per_node[node].
    """
    return mask / num_tokens_per_node[node_index].clamp(min=1).unsqueeze(1).to(mask.dtype)


def policy_gradient_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                         weights: torch.Tensor) -> torch.Tensor:
    """Plain policy gradient in importance-ratio form: sum(-A * exp(logp - logp_old) * w).

    logprobs: [B, T] (with grad), old_logprobs: [B, T] from sampling, advantages: [B],
    weights: [B, T] (zero on padding). On-policy the ratio is 1, so the gradient is
    -A * grad(logp) per token, as in REINFORCE; the ratio form extends to clipped losses.
    """
    ratio = torch.exp(logprobs - old_logprobs.detach())
    return -(advantages.unsqueeze(1) * ratio * weights).sum()


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(policy || reference) per token: exp(d) - d - 1 with d = ref - logp.

    Non-negative, unbiased, low variance (Schulman, "Approximating KL divergence"). [B, T] -> [B, T].
    """
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) at `tokens`, without materialising the full log-softmax.

    logits: [B, T, V] (any float dtype; computed in fp32), tokens: [B, T] -> [B, T] fp32.
    """
    logits = logits.float() / temperature
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)
