import re

import pytest
import torch

from neuromas import credit
from neuromas.agents import Generation
from neuromas.config import AlgorithmConfig, TaskConfig, TopologyConfig
from neuromas.rollout import Branch, Episodes, Message
from neuromas.tasks import build_task
from neuromas.topology import Topology
from test_rollout import make_engine

NODES = ["L0N0", "L0N1", "L1N0"]


def fake_episodes(present: dict[str, list[int]], num_episodes: int, branches=()) -> Episodes:
    """Episodes with messages only where `present` says; token contents do not matter here."""
    one = torch.tensor([1])
    messages = [Message(e, node, one, one, torch.zeros(1), "", False) for node, eps in present.items() for e in eps]
    return Episodes([None] * num_episodes, torch.zeros(num_episodes).long(), messages, "L1N0", [True] * num_episodes,
                    num_regular=num_episodes - sum(len(c) for _, _, c in branches), branches=list(branches))


def test_plan_branches_takes_nodes_in_turn():
    plan = credit.plan_branches(NODES, num_questions=2, samples_per_question=4, per_question=1, copies=3, step=0)
    assert plan == [Branch(0, "L0N0", 3), Branch(4, "L0N1", 3)]
    later = credit.plan_branches(NODES, 2, 4, 1, 3, step=1)
    assert [b.node_id for b in later] == ["L1N0", "L0N0"]


def test_shared_credit_gives_every_node_the_episode_advantage():
    episodes = fake_episodes({n: [0, 1, 2, 3] for n in NODES}, 4)
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    adv = credit.advantages(AlgorithmConfig(), episodes, rewards, NODES, 4, credit.CreditState())
    expected = torch.tensor([1 / 3, -1.0, 1 / 3, 1 / 3])  # RLOO by hand
    assert torch.allclose(adv, expected.unsqueeze(1).expand(4, 3))


def test_per_node_credit_uses_only_the_episodes_a_node_took_part_in():
    # L0N1 is a gated new node that took part in episodes 0 and 1 only.
    episodes = fake_episodes({"L0N0": [0, 1, 2, 3], "L0N1": [0, 1], "L1N0": [0, 1, 2, 3]}, 4)
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    adv = credit.advantages(AlgorithmConfig(credit="per_node", advantage="dr_grpo"), episodes, rewards, NODES, 4,
                            credit.CreditState())
    assert torch.allclose(adv[:, 0], torch.tensor([0.25, -0.75, 0.25, 0.25]))
    assert torch.allclose(adv[:, 1], torch.tensor([0.5, -0.5, 0.0, 0.0]))  # its own mean over episodes 0-1


def test_branch_credit_is_leave_one_out_among_siblings():
    # Episode 0's node L0N1 was resampled twice (episodes 4 and 5).
    branches = [(0, "L0N1", [4, 5])]
    episodes = fake_episodes({"L0N0": [0, 1, 2, 3], "L0N1": [0, 1, 2, 3, 4, 5], "L1N0": [0, 1, 2, 3, 4, 5]}, 6,
                             branches)
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    adv = credit.advantages(AlgorithmConfig(credit="branch"), episodes, rewards, NODES, 4, credit.CreditState())
    column = torch.zeros(6)
    column[[0, 4, 5]] = torch.tensor([1 - 0.5, 0 - 1.0, 1 - 0.5])  # r - mean(other siblings)
    assert torch.allclose(adv[:, 1], column)
    assert not adv[:, [0, 2]].any()  # pure counterfactual: nothing else is trained
    mixed = credit.advantages(AlgorithmConfig(credit="branch", branch_shared=True), episodes, rewards, NODES, 4,
                              credit.CreditState())
    assert torch.allclose(mixed[:4, 0], torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))


def scripted_generate(agents):
    """L0N0 always writes 'same'; L0N1 writes random digits; the sink echoes L0N1's message."""
    def generate(prompts, node_ids, *args, **kwargs):
        out = []
        for prompt, node_id in zip(prompts, node_ids):
            if node_id == "L0N0":
                text = "same"
            elif node_id == "L0N1":
                text = str(int(torch.randint(0, 10 ** 6, ())))
            else:
                text = re.search(r"layer 1, node 2:\n(\S+)", agents.decode(prompt))[1]
            ids = torch.tensor(agents.tokenizer(text, add_special_tokens=False).input_ids)
            out.append(Generation(ids, torch.zeros(len(ids)), truncated=False))
        return out
    agents.generate = generate


def test_branch_credit_finds_the_only_node_that_matters(tiny_model_dir):
    engine, _ = make_engine(tiny_model_dir, widths=(2, 1))
    scripted_generate(engine.agents)
    task = build_task(TaskConfig(reward="helpers:last_digit_parity"))
    torch.manual_seed(0)
    questions, k = task.train_batch(0, 3), 2
    branches = [Branch(q * k, node, 6) for q in range(3) for node in NODES]  # every node of one episode per question
    episodes = engine.run(questions, k, branches=branches)
    assert episodes.num_episodes == 6 + 3 * 3 * 6
    rewards = task.score(episodes.answers(), episodes.samples)
    adv = credit.advantages(AlgorithmConfig(credit="branch"), episodes, rewards, NODES, k, credit.CreditState())
    branched = {node: adv[[e for s, n, c in episodes.branches if n == node for e in [s, *c]], NODES.index(node)]
                for node in NODES}
    assert branched["L0N1"].std() > 0.1
    assert branched["L0N0"].abs().max() == 0 and branched["L1N0"].abs().max() == 0


def test_branch_copies_share_upstream_messages(tiny_model_dir):
    engine, task = make_engine(tiny_model_dir, widths=(2, 2, 1))
    episodes = engine.run(task.train_batch(0, 1), 2, branches=[Branch(1, "L1N0", 2)])
    source, node, copies = episodes.branches[0]
    assert (source, node, copies) == (1, "L1N0", [2, 3])
    regenerated = sorted({m.node_id for m in episodes.messages if m.episode in copies})
    assert regenerated == ["L1N0", "L2N0"]  # the branched node and what reads it; L1N1 is held
    held = {m.node_id: m.text for m in episodes.messages if m.episode == source}
    sink_prompt = engine.agents.decode(next(m for m in episodes.messages if m.episode == 2 and m.node_id == "L2N0")
                                       .prompt_ids)
    assert held["L1N1"].strip() in sink_prompt


@pytest.mark.parametrize("overrides", [
    ["algorithm.credit=branch", "algorithm.branch_samples=2"],
    ["algorithm.credit=per_node"],
    ["algorithm.loss=clip", "algorithm.epochs=2", "algorithm.loss_agg=token"],
    ["algorithm.advantage=reinforce", "algorithm.kl_coef=0.1", "algorithm.kl_in=reward", "algorithm.kl_estimator=k1"],
    ["algorithm.advantage=dr_grpo", "algorithm.entropy_coef=0.01", "algorithm.loss_agg=sequence"],
])
def test_every_mode_trains_from_a_recipe(tiny_model_dir, tmp_path, overrides):
    from test_trainer import make_trainer

    trainer = make_trainer(tiny_model_dir, tmp_path / "run", "rollout.samples_per_question=3", *overrides)
    metrics = trainer.train_step(1)
    assert metrics["train/logprob_gap"] < 1e-4 and all(v == v for v in metrics.values())  # no NaN
    assert "node/L0N0/entropy" in metrics or metrics["train/rows_updated"] == 0
    if "algorithm.credit=branch" in overrides:
        assert metrics["credit/branched_episodes"] == 2 * 2
