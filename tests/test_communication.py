"""Tasks where nodes must communicate (per-node views), and message ablations that measure whether
a system uses its messages: real - shuffled is about 0 for a sink that ignores its messages and
large when the messages carry what the answer needs."""

import re

import pytest
import torch

from neuromas.agents import Generation
from neuromas.config import PromptsConfig, RolloutConfig, TaskConfig, TopologyConfig
from neuromas.errors import ConfigError
from neuromas.accuracy import answers_changed, graded
from neuromas.commands.evaluation import ablations
from neuromas.metrics import part_metrics
from neuromas.prompts import PromptBuilder
from neuromas.rollout import Ablation, RolloutEngine
from neuromas.system import System
from neuromas.tasks import build_task
from neuromas.tasks.sample import Sample
from neuromas.tasks.split import part_correct
from neuromas.topology import Topology
from test_agents import make_agents


def split_task(**kw):
    return build_task(TaskConfig(name="split_arithmetic", num_test=24, **kw))


class Scripted:
    """A generation backend that writes scripted replies from the decoded prompt: a first-layer
    node states the value of the expression it was given; the sink either combines the values it
    reads (`reads=True`) or answers without looking at them."""

    def __init__(self, agents, reads: bool):
        self.agents, self.reads, self.prompts = agents, reads, []

    def generate(self, prompts, node_ids, max_new_tokens, temperature=1.0, top_p=1.0, greedy=False):
        out = []
        for ids, node_id in zip(prompts, node_ids):
            text = self.agents.decode(ids)
            self.prompts.append((node_id, text))
            out.append(self._reply(node_id, text))
        return out

    def _reply(self, node_id: str, prompt: str) -> Generation:
        if node_id.startswith("L0"):
            a, op, b = re.search(r"= (\d+) ([+-]) (\d+)\.", prompt).groups()
            reply = f"\\boxed{{{int(a) + int(b) if op == '+' else int(a) - int(b)}}}"
        elif not self.reads:
            reply = "\\boxed{7}"
        else:
            op = re.search(r"Compute X ([+-]) Y", prompt).group(1)
            values = [int(v) for v in re.findall(r"\\boxed\{(-?\d+)\}", prompt)]
            reply = f"\\boxed{{{values[0] + values[1] if op == '+' else values[0] - values[1]}}}" \
                if len(values) == 2 else "none"
        ids = self.agents.tokenizer(reply, add_special_tokens=False)["input_ids"] + self.agents.stop_ids[:1]
        return Generation(torch.tensor(ids), None, False)


def scripted_system(model_dir, reads: bool):
    topology = Topology.from_config(TopologyConfig(widths=[2, 1]))
    agents = make_agents(model_dir, nodes=topology.node_ids, randomize=False)
    backend = Scripted(agents, reads)
    engine = RolloutEngine(RolloutConfig(), PromptBuilder(PromptsConfig(), "Put the final answer in \\boxed{}."),
                           backend)
    backend.sync = lambda agents: None
    backend.last_sync_s = 0.0
    return engine, System(agents, topology), backend


def test_split_views_reach_only_their_node():
    task = split_task()
    sample = task.test[0]
    left, right = sample.views["first"]
    assert sample.view(0, 0, 2) == left and sample.view(0, 1, 2) == right
    assert sample.view(1, 0, 2) == sample.views["sink"] and not re.search(r"\d+ [+-] \d+", sample.views["sink"])
    assert sample.view(0, 0, 1) == sample.question  # one node is given the whole question
    x, y = sample.meta["parts"]
    assert left.startswith("Compute X = ") and right.startswith("Compute Y = ")
    a, op, b = re.search(r"(\d+) ([+-]) (\d+)", left).groups()
    assert x == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0
    outer = re.search(r"X ([+-]) Y", sample.views["sink"]).group(1)
    assert sample.answer == str(x + y if outer == "+" else x - y)


def test_the_prompts_of_a_split_rollout_hold_only_their_nodes_part(tiny_model_dir):
    engine, system, backend = scripted_system(tiny_model_dir, reads=True)
    sample = split_task().test[0]
    engine.run(system, [sample], 1, greedy=True)
    prompts = dict(backend.prompts)
    left, right = sample.views["first"]
    assert left in prompts["L0N0"] and right not in prompts["L0N0"]
    assert right in prompts["L0N1"] and left not in prompts["L0N1"]
    assert sample.views["sink"] in prompts["L1N0"] and left not in prompts["L1N0"]


def test_first_layer_messages_are_scored_for_their_own_part(tiny_model_dir):
    sample = Sample("q", "Compute (1 + 2) + (5 - 1).", "7", {"parts": [3, 4]})
    assert part_correct("so X is \\boxed{3}", sample, 0) == 1.0
    assert part_correct("\\boxed{3}", sample, 1) == 0.0 and part_correct("4", sample, 1) == 1.0
    assert part_correct("4", Sample("q", "Compute 1 + 3.", "4"), 0) is None
    engine, system, _ = scripted_system(tiny_model_dir, reads=True)
    episodes = engine.run(system, split_task().test[:4], 1, greedy=True)
    assert part_metrics(episodes) == {"node/L0N0/part_correct": 1.0, "node/L0N1/part_correct": 1.0}


