import re

import pytest
import torch

from neuromas import credit
from neuromas.agents import Generation
from neuromas.config import AlgorithmConfig, AttributionSettings, BranchSettings, TaskConfig, TopologyConfig
from neuromas.errors import ConfigError
from neuromas.rollout import Branch, Episodes, Message
from neuromas.tasks import build_task
from neuromas.topology import Topology
from test_rollout import make_engine

NODES = ["L0N0", "L0N1", "L1N0"]


def fake_episodes(present: dict[str, list[int]], num_episodes: int, branches=()) -> Episodes:
    """Episodes with messages only where `present` says; token contents do not matter here."""
    one = torch.tensor([1])
    messages = [Message(e, node, one, one, torch.zeros(1), "", False, {}) for node, eps in present.items() for e in eps]
    return Episodes([None] * num_episodes, torch.zeros(num_episodes).long(), messages, ["L1N0"], [True] * num_episodes,
                    num_regular=num_episodes - sum(len(c) for _, _, c in branches), branches=list(branches))


def test_plan_branches_takes_nodes_in_turn():
    plan = credit.plan_branches(NODES, num_questions=2, samples_per_question=4, per_question=1, copies=3, step=0)
    assert plan == [Branch(0, "L0N0", 3), Branch(4, "L0N1", 3)]
    later = credit.plan_branches(NODES, 2, 4, 1, 3, step=1)
    assert [b.node_id for b in later] == ["L1N0", "L0N0"]


def test_shared_credit_gives_every_node_the_episode_advantage():
    episodes = fake_episodes({n: [0, 1, 2, 3] for n in NODES}, 4)
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    adv = credit.advantages(AlgorithmConfig(), episodes, rewards, NODES, 4)
    expected = torch.tensor([1 / 3, -1.0, 1 / 3, 1 / 3])  # RLOO by hand
    assert torch.allclose(adv, expected.unsqueeze(1).expand(4, 3))


def test_cutoff_penalty_charges_each_node_its_own_cut_off_messages():
    # One question, K = 4. L0N0 was cut off in episode 0, L1N0 in episodes 0 and 1; L0N1 is a gated
    # node absent from episodes 2-3, cut off in episode 0. Rewards are all 0: no signal from the task.
    one = torch.tensor([1])
    cut = {("L0N0", 0), ("L1N0", 0), ("L1N0", 1), ("L0N1", 0)}
    present = {"L0N0": [0, 1, 2, 3], "L0N1": [0, 1], "L1N0": [0, 1, 2, 3]}
    messages = [Message(e, n, one, one, torch.zeros(1), "", (n, e) in cut, {})
                for n, eps in present.items() for e in eps]
    episodes = Episodes([None] * 4, torch.zeros(4).long(), messages, ["L1N0"], [True] * 4, num_regular=4, branches=[])
    adv = credit.advantages(AlgorithmConfig(cutoff_penalty=0.5), episodes, torch.zeros(4), NODES, 4)
    # leave-one-out by hand: L0N0 cut = [1, 0, 0, 0] -> [1, -1/3, -1/3, -1/3]; L1N0 cut = [1, 1, 0, 0]
    # -> [2/3, 2/3, -2/3, -2/3]; L0N1 among the episodes it took part in: [1, 0] -> [1, -1], 0 where
    # absent; each times -0.5.
    assert torch.allclose(adv[:, 0], -0.5 * torch.tensor([1, -1 / 3, -1 / 3, -1 / 3]))
    assert torch.allclose(adv[:, 1], -0.5 * torch.tensor([1.0, -1.0, 0.0, 0.0]))
    assert torch.allclose(adv[:, 2], -0.5 * torch.tensor([2 / 3, 2 / 3, -2 / 3, -2 / 3]))
    # added to the task's advantage, which every node shares
    rewards = torch.tensor([0.0, 0.0, 1.0, 0.0])
    both = credit.advantages(AlgorithmConfig(cutoff_penalty=0.5), episodes, rewards, NODES, 4)
    task = credit.advantages(AlgorithmConfig(), episodes, rewards, NODES, 4)
    assert torch.allclose(both - task, adv)


def test_cutoff_penalty_is_refused_with_pure_branch_credit():
    with pytest.raises(ConfigError, match="cutoff_penalty"):
        AlgorithmConfig(credit="branch", cutoff_penalty=0.1)
    AlgorithmConfig(credit="branch", branch=BranchSettings(shared=True), cutoff_penalty=0.1)


