"""The eval, show and plot commands, and transcripts, on a tiny trained run."""

import json

import pytest

from conftest import tiny_overrides
from neuromas.cli import main
from neuromas.evaluate import single_agent_rank
from test_trainer import QUICKSTART


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    overrides = tiny_overrides(tiny_model_dir, run, **{"tracking.transcripts_every": 1, "checkpoint.every": 1})
    assert main(["train", str(QUICKSTART), *overrides]) == 0
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
    assert "greedy accuracy" in capsys.readouterr().out


def test_eval_baselines(tiny_run, capsys):
    assert main(["eval", str(tiny_run / "checkpoints" / "step_2"), "--system", "untrained", "--questions", "1"]) == 0
    assert json.loads((tiny_run / "checkpoints" / "step_2" / "eval-test-untrained.json").read_text())["system"] \
        == "untrained"
    out = tiny_run / "single.json"
    assert main(["eval", str(tiny_run), "--single-agent", "--questions", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["widths"] == [1] and "rank 24" in result["note"]  # 3 nodes x rank 8


def test_single_agent_rank_matches_the_budget():
    assert single_agent_rank(3 * 8 * 1000, 1000) == 24
    assert single_agent_rank(2500, 1000) == 2 and single_agent_rank(10, 1000) == 1


def test_show_and_plot_write_pictures(tiny_run, tmp_path, capsys):
    assert main(["show", str(QUICKSTART), "--out", str(tmp_path / "t.svg")]) == 0
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
])
def test_command_errors(tiny_run, capsys, args, message):
    assert main([a.replace("RUN", str(tiny_run)) for a in args]) == 2
    assert message in capsys.readouterr().err