@pytest.mark.parametrize("reads", [True, False])
def test_ablations_tell_a_sink_that_reads_its_messages_from_one_that_ignores_them(tiny_model_dir, reads):
    engine, system, _ = scripted_system(tiny_model_dir, reads)
    task, questions = split_task(), split_task().test
    real = graded(engine, system, task, questions, keep=2)
    shuffled = graded(engine, system, task, questions, ablation=Ablation("shuffled"))
    empty = graded(engine, system, task, questions, ablation=Ablation("empty"))
    one = graded(engine, system, task, questions, ablation=Ablation("shuffled", frozenset({"L0N1"})))
    accuracy = [g.correct.float().mean().item() for g in (real, shuffled, empty, one)]
    changed = [answers_changed(real.answers, g.answers) for g in (shuffled, empty, one)]
    if reads:
        assert accuracy[0] == 1.0 and accuracy[2] == 0.0 and accuracy[1] < 0.3 and accuracy[3] < 0.3
        assert min(changed) > 0.7  # the answers follow the messages
        rows = real.transcripts
        assert rows[0]["answer"] == f"\\boxed{{{questions[0].answer}}}" and set(rows[0]["messages"]) == {
            "L0N0", "L0N1", "L1N0"}
    else:
        assert len(set(accuracy)) == 1 and changed == [0.0, 0.0, 0.0]  # the messages are not used


def test_a_shuffled_message_comes_from_the_next_question_of_the_batch(tiny_model_dir):
    engine, system, backend = scripted_system(tiny_model_dir, reads=True)
    questions = split_task().test[:3]
    episodes = engine.run(system, questions, 2, greedy=True, ablation=Ablation("shuffled", frozenset({"L0N0"})))
    written = {m.episode: m.text for m in episodes.of_node("L0N0")}
    sink_prompts = [text for node, text in backend.prompts if node == "L1N0"]
    for e, prompt in enumerate(sink_prompts):  # episodes 2q, 2q+1 are question q's; they read question q+1's
        assert written[(e + 2) % 6] in prompt.split("node 1:")[1].split("Message")[0]
    assert [m.text for m in episodes.of_node("L0N0")] == list(written.values())  # kept as written


def test_ablations_are_named_per_node_and_refused_where_nothing_is_read():
    topology = Topology.from_config(TopologyConfig(widths=[2, 1]))
    assert set(ablations(topology, ("empty", "shuffled"), False)) == {"empty", "shuffled"}
    assert set(ablations(topology, ("shuffled",), True)) == {"shuffled_L0N0", "shuffled_L0N1"}
    from neuromas.errors import NeuromasError
    with pytest.raises(NeuromasError, match="no messages"):
        ablations(Topology.from_config(TopologyConfig(widths=[1])), ("empty",), False)


def test_the_train_stream_follows_its_own_seed_and_the_test_split_does_not():
    fixed, other = build_task(TaskConfig(num_test=8)), build_task(TaskConfig(num_test=8, stream_seed=1))
    assert [s.question for s in fixed.test] == [s.question for s in other.test]
    assert [s.question for s in fixed.train_batch(0, 8)] != [s.question for s in other.train_batch(0, 8)]
    assert [s.question for s in other.train_batch(3, 4)] == [s.question for s in other.train_batch(3, 4)]
    test = {s.question for s in other.test} | {s.question for s in other.validation}
    assert not test & {s.question for i in range(20) for s in other.train_batch(i, 4)}


def test_boxed_extraction_refuses_the_last_number_fallback():
    sample = Sample("q", "Compute 3 + 4.", "7")
    last, boxed = build_task(TaskConfig()).reward, build_task(TaskConfig(extract="boxed")).reward
    assert last("3 + 4 = 7", sample) == 1.0 and boxed("3 + 4 = 7", sample) == 0.0
    assert boxed("so \\boxed{7}", sample) == 1.0
    with pytest.raises(ConfigError, match="task.extract"):
        TaskConfig(extract="first")


def test_boxed_extraction_is_strict_for_yes_no_and_refused_where_it_has_no_meaning():
    sample = Sample("q", "Do you return?", "No")
    last = build_task(TaskConfig(name="navigate", depth=2)).reward
    boxed = build_task(TaskConfig(name="navigate", depth=2, extract="boxed")).reward
    assert last("Options: Yes, No. So no.", sample) == 1.0 and boxed("Options: Yes, No. So no.", sample) == 0.0
    assert boxed("\\boxed{No}", sample) == 1.0 and boxed("\\boxed{Yes}", sample) == 0.0
    with pytest.raises(ConfigError, match="task.extract: boxed"):
        build_task(TaskConfig(name="lookup", depth=2, extract="boxed"))


def test_a_sample_reads_as_a_mapping_in_a_reward():
    sample = Sample("q", "Compute 3 + 4.", "7", {"numbers": [3, 4]})
    assert sample["answer"] == "7" and sample["numbers"] == [3, 4] and sample.get("missing") is None


