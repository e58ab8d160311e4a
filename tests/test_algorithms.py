import math

import pytest
import torch

from neuromas.algorithms import (gather_logprobs, grpo_advantages, kl_k3, policy_gradient_loss, rloo_advantages,
                                 sampler_weights)


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


def test_node_weights_average_per_node():
    from neuromas.algorithms import loss_weights

    node_index = torch.tensor([0, 0, 1])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    weights = loss_weights("node", node_index, mask, {"node_tokens": torch.tensor([3.0, 4.0])})
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


def test_dr_grpo_and_reinforce_by_hand():
    from neuromas.algorithms import dr_grpo_advantages, reinforce_advantages, update_baseline

    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert torch.allclose(dr_grpo_advantages(rewards), torch.tensor([[0.5, -0.5, -0.5, 0.5]]))
    assert torch.allclose(reinforce_advantages(rewards, 0.25), torch.tensor([[0.75, -0.25, -0.25, 0.75]]))
    assert update_baseline(None, rewards, 0.9) == pytest.approx(0.5)
    assert update_baseline(0.2, rewards, 0.9) == pytest.approx(0.9 * 0.2 + 0.1 * 0.5)


def test_shape_rewards():
    from neuromas.algorithms import shape_rewards

    assert shape_rewards(torch.tensor([1.0, -3.0, 0.5]), scale=2.0, clip=1.5).tolist() == [1.5, -1.5, 1.0]


def test_loss_weights_for_each_aggregation():
    from neuromas.algorithms import loss_weights

    node_index = torch.tensor([0, 0, 1])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    totals = {"node_tokens": torch.tensor([3.0, 3.0]), "tokens": torch.tensor(6.0), "rows": torch.tensor(3.0)}
    assert torch.allclose(loss_weights("node", node_index, mask, totals), mask / 3)
    assert torch.allclose(loss_weights("token", node_index, mask, totals), mask / 6)
    expected = torch.tensor([[1 / 6, 1 / 6, 0], [1 / 3, 0, 0], [1 / 9, 1 / 9, 1 / 9]])
    assert torch.allclose(loss_weights("sequence", node_index, mask, totals), expected)


def test_clipped_loss_equals_plain_at_ratio_one():
    from neuromas.algorithms import clipped_surrogate_loss

    logprobs = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    old = logprobs.detach().clone()
    adv, weights = torch.tensor([2.0, -1.0]), torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    clipped = clipped_surrogate_loss(logprobs, old, adv, weights, 0.2, 0.2)
    clipped.backward()
    clipped_grad = logprobs.grad.clone()
    logprobs.grad = None
    plain = policy_gradient_loss(logprobs, old, adv, weights)
    plain.backward()
    assert clipped.item() == pytest.approx(plain.item()) and torch.allclose(clipped_grad, logprobs.grad)


@pytest.mark.parametrize("log_ratio, adv, grad_is_zero", [
    (math.log(1.5), 1.0, True),    # above 1 + 0.2 with A > 0: clipped
    (math.log(1.5), -1.0, False),  # above the range but A < 0: the unclipped term is the min
    (math.log(0.5), -1.0, True),   # below 1 - 0.2 with A < 0: clipped
    (math.log(0.5), 1.0, False),
    (math.log(1.25), 1.0, False),  # inside the asymmetric range (clip_high 0.28)
])
def test_clipped_gradients_vanish_outside_the_range(log_ratio, adv, grad_is_zero):
    from neuromas.algorithms import clipped_surrogate_loss, clipped_tokens

    logprobs = torch.tensor([[log_ratio]], requires_grad=True)
    old, advantages = torch.zeros(1, 1), torch.tensor([adv])
    high = 0.28 if log_ratio == math.log(1.25) else 0.2
    clipped_surrogate_loss(logprobs, old, advantages, torch.ones(1, 1), 0.2, high).backward()
    assert (logprobs.grad.abs().item() == 0) == grad_is_zero
    assert clipped_tokens(logprobs.detach(), old, advantages, 0.2, high).item() == grad_is_zero


def test_kl_k1_and_entropy():
    from neuromas.algorithms import kl_k1, token_entropy

    assert torch.allclose(kl_k1(torch.tensor([[-1.0]]), torch.tensor([[-1.5]])), torch.tensor([[0.5]]))
    uniform = torch.zeros(1, 2, 8)
    assert torch.allclose(token_entropy(uniform), torch.full((1, 2), math.log(8)))
    peaked = torch.tensor([[[100.0, 0.0, 0.0]]])
    assert token_entropy(peaked).item() == pytest.approx(0.0, abs=1e-6)


def test_sampler_weights_truncate_and_mask_by_hand():
    train = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    sample = torch.log(torch.tensor([[1.0, 0.25, 4.0, 0.6]]))  # ratios 1, 4, 0.25, 1/0.6
    assert torch.equal(sampler_weights(train, sample, "none", 2.0), torch.ones(1, 4))
    assert torch.allclose(sampler_weights(train, sample, "truncate", 2.0), torch.tensor([[1.0, 2.0, 0.25, 1 / 0.6]]))
    assert torch.allclose(sampler_weights(train, sample, "mask", 2.0), torch.tensor([[1.0, 0.0, 0.0, 1 / 0.6]]))
    assert not sampler_weights(train.requires_grad_(True), sample, "truncate", 2.0).requires_grad
