"""The eval, show and plot commands, and transcripts, on a tiny trained run."""

import json

import pytest

from conftest import tiny_overrides
from neuromas.cli import main
from neuromas.commands.evaluation import single_agent_rank
from test_trainer import RECIPE


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    overrides = tiny_overrides(tiny_model_dir, run, **{"tracking.transcripts_every": 1, "checkpoint.every": 1})
    assert main(["train", str(RECIPE), *overrides]) == 0
    return run


def test_transcripts_hold_every_nodes_message(tiny_run):
    rows = [json.loads(line) for line in (tiny_run / "transcripts.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 1, 2, 2]
    assert set(rows[0]["messages"]) == {"L0N0", "L0N1", "L1N0"} and rows[0]["answer"] == rows[0]["messages"]["L1N0"]
    assert rows[0]["question"].startswith("Compute") and rows[0]["reward"] in (0.0, 1.0)


def test_eval_greedy_and_pass_at_k(tiny_run, capsys):
    assert main(["eval", str(tiny_run), "--samples", "3", "--questions", "2"]) == 0
    result = json.loads((tiny_run / "eval-test-trained.json").read_text())
    assert result["num_questions"] == 2 and result["widths"] == [2, 1]
    assert 0 <= result["greedy_accuracy"] <= 1 and 0 <= result["pass@3"] <= 1
    assert len(result["greedy_accuracy_correct"]) == len(result["question_ids"]) == 2
    assert sum(result["pass@3_correct"]) / 2 == result["pass@3"] and "pass@3_se" in result
    out = capsys.readouterr().out
    assert "greedy accuracy" in out and "± " in out and "(2 questions)" in out


def test_eval_compares_two_systems_on_the_same_questions(tiny_run, capsys):
    out = tiny_run / "compare.json"
    assert main(["eval", str(tiny_run / "checkpoints" / "step_2"), str(tiny_run), "--questions", "3",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["a"]["question_ids"] == result["b"]["question_ids"] and len(result["a"]["question_ids"]) == 3
    # step_2 is the final system: the same answers, a zero difference
    paired = result["b_minus_a"]["greedy_accuracy"]
    assert paired["difference"] == 0 and paired["only_a"] == paired["only_b"] == 0 and paired["mcnemar_p"] == 1
    assert "B - A, greedy accuracy  +0.000 ± 0.000 (paired, 3 questions" in capsys.readouterr().out


def test_eval_baselines(tiny_run, capsys):
    assert main(["eval", str(tiny_run / "checkpoints" / "step_2"), "--system", "untrained", "--questions", "1"]) == 0
    # beside the run, never inside a checkpoint (pruning deletes checkpoints)
    assert json.loads((tiny_run / "step_2-eval-test-untrained.json").read_text())["system"] == "untrained"
    assert not list((tiny_run / "checkpoints" / "step_2").glob("eval-*"))
    out = tiny_run / "single.json"
    assert main(["eval", str(tiny_run), "--single-agent", "--questions", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["widths"] == [1] and "rank 24" in result["note"]  # 3 nodes x rank 8


def test_eval_message_ablations_print_real_minus_ablated_per_node(tiny_run, capsys):
    out = tiny_run / "ablations.json"
    assert main(["eval", str(tiny_run), "--questions", "3", "--messages", "empty,shuffled", "--per-node",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    names = {"empty_L0N0", "empty_L0N1", "shuffled_L0N0", "shuffled_L0N1"}
    assert set(result["real_minus_ablated"]) == names
    for name in names:
        ablated, diff = result[f"greedy_accuracy_{name}"], result["real_minus_ablated"][name]
        assert diff["difference"] == pytest.approx(result["greedy_accuracy"] - ablated) and diff["n"] == 3
    assert len(result["transcripts"]["real"]) == 3 and set(result["transcripts"]) == {"real", *names}
    assert set(result["answers_changed"]) == names and all(0 <= v <= 1 for v in result["answers_changed"].values())
    text = capsys.readouterr().out
    assert "greedy, L0N1 shuffled" in text and "real - shuffled L0N1" in text and "answers changed, empty L0N0" in text


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_compute_matched_baselines_vote_and_token_budget(tiny_run, tiny_model_dir, tmp_path, capsys):
    one = tmp_path / "one"
    assert main(["train", str(RECIPE), *tiny_overrides(tiny_model_dir, one, **{"topology.widths": "[1]"})]) == 0
    assert main(["eval", str(tiny_run), "--against", "vote", "--baseline", str(one), "--questions", "3"]) == 0
    result = json.loads((tiny_run / "compare-test-vote.json").read_text())
    assert result["b"]["num_calls"] == 3 and result["a"]["widths"] == [1] and "vote@3_correct" in result["a"]
    diff = result["b_minus_a"]["greedy_accuracy vs vote@3"]
    assert diff["difference"] == pytest.approx(result["b"]["greedy_accuracy"] - result["a"]["vote@3"])
    assert main(["eval", str(tiny_run), "--against", "tokens", "--questions", "2"]) == 0
    result = json.loads((tiny_run / "compare-test-tokens.json").read_text())
    assert result["b"]["token_budget"] == 3 * 6 and result["a"]["token_budget"] == 18  # 3 nodes x 6 tokens
    assert result["a"]["system"] == "single-agent" and "greedy_accuracy" in result["b_minus_a"]
    capsys.readouterr()
    assert main(["eval", str(one), "--against", "vote", "--baseline", str(tiny_run)]) == 2
    assert "is a [2, 1] system; a compute-matched baseline is one node" in capsys.readouterr().err
    # The same baselines of one node alone, to pair with a system's kept evaluation afterwards.
    assert main(["eval", str(one), "--vote", "3", "--max-new-tokens", "18", "--questions", "2",
                 "--out", str(tmp_path / "one.json")]) == 0
    alone = json.loads((tmp_path / "one.json").read_text())
    assert "vote@3_correct" in alone and alone["token_budget"] == 18 and len(alone["greedy_accuracy_correct"]) == 2
    assert main(["eval", str(one), "--vote", "1"]) == 2


def test_show_transcripts_prints_every_nodes_message(tiny_run, capsys):
    assert main(["show", str(tiny_run), "--transcripts"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("step 2 | test-0 | messages read: real") and "  L0N1:" in text and "  L1N0:" in text
    assert main(["show", str(tiny_run), "--transcripts", "--step", "0", "--question", "test-1"]) == 0
    assert capsys.readouterr().out.count("step 0 | test-1") == 1
    assert main(["show", str(tiny_run), "--transcripts", "--training", "--step", "1"]) == 0
    assert "step 1 |" in capsys.readouterr().out


def test_single_agent_rank_matches_the_budget():
    assert single_agent_rank(3 * 8 * 1000, 1000) == 24
    assert single_agent_rank(2500, 1000) == 2 and single_agent_rank(10, 1000) == 1


def test_show_and_plot_write_pictures(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["show", str(RECIPE)]) == 0  # into the working directory, not beside the recipe
    assert (tmp_path / "topology.png").is_file() and not (RECIPE.parent / "topology.png").exists()
    assert main(["show", str(RECIPE), "--out", str(tmp_path / "t.svg")]) == 0
    assert (tmp_path / "t.svg").read_text().lstrip().startswith("<?xml")
    assert "L1N0 <- L0N0, L0N1" in capsys.readouterr().out
    assert main(["show", str(tiny_run)]) == 0
    assert (tiny_run / "topology.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(tiny_run), str(tiny_run), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 10_000


@pytest.mark.parametrize("args, message", [
    (["eval", "nowhere"], "neither a finished run directory nor a checkpoint"),
    (["eval", "RUN", "--split", "validation", "--samples", "0"], "at least 1"),
    (["show", "nowhere.yaml"], "does not exist"),
    (["show", "RUN", "--out", "x.gif"], ".png or .svg"),
    (["plot", "nowhere"], "not a run directory"),
    (["eval", "RUN", "--messages", "silly"], "expected empty and/or shuffled"),
    (["eval", "RUN", "--per-node"], "give the ablations with --messages"),
    (["show", "RUN", "--transcripts", "--step", "9"], "has no transcripts; steps with some: 0, 2"),
])
def test_command_errors(tiny_run, capsys, args, message):
    assert main([a.replace("RUN", str(tiny_run)) for a in args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_sigkill_mid_run_loses_at_most_the_steps_since_the_last_checkpoint(tiny_model_dir, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    args = [sys.executable, "-m", "neuromas", "train", str(RECIPE),
            *tiny_overrides(tiny_model_dir, run, **{"train.steps": 40, "checkpoint.every": 2, "eval.num_questions": 0})]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step_4").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    checkpoints = [p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith(".tmp")]
    latest = max(int(name.split("_")[1]) for name in checkpoints)
    done = subprocess.run(args + ["--resume", str(run)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {run / 'checkpoints' / f'step_{latest}'}" in done.stdout + done.stderr
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "reward/mean" in line]
    assert steps == list(range(1, 41))  # every step once: the lost ones ran again, nothing twice


def test_a_full_disk_keeps_the_previous_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    import errno

    from neuromas.agents import Agents
    from neuromas.recipe import load_config
    from neuromas.errors import NeuromasError
    from neuromas.trainer import Trainer

    trainer = Trainer(load_config(RECIPE, tiny_overrides(tiny_model_dir, tmp_path / "run")), tmp_path / "run")
    good = trainer.save(tmp_path / "run" / "checkpoints" / "step_1")
    before = sorted(p.name for p in good.rglob("*"))

    def disk_full(self, directory):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Agents, "save", disk_full)
    with pytest.raises(NeuromasError, match="No space left on device"):
        trainer.save(tmp_path / "run" / "checkpoints" / "step_1")
    assert sorted(p.name for p in good.rglob("*")) == before
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))


def test_init_from_a_different_topology_is_an_error(tiny_run, tmp_path, capsys):
    overrides = [f"train.init_from={tiny_run}", "topology.widths=[3,1]", f"tracking.run_dir={tmp_path / 'r'}"]
    config = tiny_run / "config.yaml"
    assert main(["train", str(config), *overrides]) == 2
    assert "holds topology [2, 1]" in capsys.readouterr().err


def test_dry_run_checks_recipe_data_and_deepspeed_config_without_training(tmp_path, capsys):
    assert main(["train", "--dry-run", str(RECIPE), f"tracking.run_dir={tmp_path / 'run'}"]) == 0
    assert "is valid" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert main(["train", "--dry-run", str(RECIPE), "task.name=math", "task.path=nope.jsonl"]) == 2
    assert "dataset not found: nope.jsonl" in capsys.readouterr().err
    assert main(["train", "--dry-run", str(RECIPE), "--deepspeed", "zero7"]) == 2
    assert "no config named 'zero7'" in capsys.readouterr().err


def test_overrides_may_follow_options(tmp_path, capsys):
    argv = ["train", str(RECIPE), "--dry-run", "train.steps=3", f"tracking.run_dir={tmp_path / 'run'}"]
    assert main(argv) == 0 and "3 steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", str(RECIPE), "--dry-run", "--nonsense"])


def test_eval_against_the_untrained_baseline_pairs_the_same_questions(tiny_run):
    assert main(["eval", str(tiny_run), "--against", "untrained", "--questions", "2"]) == 0
    result = json.loads((tiny_run / "compare-test-untrained.json").read_text())
    assert (result["a"]["system"], result["b"]["system"]) == ("untrained", "trained")
    assert result["b_minus_a"]["greedy_accuracy"]["n"] == 2


def test_eval_rejects_three_systems_and_against_with_two(tiny_run, capsys):
    assert main(["eval", str(tiny_run), str(tiny_run), str(tiny_run)]) == 2
    assert main(["eval", str(tiny_run), str(tiny_run), "--against", "untrained"]) == 2
    assert "--against" in capsys.readouterr().err


def test_strongest_path_follows_the_largest_weight_back():
    from neuromas.attribution import strongest_path

    shares = {"L2N0": {"L1N0": 0.3, "L1N1": 0.7}, "L1N1": {"L0N0": 0.5, "L0N1": 0.5}, "L1N0": {"L0N1": 1.0}}
    assert strongest_path("L2N0", shares) == ["L2N0", "L1N1", "L0N0"]  # a tie goes to the first listed
    assert strongest_path("L0N0", shares) == ["L0N0"]


def test_attribute_draws_connection_weights_on_failing_questions(tiny_run, capsys, tmp_path):
    assert main(["attribute", str(tiny_run), "--questions", "3"]) == 0
    report = json.loads((tiny_run / "attribution.json").read_text())
    assert report["num_questions"] == 3 and report["num_failing"] == 3  # the random tiny model fails all
    assert {(e["source"], e["target"]) for e in report["edges"]} == {("L0N0", "L1N0"), ("L0N1", "L1N0")}
    assert sum(e["weight"] for e in report["edges"]) == pytest.approx(1.0)  # the sink's shares, averaged
    assert all(e["raw_salience"] > 0 for e in report["edges"])
    assert sum(report["strongest_source_counts"].values()) == 3 and report["strongest_source_counts"]["L1N0"] == 0
    assert (tiny_run / "attribution.png").stat().st_size > 1000
    assert "L0N0 -> L1N0: weight" in capsys.readouterr().out
    assert main(["attribute", str(tiny_run), "--questions", "2", "--objective", "logprob", "--agg",
                 "grad_x_input_signed", "--out", str(tmp_path / "a.svg")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["agg"] == "grad_x_input_signed"
    assert main(["attribute", str(tiny_run), "--out", str(tmp_path / "a.gif")]) == 2