def test_per_node_credit_uses_only_the_episodes_a_node_took_part_in():
    # L0N1 is a gated new node that took part in episodes 0 and 1 only.
    episodes = fake_episodes({"L0N0": [0, 1, 2, 3], "L0N1": [0, 1], "L1N0": [0, 1, 2, 3]}, 4)
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    adv = credit.advantages(AlgorithmConfig(credit="per_node", advantage="dr_grpo"), episodes, rewards, NODES, 4)
    assert torch.allclose(adv[:, 0], torch.tensor([0.25, -0.75, 0.25, 0.25]))
    assert torch.allclose(adv[:, 1], torch.tensor([0.5, -0.5, 0.0, 0.0]))  # its own mean over episodes 0-1


def test_branch_credit_is_leave_one_out_among_siblings():
    # Episode 0's node L0N1 was resampled twice (episodes 4 and 5).
    branches = [(0, "L0N1", [4, 5])]
    episodes = fake_episodes({"L0N0": [0, 1, 2, 3], "L0N1": [0, 1, 2, 3, 4, 5], "L1N0": [0, 1, 2, 3, 4, 5]}, 6,
                             branches)
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    adv = credit.advantages(AlgorithmConfig(credit="branch"), episodes, rewards, NODES, 4)
    column = torch.zeros(6)
    column[[0, 4, 5]] = torch.tensor([1 - 0.5, 0 - 1.0, 1 - 0.5])  # r - mean(other siblings)
    assert torch.allclose(adv[:, 1], column)
    assert not adv[:, [0, 2]].any()  # pure counterfactual: nothing else is trained
    shared = AlgorithmConfig(credit="branch", branch=BranchSettings(shared=True))
    mixed = credit.advantages(shared, episodes, rewards, NODES, 4)
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
    adv = credit.advantages(AlgorithmConfig(credit="branch"), episodes, rewards, NODES, k)
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
    ["algorithm.credit=branch", "algorithm.branch.samples=2"],
    ["algorithm.credit=per_node"],
    ["algorithm.loss=clip", "algorithm.epochs=2", "algorithm.loss_agg=token"],
    ["algorithm.advantage=reinforce", "algorithm.kl.coef=0.1", "algorithm.kl.applied_to=reward",
     "algorithm.kl.estimator=k1"],
    ["algorithm.advantage=dr_grpo", "algorithm.entropy_coef=0.01", "algorithm.loss_agg=sequence"],
    ["algorithm.credit=attribution", "algorithm.attribution.top_k=1"],
    ["algorithm.cutoff_penalty=0.5", "rollout.max_new_tokens=4"],  # most messages cut off
])
@pytest.mark.slow  # about 10 s or more on 2 cores
def test_every_mode_trains_from_a_recipe(tiny_model_dir, tmp_path, overrides):
    from test_trainer import make_trainer

    trainer = make_trainer(tiny_model_dir, tmp_path / "run", "rollout.samples_per_question=3", *overrides)
    metrics = trainer.train_step(1).metrics
    assert metrics["train/logprob_gap"] < 1e-4 and all(v == v for v in metrics.values())  # no NaN
    assert "node/L0N0/entropy" in metrics or metrics["train/rows_updated"] == 0
    mode = next((o.split("=")[1] for o in overrides if o.startswith("algorithm.credit=")), "shared")
    assert metrics["credit/mode"] == mode
    if "algorithm.credit=branch" in overrides:
        assert metrics["credit/branched_episodes"] == 2 * 2


def test_shares_normalise_with_top_k():
    assert credit.normalise_shares({"a": 3.0, "b": 1.0}, None) == {"a": 0.75, "b": 0.25}
    assert credit.normalise_shares({"a": 3.0, "b": 1.0, "c": 2.0}, 2) == {"a": 0.6, "b": 0.0, "c": 0.4}
    assert credit.normalise_shares({"a": 0.0, "b": 0.0}, None) == {"a": 0.5, "b": 0.5}


def test_attribution_weights_propagate_from_the_sink():
    shares = {"L2N0": {"L1N0": 0.75, "L1N1": 0.25},
              "L1N0": {"L0N0": 0.5, "L0N1": 0.5}, "L1N1": {"L0N0": 1.0, "L0N1": 0.0}}
    order = ["L0N0", "L0N1", "L1N0", "L1N1", "L2N0"]
    weights = credit.attribution_weights(["L2N0"], order, shares)
    assert weights == pytest.approx({"L2N0": 1.0, "L1N0": 0.75, "L1N1": 0.25, "L0N0": 0.625, "L0N1": 0.375})


