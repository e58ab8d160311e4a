"""The textual backward pass (neuromas.textual): parsing and format checks, the validation gate
(a worse edit rolled back, a better one kept), momentum, bandwidth, aggregation edits, the
optimiser models, and training runs that interleave it or run it alone."""

import json

import pytest
import torch

from conftest import tiny_overrides
from neuromas.agents import adapter_states
from neuromas.config import ModelConfig, PromptsConfig, RolloutConfig, TaskConfig, TextualConfig, TopologyConfig
from neuromas.errors import ConfigError
from neuromas.prompts import PromptBuilder
from neuromas.recipe import load_config
from neuromas.rollout import RolloutEngine
from neuromas.system import System
from neuromas.tasks import build_task
from neuromas.textual import Critic, TextualOptimizer, parse_aggregation, parse_text
from neuromas.topology import Topology
from neuromas.trainer import Trainer
from test_agents import make_agents
from test_trainer import RECIPE, VARYING_REWARD


def test_parse_text_and_its_format_check():
    assert parse_text("Sure.\nNEW TEXT: Add the numbers first.\nmore", "", 100) == ("Add the numbers first.", "")
    assert parse_text("no marker", "", 100) == (None, "no NEW TEXT: line")
    assert parse_text("NEW TEXT:   ", "", 100) == (None, "empty")
    assert parse_text("NEW TEXT: " + "x" * 20, "", 10) == (None, "longer than 10 characters")
    assert parse_text("NEW TEXT: same", "same", 100) == (None, "unchanged")


def test_parse_aggregation_names_a_valid_layer_edit():
    t = Topology.from_config(TopologyConfig(widths=[3, 1]))
    assert parse_aggregation("... LAYER 0: vote", t) == (["vote", "concat"], "")
    assert parse_aggregation("nothing to change", t) == (None, "")
    assert parse_aggregation("LAYER 1: vote", t)[0] == ["concat", "vote"]  # one sink may vote on itself
    assert parse_aggregation("LAYER 5: vote", t)[0] is None and parse_aggregation("LAYER 0: mean", t)[0] is None
    assert parse_aggregation("LAYER 0: concat", t) == (None, "unchanged")


class ScriptedCritic:
    """Replies by call: the global critique, then one local critique and one edit per node."""

    def __init__(self, edits: dict[str, str], global_reply: str = "The sum was wrong."):
        self.edits, self.global_reply, self.calls = edits, global_reply, []

    def write(self, agents, chats, max_new_tokens, prefix=""):
        self.calls.append([chat[-1]["content"] for chat in chats])
        kind = len(self.calls) % 3
        if kind == 1:
            return [self.global_reply]
        if kind == 2:
            return [f"critique {len(self.calls) // 3} of {c.split()[1]}" for c in self.calls[-1]]
        return [self.edits.get(c.split()[4].rstrip(":"), "no edit") for c in self.calls[-1]]


@pytest.fixture(scope="module")
def rollout(tiny_model_dir):
    topology = Topology.from_config(TopologyConfig(widths=[2, 1]))
    system = System(make_agents(tiny_model_dir, nodes=topology.node_ids), topology)
    engine = RolloutEngine(RolloutConfig(max_new_tokens=4), PromptBuilder(PromptsConfig(), "Box it."))
    episodes = engine.run(system, build_task(TaskConfig()).train_batch(0, 2), samples_per_question=2)
    return engine, system, episodes, torch.tensor([0.0, 1.0, 0.0, 0.0])


def optimizer(critic, **cfg) -> TextualOptimizer:
    out = TextualOptimizer(TextualConfig(every=1, **cfg), ModelConfig())
    out.critic = critic
    return out


def scored(system) -> float:
    text = system.texts.get("L0N0", "")
    return 0.6 if "better" in text else 0.3 if "worse" in text else 0.5


def test_a_better_edit_is_committed_and_the_next_rollout_reads_it(rollout):
    engine, system, episodes, rewards = rollout
    new, metrics, record = optimizer(ScriptedCritic({"L0N0": "NEW TEXT: better"})).step(system, episodes, rewards,
                                                                                         scored)
    assert record["decision"] == "commit" and new.texts == {"L0N0": "better"} and system.texts == {}
    assert (metrics["textual/validation_before"], metrics["textual/validation_after"]) == (0.5, 0.6)
    assert metrics["textual/committed"] == 1.0 and metrics["textual/format_ok"] == pytest.approx(1 / 3)
    again = engine.run(new, build_task(TaskConfig()).train_batch(1, 1), samples_per_question=1)
    prompt = new.agents.tokenizer.decode(again.of_node("L0N0")[0].prompt_ids)
    assert "Instruction for this node: better" in prompt  # the edit is in the next rollout's prompts


