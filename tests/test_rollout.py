import pytest
import torch

from neuromas.config import PromptsConfig, RolloutConfig, TaskConfig, TopologyConfig
from neuromas.prompts import PromptBuilder
from neuromas.rollout import RolloutEngine
from neuromas.system import System
from neuromas.tasks import build_task
from neuromas.topology import Topology
from test_agents import make_agents


class Bound:
    """An engine bound to one system, as the tests run it: ``bound.run(questions, k)``."""

    def __init__(self, engine: RolloutEngine, system: System):
        self.engine, self.system, self.agents, self.topology = engine, system, system.agents, system.topology
        self.cfg = engine.cfg

    def run(self, *args, **kwargs):
        return self.engine.run(self.system, *args, **kwargs)


def make_engine(model_dir, widths=(2, 2, 1), micro_batch_size=64):
    topology = Topology.from_config(TopologyConfig(widths=list(widths)))
    agents = make_agents(model_dir, nodes=topology.node_ids)
    prompts = PromptBuilder(PromptsConfig(), "Put the final answer in \\boxed{}.")
    cfg = RolloutConfig(max_new_tokens=5, micro_batch_size=micro_batch_size)
    return Bound(RolloutEngine(cfg, prompts), System(agents, topology)), build_task(TaskConfig())


def spy_generate(agents):
    calls = []
    real = agents.generate

    def spy(prompts, node_ids, *args, **kwargs):
        calls.append(list(node_ids))
        return real(prompts, node_ids, *args, **kwargs)
    agents.generate = spy
    return calls


def test_one_generate_call_per_layer_with_each_rows_adapter(tiny_model_dir):
    engine, task = make_engine(tiny_model_dir)
    calls = spy_generate(engine.agents)
    episodes = engine.run(task.train_batch(0, 2), samples_per_question=3)
    assert len(calls) == 3  # one per layer
    assert sorted(set(calls[0])) == ["L0N0", "L0N1"] and len(calls[0]) == 2 * 6
    assert set(calls[2]) == {"L2N0"} and len(calls[2]) == 6
    assert episodes.num_episodes == 6 and len(episodes.messages) == 6 * 5
    assert episodes.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    for (node_ids, layer) in zip(calls, engine.topology.layers):
        rows = [m for m in episodes.messages if m.node_id in {n.id for n in layer}]
        assert node_ids == [m.node_id for m in rows]


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_micro_batches_bound_each_generate_call(tiny_model_dir):
    engine, task = make_engine(tiny_model_dir, micro_batch_size=4)
    calls = spy_generate(engine.agents)
    engine.run(task.train_batch(0, 1), samples_per_question=5)
    assert [len(c) for c in calls] == [4, 4, 2, 4, 4, 2, 4, 1]


def test_messages_feed_the_next_layer_and_keep_token_ids(tiny_model_dir):
    engine, task = make_engine(tiny_model_dir)
    episodes = engine.run(task.train_batch(0, 2), samples_per_question=2)
    texts = {(m.episode, m.node_id): m.text for m in episodes.messages}
    for m in episodes.messages:
        assert m.logprobs.shape == m.completion_ids.shape and m.logprobs.dtype == torch.float32
        assert (m.logprobs <= 0).all()
        assert engine.agents.decode(m.completion_ids) == m.text
        prompt = engine.agents.decode(m.prompt_ids)
        assert episodes.samples[m.episode].question in prompt
        for src in engine.topology.predecessors(m.node_id):
            assert texts[m.episode, src].strip() in prompt
    assert episodes.answers() == [texts[e, "L2N0"] for e in range(4)]
    assert [n for n, _ in episodes.transcript(1)] == ["L0N0", "L0N1", "L1N0", "L1N1", "L2N0"]


def test_greedy_rollouts_are_deterministic(tiny_model_dir):
    engine, task = make_engine(tiny_model_dir, widths=(2, 1))
    a = engine.run(task.test[:3], samples_per_question=1, greedy=True)
    b = engine.run(task.test[:3], samples_per_question=1, greedy=True)
    assert [m.text for m in a.messages] == [m.text for m in b.messages]
    assert all(m.logprobs is None for m in a.messages)


def test_the_answering_node_can_have_its_own_token_limit(tiny_model_dir):
    engine, task = make_engine(tiny_model_dir, widths=(2, 1))
    engine.cfg.max_new_tokens, engine.cfg.answer_max_new_tokens = 2, 7
    calls = []
    real = engine.agents.generate
    engine.agents.generate = lambda prompts, nodes, max_new_tokens, *a, **k: (
        calls.append((sorted(set(nodes)), max_new_tokens)) or real(prompts, nodes, max_new_tokens, *a, **k))
    episodes = engine.run(task.train_batch(0, 2), samples_per_question=2)
    assert calls == [(["L0N0", "L0N1"], 2), (["L1N0"], 7)]
    assert max(len(m.completion_ids) for m in episodes.messages if m.node_id != "L1N0") <= 2


def test_a_rollout_plan_is_decided_without_a_model():
    from neuromas.rollout import Branch, plan_rollout
    from neuromas.tasks import Sample

    topology = Topology.from_config(TopologyConfig(widths=[2, 2, 1]))
    questions = [Sample(id=f"q{i}", question=f"Q{i}", answer="1") for i in range(2)]
    plan = plan_rollout(topology, frozenset({"L0N1"}), questions, 3, gate=0.0, branches=[Branch(4, "L1N0", 2)])
    assert plan.num_regular == 6 and plan.num_episodes == 8 and plan.full == [False] * 8  # gate closed
    assert plan.source[6:] == [4, 4] and plan.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert plan.branches == [(4, "L1N0", [6, 7])]
    assert not plan.runs(0, "L0N1") and plan.runs(0, "L0N0")  # the gated node sits out
    assert plan.runs(6, "L1N0") and plan.runs(6, "L2N0") and not plan.runs(6, "L0N0")  # a copy re-runs downstream
    gated_branch = plan_rollout(topology, frozenset({"L0N1"}), questions, 3, gate=0.0, branches=[Branch(0, "L0N1", 2)])
    assert gated_branch.num_episodes == 6 and gated_branch.branches == []  # nothing to resample
    assert all(plan_rollout(topology, frozenset({"L0N1"}), questions, 3, gate=1.0).full)