def test_navigate_is_balanced_has_both_variants_and_is_labelled_right():
    from collections import Counter

    from neuromas.tasks.navigate import HEADINGS, SIDEWAYS

    task = build_task(TaskConfig(name="navigate", depth=3, num_test=60))
    for split in (task.test, task.validation, task.train_batch(0, 60)):
        assert Counter(s.answer for s in split) == {"Yes": 30, "No": 30}
    assert set(Counter(s.meta["variant"] for s in task.test)) == {"turns", "always face forward"}
    for sample in task.test + task.train_batch(1, 40):  # walk every question's instructions again, from its text
        x = y = heading = 0
        for verb, rest in re.findall(r"(Take|Turn) ([^.]+)\.", sample.question):
            if verb == "Turn":
                heading = (heading + {"left": -1, "right": 1, "around": 2}[rest]) % 4
                continue
            words = rest.split()
            n, direction = words[0], words[2:]
            dx, dy = SIDEWAYS[direction[0]] if direction else HEADINGS[heading]
            x, y = x + int(n) * dx, y + int(n) * dy
        assert (sample.answer == "Yes") == ((x, y) == (0, 0)), sample.question
        assert ("Always face forward." in sample.question) == (sample.meta["variant"] == "always face forward")
    reward, sample = task.reward, task.test[0]
    assert reward(f"so \\boxed{{{sample.answer}}}", sample) == 1.0
    assert reward(sample.answer.lower() + ".", sample) == 1.0
    assert reward("\\boxed{Maybe}", sample) == 0.0


def test_arc_rows_with_labelled_choices_become_letters():
    from neuromas.tasks.jsonl import choice_row

    row = {"id": "arc-1", "question": "Which is a gas?", "answerKey": "3",
           "choices": {"text": ["rock", "water", "steam", "ice"], "label": ["1", "2", "3", "4"]}}
    sample = choice_row(row, "x")
    assert sample.answer == "C" and "steam" in sample.question and sample.meta["choices"][2] == "steam"
    row["choices"]["label"], row["answerKey"] = ["A", "B", "C", "D"], "B"
    assert choice_row(row, "x").answer == "B"


@pytest.mark.parametrize("folder", ["recipes/paper/protocol", "recipes/paper/gpu/protocol"])
def test_the_paper_protocol_recipes_pass_a_dry_run(folder, tmp_path, capsys):
    from pathlib import Path

    from neuromas.cli import main

    root = Path(__file__).resolve().parents[1]
    names = sorted(p.stem for p in (root / folder).glob("*.yaml"))
    assert names == ["grow-3-5-7", "neuromas-3", "neuromas-5", "neuromas-7", "single-agent"]
    for name in names:
        assert main(["train", str(root / folder / f"{name}.yaml"), "--dry-run",
                     f"tracking.run_dir={tmp_path / name}"]) == 0
    assert "(3 stage(s)" in capsys.readouterr().err


def test_split_lookup_shares_the_table_out_and_gives_the_answering_node_no_row():
    task = build_task(TaskConfig(name="split_lookup", depth=2, num_test=8))
    for sample in task.test:
        rows = [line for line in sample.question.splitlines() if " -> " in line]
        held = [[line for line in sample.view(0, i, 2).splitlines() if " -> " in line] for i in range(2)]
        assert sorted(held[0] + held[1]) == sorted(rows) and not set(held[0]) & set(held[1])
        assert " -> " not in sample.view(1, 0, 2) and sample.view(0, 0, 1) == sample.question
        start = re.search(r"Start at (\w+)", sample.question).group(1)
        assert f"Start at {start}" in sample.view(1, 0, 2)
        assert task.reward(f"\\boxed{{{sample.answer}}}", sample) == 1.0


def test_a_run_measures_its_message_use_at_every_evaluation(tiny_model_dir, tmp_path):
    import json

    from conftest import tiny_overrides
    from neuromas.cli import main

    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_model_dir, run, **{"eval.ablations": "[empty,shuffled]", "eval.num_questions": 3,
                                                        "train.steps": 1, "eval.transcripts": 2})
    assert main(["train", "tests/recipe.yaml", *overrides]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 1]
    for r in evals:
        for mode in ("empty", "shuffled"):
            assert r[f"eval/real_minus_{mode}"] == pytest.approx(r["eval/accuracy"] - r[f"eval/accuracy_{mode}"])
            assert 0 <= r[f"eval/changed_{mode}"] <= 1
    kept = [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()]
    assert set(kept[-1]["ablated"]) == {"empty", "shuffled"} and len(kept[-1]["ablated"]["empty"]) == 3
    transcripts = [json.loads(line) for line in (run / "eval_transcripts.jsonl").read_text().splitlines()]
    assert sorted({(t["step"], t["messages_read"]) for t in transcripts}) == [
        (s, m) for s in (0, 1) for m in ("empty", "real", "shuffled")]
    shuffled = next(t for t in transcripts if t["messages_read"] == "shuffled")
    assert set(shuffled["messages"]) == {"L0N0", "L0N1", "L1N0"}