def test_a_worse_or_equal_edit_is_rolled_back(rollout):
    _, system, episodes, rewards = rollout
    new, _, record = optimizer(ScriptedCritic({"L0N0": "NEW TEXT: worse"})).step(system, episodes, rewards, scored)
    assert record["decision"] == "roll back" and new is system and record["validation_after"] == 0.3
    same, _, record = optimizer(ScriptedCritic({"L0N1": "NEW TEXT: other"})).step(system, episodes, rewards, scored)
    assert record["decision"] == "roll back" and same is system  # 0.5 -> 0.5: not an improvement
    kept, _, _ = optimizer(ScriptedCritic({"L0N0": "NEW TEXT: better"}), margin=0.2).step(system, episodes, rewards,
                                                                                          scored)
    assert kept is system  # +0.1 is within the margin


def test_a_malformed_proposal_is_never_evaluated(rollout):
    _, system, episodes, rewards = rollout
    calls = []
    new, _, record = optimizer(ScriptedCritic({})).step(system, episodes, rewards,
                                                        lambda s: calls.append(s) or 0.5)
    assert record["decision"] == "no valid edit" and new is system and calls == [system]
    assert {p["problem"] for p in record["proposals"]} == {"no NEW TEXT: line"}


def test_momentum_keeps_a_bounded_history_and_carries_it_into_the_next_edit(rollout):
    _, system, episodes, rewards = rollout
    critic = ScriptedCritic({})
    opt = optimizer(critic, history=2, alpha=0.6)
    for _ in range(3):
        opt.step(system, episodes, rewards, scored)
    assert opt.history["L0N0"] == ["critique 1 of L0N0", "critique 2 of L0N0"]  # the first has fallen out
    last_edit = next(c for c in critic.calls[-1] if "node L0N0" in c)
    assert "Critique now (weight 0.6): critique 2 of L0N0" in last_edit
    assert "weight 0.4, newest first):\n- critique 1 of L0N0\n- critique 0 of L0N0" in last_edit
    opt.renamed({"L0N0": "L1N0"})
    assert set(opt.history) == {"L1N0"}
    restored = optimizer(critic)
    restored.load_state(json.loads(json.dumps(opt.state())))
    assert restored.history == opt.history


def test_the_global_critique_reaches_each_local_one_with_beta(rollout):
    _, system, episodes, rewards = rollout
    critic = ScriptedCritic({}, global_reply="Layer 1 ignored the task.")
    optimizer(critic, beta=0.25).step(system, episodes, rewards, scored)
    assert "Score: 0" in critic.calls[0][0] and "Score: 1" in critic.calls[0][0]  # failing and passing episodes
    assert all("(weight 0.25): Layer 1 ignored the task." in c and "weight 0.75" in c for c in critic.calls[1])


def test_bandwidth_edits_only_the_top_k_connected_nodes(rollout):
    _, system, episodes, rewards = rollout
    critic = ScriptedCritic({})
    optimizer(critic, top_k=2).step(system, episodes, rewards, scored, weights={"L0N0": 0.2, "L0N1": 0.8,
                                                                                 "L1N0": 1.0})
    assert [c.split()[1] for c in critic.calls[1]] == ["L0N1", "L1N0"]


def test_an_aggregation_edit_is_gated_like_a_text_edit(rollout):
    _, system, episodes, rewards = rollout
    critic = ScriptedCritic({}, global_reply="Too much noise. LAYER 0: select:shortest")
    opt = optimizer(critic, edit="text+aggregation")
    new, _, record = opt.step(system, episodes, rewards, lambda s: 0.7 if s.topology.combines(0) else 0.5)
    assert record["decision"] == "commit" and new.topology.aggregation == ["select:shortest", "concat"]
    assert "LAYER <n>: <kind>" in critic.calls[0][0]


def test_the_base_critic_writes_with_the_adapters_off_and_another_model_loads(tiny_model_dir):
    agents = make_agents(tiny_model_dir, nodes=["L0N0"])
    seen, real = [], agents.generate
    agents.generate = lambda prompts, node_ids, *a, **k: seen.append(list(node_ids)) or real(prompts, node_ids, *a,
                                                                                             **k)
    chats = [[{"role": "user", "content": "Say something."}]] * 2
    assert len(Critic("base", ModelConfig()).write(agents, chats, 4)) == 2 and seen == [["__base__"] * 2]
    prefixed = Critic("base", ModelConfig()).write(agents, chats, 3, prefix="NEW TEXT:")
    assert all(r.startswith("NEW TEXT:") for r in prefixed)  # the reply continues the marker
    other = Critic(str(tiny_model_dir), ModelConfig(dtype="float32"))
    assert all(isinstance(r, str) for r in other.write(agents, chats, 4)) and len(seen) == 2  # not on these agents


