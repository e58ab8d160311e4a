"""Per-layer aggregation (topology.aggregation): the pure combination rules, the topology and
prompt rules around them, and rollouts and training runs through combined layers."""

import json

import pytest
import torch

from conftest import tiny_overrides
from neuromas.aggregation import combine, parse_judge
from neuromas.config import PromptsConfig, RolloutConfig, TaskConfig, TopologyConfig
from neuromas.recipe import load_config
from neuromas.errors import ConfigError
from neuromas.pictures import draw_topology
from neuromas.prompts import PromptBuilder
from neuromas.rollout import RolloutEngine
from neuromas.system import System
from neuromas.tasks import build_task
from neuromas.tasks.votes import boxed_vote, choice_vote, code_vote, math_vote
from neuromas.topology import Topology
from neuromas.trainer import Trainer
from test_agents import make_agents
from test_trainer import RECIPE, VARYING_REWARD

BOXED = [("L0N0", "so \\boxed{4}"), ("L0N1", "it is \\boxed{5}"), ("L0N2", "\\boxed{4.0} I think"), ("L0N3", "no idea")]


# --- the rules, by hand ---

def test_vote_takes_the_majority_answer_in_answer_form():
    out = combine("vote", BOXED, boxed_vote)
    assert (out.text, out.source) == ("\\boxed{4}", "L0N0")  # 4 and 4.0 are one answer (two votes), 5 has one


def test_vote_ties_go_to_the_answer_given_first_and_silent_messages_do_not_vote():
    assert combine("vote", BOXED[1:3], boxed_vote).source == "L0N1"  # 5 vs 4.0, one each: the first
    assert combine("vote", [("L0N0", "nothing"), ("L0N1", "\\boxed{7}")], boxed_vote).source == "L0N1"
    none = combine("vote", [("L0N0", "nothing"), ("L0N1", "at all")], boxed_vote)
    assert (none.text, none.source) == ("", None)


@pytest.mark.parametrize("how, expected", [("select:majority", "L0N0"), ("select:shortest", "L0N3"),
                                           ("select:longest", "L0N2")])
def test_select_rules_return_one_whole_message(how, expected):
    out = combine(how, BOXED, boxed_vote)
    assert out.source == expected and out.text == dict(BOXED)[expected]


def test_select_judge_takes_the_judges_choice_and_falls_back_to_the_majority():
    assert combine("select:judge", BOXED, boxed_vote, judge_choice=1).source == "L0N1"
    assert combine("select:judge", BOXED, boxed_vote, judge_choice=None).source == "L0N0"
    assert combine("select:judge", BOXED, boxed_vote, judge_choice=9).source == "L0N0"
    assert parse_judge("Candidate 3.", 4) == 2 and parse_judge("7 then 2", 4) == 1 and parse_judge("none", 4) is None


def test_each_task_kind_votes_on_its_own_answers():
    assert math_vote("\\boxed{\\frac{1}{2}}")[0] == math_vote("the answer is 0.5")[0] == "1/2"
    assert choice_vote("The answer is (B).") == ("B", "\\boxed{B}")
    assert code_vote("```python\nx = 1\n```")[0] == code_vote("here:\n```python\nx = 1\n```\ndone")[0] == "x = 1"
    assert code_vote("no code") is None
    assert build_task(TaskConfig(name="lookup")).vote("\\boxed{Ada.}")[0] == "ada"


# --- topology, prompts, pictures ---

def topo(widths, aggregation=None, **kwargs) -> Topology:
    return Topology.from_config(TopologyConfig(widths=widths, aggregation=aggregation or {}, **kwargs))


def test_a_combined_last_layer_answers_and_negative_layers_count_from_the_end():
    t = topo([2, 3], {-1: "vote"})
    assert t.aggregation == ["concat", "vote"] and t.answer_ids == ["L1N0", "L1N1", "L1N2"]
    assert "layer 1 (vote)" in t.describe()
    assert Topology.from_dict(json.loads(json.dumps(t.to_dict()))).aggregation == ["concat", "vote"]
    assert topo([3, 2, 1], {0: "select:shortest"}).aggregation == ["select:shortest", "concat", "concat"]


@pytest.mark.parametrize("widths, aggregation, match", [
    ([2, 3], {}, "single sink node.*vote"),
    ([2, 1], {2: "vote"}, "layer 2 is not a layer"),
    ([2, 1], {-3: "vote"}, "layer -3 is not a layer"),
])
def test_topology_errors(widths, aggregation, match):
    with pytest.raises(ConfigError, match=match):
        topo(widths, aggregation)


def test_an_unknown_aggregation_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="topology.aggregation: 'mean' is not one of concat, vote"):
        load_config(RECIPE, ["topology.aggregation={0: mean}"])


def test_a_view_keeps_each_layers_aggregation():
    t = topo([2, 2, 3], {0: "vote", -1: "vote"})
    view, _ = t.view({"L0N0", "L2N0", "L2N1", "L2N2"})  # layer 1 gated out: its readers read layer 0
    assert view.widths == [1, 3] and view.aggregation == ["vote", "vote"]


def test_a_reader_of_a_combined_layer_reads_one_block_for_it():
    t = topo([2, 1, 1], {0: "vote"}, connectivity="skip")
    builder = PromptBuilder(PromptsConfig(), "Box it.")
    node = t.layers[2][0]
    blocks = builder.blocks(t, node, {"L1N0": "middle"}, {0: "\\boxed{4}"})
    assert [b.source for b in blocks] == ["L0", "L1N0"]
    user = builder.messages(t, node, "1+3?", {"L1N0": "middle"}, {0: "\\boxed{4}"})[1]["content"]
    assert "layer 1, its 2 nodes combined by vote:\n\\boxed{4}" in user and "node 1:\nmiddle" in user
    assert "node 1 of 2" not in user and "Message from layer 1, node" not in user


