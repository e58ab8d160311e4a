import math

import pytest
import torch

from neuromas.algorithms import (gather_logprobs, grpo_advantages, kl_k3, policy_gradient_loss, rloo_advantages,
                                 token_weights)


def test_rloo_by_hand():
    # group 1: [1, 0, 0, 1] -> baselines [1/3, 2/3, 2/3, 1/3]
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    expected = torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(rloo_advantages(rewards), expected)


def test_grpo_by_hand():
    # mean 0.5, unbiased std sqrt(1/3)
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    std = math.sqrt(1 / 3)
    expected = torch.tensor([[0.5, -0.5, -0.5, 0.5]]) / (std + 1e-6)
    assert torch.allclose(grpo_advantages(rewards), expected)
    assert torch.equal(grpo_advantages(torch.ones(1, 3)), torch.zeros(1, 3))


def test_token_weights_average_per_node():
    node_index = torch.tensor([0, 0, 1])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    weights = token_weights(node_index, mask, torch.tensor([3.0, 4.0]))
    assert torch.allclose(weights, torch.tensor([[1 / 3, 1 / 3, 0], [1 / 3, 0, 0], [1 / 4, 1 / 4, 1 / 4]]))


def test_policy_gradient_loss_value_and_gradient():
    logprobs = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    old = logprobs.detach().clone()
    advantages = torch.tensor([2.0, -1.0])
    weights = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    loss = policy_gradient_loss(logprobs, old, advantages, weights)
    # ratio 1: loss = -(2*0.5 + 2*0.5 + (-1)*1) = -1
    assert loss.item() == pytest.approx(-1.0)
    loss.backward()
    # d/dlogp of -A * exp(logp - old) * w at ratio 1 = -A * w
    assert torch.allclose(logprobs.grad, torch.tensor([[-1.0, -1.0], [1.0, 0.0]]))


def test_policy_gradient_ratio_weights_off_policy_tokens():
    logprobs = torch.tensor([[math.log(0.5)]], requires_grad=True)
    old = torch.tensor([[math.log(0.25)]])
    loss = policy_gradient_loss(logprobs, old, torch.tensor([1.0]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(-2.0)


def test_kl_k3_by_hand():
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]])
    ref = torch.tensor([[math.log(0.5), math.log(0.4)]])
    # d = ref - logp: 0 and log 2 -> exp(d) - d - 1: 0 and 1 - log 2
    assert torch.allclose(kl_k3(logp, ref), torch.tensor([[0.0, 1 - math.log(2)]]), atol=1e-6)


def test_gather_logprobs_equals_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 11)
    tokens = torch.randint(0, 11, (2, 3))
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(gather_logprobs(logits, tokens, 0.7), expected, atol=1e-6)