def textual_overrides(tiny_model_dir, tmp_path, **extra):
    return tiny_overrides(tiny_model_dir, tmp_path / "run", **{"textual.validation_questions": 2,
                                                               "textual.max_new_tokens": 6, "checkpoint.every": 1,
                                                               **extra}) + [VARYING_REWARD]


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_interleaved_textual_steps_log_their_decisions_and_resume(tiny_model_dir, tmp_path, monkeypatch):
    overrides = textual_overrides(tiny_model_dir, tmp_path, **{"textual.every": 1, "textual.top_k": 2})
    trainer = Trainer(load_config(RECIPE, overrides), tmp_path / "run")
    history = trainer.fit()
    trainer.close()
    records = [json.loads(line) for line in (tmp_path / "run" / "textual.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and len(records[0]["proposals"]) == 2  # top_k nodes only
    assert all(r["decision"] in ("commit", "roll back", "no valid edit") for r in records)
    assert all("textual/validation_before" in m and "train/loss" in m for m in history)
    resumed = Trainer(load_config(RECIPE, overrides), tmp_path / "run", resume=True)
    assert resumed.textual.history == trainer.textual.history and resumed.textual.history
    resumed.close()


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_text_alone_never_updates_the_adapters(tiny_model_dir, tmp_path):
    trainer = Trainer(load_config(RECIPE, textual_overrides(tiny_model_dir, tmp_path, **{"textual.only": "true"})),
                      tmp_path / "run")
    before = {n: {k: v.clone() for k, v in s.items()} for n, s in adapter_states(trainer.agents).items()}
    history = trainer.fit()
    trainer.close()
    after = adapter_states(trainer.agents)
    assert all(torch.equal(v, after[n][k]) for n, s in before.items() for k, v in s.items())
    assert len(history) == 2 and "train/loss" not in history[0] and "textual/committed" in history[0]


def test_textual_config_errors(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="textual.beta: must be in"):
        load_config(RECIPE, ["textual.beta=1.5"])
    with pytest.raises(ConfigError, match="textual.edit: 'prompts' is not one of"):
        load_config(RECIPE, ["textual.edit=prompts"])


def test_transcripts_show_the_texts_their_rollout_was_prompted_with(tiny_model_dir, tmp_path, monkeypatch):
    def commit_a_text(self, system, episodes, rewards, validate, weights=None):
        return system.with_texts({"L0N0": f"edited at {len(self.history) + 1}"}), {}, {
            "decision": "commit", "validation_before": 0.0, "validation_after": 1.0, "proposals": []}
    monkeypatch.setattr(TextualOptimizer, "step", commit_a_text)
    overrides = textual_overrides(tiny_model_dir, tmp_path, **{"textual.every": 1, "tracking.transcripts_every": 1})
    trainer = Trainer(load_config(RECIPE, overrides), tmp_path / "run")
    trainer.fit()
    trainer.close()
    rows = [json.loads(line) for line in (tmp_path / "run" / "transcripts.jsonl").read_text().splitlines()]
    assert [r["node_texts"] for r in rows if r["step"] == 1][0] == {}  # step 1 ran before any edit
    assert [r["node_texts"] for r in rows if r["step"] == 2][0] == {"L0N0": "edited at 1"}
    assert trainer.system.texts == {"L0N0": "edited at 1"}


def test_a_per_node_gate_keeps_the_good_edit_a_joint_gate_loses_beside_a_bad_one(rollout):
    _, system, episodes, rewards = rollout

    def score(s):
        return 0.5 + 0.1 * ("better" in s.texts.get("L0N0", "")) - 0.3 * ("worse" in s.texts.get("L0N1", ""))
    edits = {"L0N0": "NEW TEXT: better", "L0N1": "NEW TEXT: worse"}
    joint, _, record = optimizer(ScriptedCritic(edits)).step(system, episodes, rewards, score)
    assert joint is system and record["decision"] == "roll back" and record["validation_after"] == pytest.approx(0.3)
    calls = []
    per_node, _, record = optimizer(ScriptedCritic(edits), gate="per_node").step(
        system, episodes, rewards, lambda s: calls.append(s) or score(s))
    assert per_node.texts == {"L0N0": "better"} and record["decision"] == "commit" and len(calls) == 3
    by_node = {p["node_id"]: p["validation"] for p in record["proposals"]}
    assert by_node["L0N0"] == pytest.approx(0.6) and by_node["L0N1"] == pytest.approx(0.2) and by_node["L1N0"] is None