def test_the_picture_names_each_combined_layer(tmp_path):
    path = draw_topology(topo([3, 2], {0: "vote", -1: "select:judge"}), tmp_path / "t.png")
    assert path.stat().st_size > 1000


# --- rollouts on the tiny model ---

def first_word_vote(text):
    """A vote the random tiny model gives answers to: its first word."""
    words = text.split()
    return (words[0], words[0]) if words else None


def make_engine(model_dir, widths, aggregation, vote=first_word_vote):
    topology = topo(widths, aggregation)
    agents = make_agents(model_dir, nodes=topology.node_ids)
    prompts = PromptBuilder(PromptsConfig(), "Put the final answer in \\boxed{}.")
    engine = RolloutEngine(RolloutConfig(max_new_tokens=5, temperature=2.0), prompts, vote=vote)
    return engine, System(agents, topology), build_task(TaskConfig())


def test_a_voting_last_layer_answers_with_its_vote(tiny_model_dir):
    engine, system, task = make_engine(tiny_model_dir, [3], {-1: "vote"})
    torch.manual_seed(0)
    episodes = engine.run(system, task.train_batch(0, 2), samples_per_question=3)
    for e, answer in enumerate(episodes.answers()):
        messages = [(m.node_id, m.text) for m in episodes.messages if m.episode == e]
        assert answer == combine("vote", messages, first_word_vote).text
        assert episodes.transcript(e)[-1] == ("L0 combined", answer)
    assert len({m.text for m in episodes.messages}) > 3  # the messages differ, so the vote decides something


def test_readers_read_the_selection_and_credit_its_span_to_the_chosen_node(tiny_model_dir):
    engine, system, task = make_engine(tiny_model_dir, [2, 1], {0: "select:longest"})
    torch.manual_seed(1)
    episodes = engine.run(system, task.train_batch(0, 2), samples_per_question=2)
    for sink in episodes.of_node("L1N0"):
        first = [(m.node_id, m.text) for m in episodes.messages if m.episode == sink.episode and m.node_id < "L1"]
        chosen = combine("select:longest", first, first_word_vote)
        assert episodes.combined[sink.episode, 0] == chosen
        assert list(sink.input_spans) == [chosen.source]
        start, end = sink.input_spans[chosen.source]
        assert system.agents.decode(sink.prompt_ids[start:end]).strip() == chosen.text.strip()


def test_a_judge_is_the_frozen_base_and_its_choice_is_taken(tiny_model_dir):
    engine, system, task = make_engine(tiny_model_dir, [3, 1], {0: "select:judge"})
    calls, real = [], system.agents.generate

    def judge_says_two(prompts, node_ids, max_new_tokens, temperature=1.0, top_p=1.0, greedy=False):
        calls.append((list(node_ids), max_new_tokens, greedy))
        out = real(prompts, node_ids, max_new_tokens, temperature, top_p, greedy)
        if node_ids[0] == "__base__":  # the judge's replies: "2" (the tiny model cannot write one)
            two = torch.tensor(system.agents.tokenizer("2", add_special_tokens=False).input_ids)
            out = [type(g)(two, None, False) for g in out]
        return out
    system.agents.generate = judge_says_two
    episodes = engine.run(system, task.train_batch(0, 2), samples_per_question=2)
    first_layer = [n for n in ("L0N0", "L0N1", "L0N2") for _ in range(4)]  # node by node, 4 episodes each
    assert [c[0] for c in calls] == [first_layer, ["__base__"] * 4, ["L1N0"] * 4]
    assert calls[1][1:] == (8, True)
    assert all(episodes.combined[e, 0].source == "L0N1" for e in range(4))


# --- training through combined layers ---

@pytest.mark.slow  # about 10 s or more on 2 cores
def test_training_grows_into_a_voting_layer_and_resumes(tiny_model_dir, tmp_path):
    stages = ("[{topology: {widths: [1], aggregation: {-1: vote}}, steps: 2}, "
              "{topology: {widths: [2, 3], aggregation: {-1: vote}}, steps: 2}]")
    overrides = tiny_overrides(tiny_model_dir, tmp_path / "run", **{"growth.stages": stages, "checkpoint.every": 1,
                                                                   "tracking.transcripts_every": 1}) + [VARYING_REWARD]
    trainer = Trainer(load_config(RECIPE, overrides), tmp_path / "run")
    history = trainer.fit()
    trainer.close()
    assert trainer.topology.widths == [2, 3] and trainer.topology.aggregation == ["concat", "vote"]
    assert all(f"node/{n}/reward/mean" in history[-1] for n in ("L1N0", "L1N1", "L1N2"))
    last = json.loads((tmp_path / "run" / "transcripts.jsonl").read_text().splitlines()[-1])
    assert "L1 combined" in last["messages"] and last["answer"] == last["messages"]["L1 combined"]
    resumed = Trainer(load_config(RECIPE, overrides), tmp_path / "run", resume=True)
    assert resumed.topology.aggregation == ["concat", "vote"] and resumed.step == 4
    resumed.close()


def test_attribution_credit_through_a_combined_layer(tiny_model_dir, tmp_path):
    overrides = tiny_overrides(tiny_model_dir, tmp_path / "run", **{"topology.widths": "[2, 1]",
                                                                   "topology.aggregation": "{0: select:longest}",
                                                                   "algorithm.credit": "attribution"})
    trainer = Trainer(load_config(RECIPE, overrides + [VARYING_REWARD]), tmp_path / "run")
    history = trainer.fit()
    trainer.close()
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(m["train/loss"])) for m in history)