def test_attribution_on_a_tiny_model(tiny_model_dir):
    from neuromas.config import PromptsConfig, RolloutConfig
    from neuromas.prompts import PromptBuilder
    from neuromas.rollout import RolloutEngine
    from neuromas.system import System
    from test_agents import make_agents

    edges = [["L0N0", "L1N0"], ["L0N1", "L1N0"], ["L0N1", "L2N0"], ["L1N0", "L2N0"]]
    topology = Topology.from_config(TopologyConfig(widths=[2, 1, 1], connectivity="edges", edges=edges))
    agents = make_agents(tiny_model_dir, nodes=topology.node_ids)
    engine = RolloutEngine(RolloutConfig(max_new_tokens=4), PromptBuilder(PromptsConfig(),
                                                                          "Put the final answer in \\boxed{}."))
    torch.manual_seed(0)
    episodes = engine.run(System(agents, topology), build_task(TaskConfig()).train_batch(0, 2), 2)
    for m in episodes.messages:  # each span decodes to the upstream message as rendered
        for src, (start, end) in m.input_spans.items():
            upstream = next(u for u in episodes.messages if u.episode == m.episode and u.node_id == src)
            assert agents.decode(m.prompt_ids[start:end]).strip() == (upstream.text.strip() or "(no text)")
    for agg in ("l1_mean", "l1_max", "grad_x_input"):
        alg = AlgorithmConfig(attribution=AttributionSettings(agg=agg))
        shares = credit.attribution_shares(agents, episodes, alg, 1.0, 3)
        for e in range(4):
            assert set(shares[e, "L2N0"]) == {"L0N1", "L1N0"}  # L0N0 is not in the sink's prompt: no share
            for reader in ("L1N0", "L2N0"):
                assert sum(shares[e, reader].values()) == pytest.approx(1.0)
                assert all(v > 0 for v in shares[e, reader].values())
    weights = credit.attribution_weights(["L2N0"], ["L0N0", "L0N1", "L1N0", "L2N0"],
                                         {n: shares[0, n] for n in ("L1N0", "L2N0")})
    assert weights["L0N0"] == pytest.approx(shares[0, "L2N0"]["L1N0"] * shares[0, "L1N0"]["L0N0"])


@pytest.mark.parametrize("objective", ["logprob", "squared_logits"])
def test_connection_weights_match_a_hand_computed_gradient(tiny_model_dir, objective):
    """Every salience variant, for each objective, against the gradient taken by hand on one
    unpadded row (the batch has a longer row, so the checked row is left-padded)."""
    from test_agents import make_agents

    agents = make_agents(tiny_model_dir, nodes=["L1N0"])
    torch.manual_seed(3)
    prompts = [torch.randint(5, 60, (12,)), torch.randint(5, 60, (20,))]
    completions = [torch.randint(5, 60, (4,)), torch.randint(5, 60, (6,))]
    spans = [{"L0N0": (2, 6), "L0N1": (7, 11)}, {"L0N0": (1, 3)}]
    prompt, completion, temperature = prompts[0], completions[0], 0.7
    ids = torch.cat([prompt, completion]).unsqueeze(0)
    emb = agents.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = agents.model(inputs_embeds=emb, adapter_names=["L1N0"]).logits[0, len(prompt) - 1:-1]
    if objective == "squared_logits":
        target = logits.gather(-1, completion.unsqueeze(-1)).pow(2).sum()
    else:
        target = torch.log_softmax(logits / temperature, -1).gather(-1, completion.unsqueeze(-1)).sum()
    (grad,) = torch.autograd.grad(target, emb)
    for agg in ("l1_mean", "l1_max", "grad_x_input", "grad_x_input_signed"):
        got = agents.input_salience(prompts, completions, ["L1N0", "L1N0"], spans, agg, temperature, objective)[0]
        for src, (start, end) in spans[0].items():
            g, x = grad[0, start:end], emb.detach()[0, start:end]
            by_hand = {"l1_mean": g.abs().sum(-1).mean(), "l1_max": g.abs().sum(-1).max(),
                       "grad_x_input": (g * x).sum(-1).abs().mean(), "grad_x_input_signed": (g * x).sum(-1).mean()}
            assert got[src] == pytest.approx(float(by_hand[agg]), rel=1e-4, abs=1e-9), (agg, src)
    signed = agents.input_salience(prompts, completions, ["L1N0"] * 2, spans, "grad_x_input_signed", temperature,
                                   objective)[0]
    absolute = agents.input_salience(prompts, completions, ["L1N0"] * 2, spans, "grad_x_input", temperature,
                                     objective)[0]
    assert all(abs(signed[s]) <= absolute[s] + 1e-9 for s in signed)


def test_a_negative_connection_weight_gets_no_share():
    assert credit.normalise_shares({"a": -2.0, "b": 1.0, "c": 3.0}, None) == {"a": 0.0, "b": 0.25, "c": 0.75}
    assert credit.normalise_shares({"a": -2.0, "b": -1.0}, None) == {"a": 0.5, "b": 0.5}
