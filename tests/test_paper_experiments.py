"""The reproduction drivers (experiments/paper/) rebuild their tables and pictures from the runs
kept in experiments/paper/data/ without training again: the numbers docs/results.md quotes come
from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experiments.paper import equal_budget, path_dependence
from experiments.paper import runs as paper_runs

ROOT = Path(__file__).resolve().parents[1]


def no_training(*args, **kwargs):
    raise AssertionError(f"a kept run would have been trained again: {args}")


def rebuilt_report(systems, overrides, tmp_path, monkeypatch, capsys) -> str:
    """What the driver prints for seeds 0-2, from the kept data alone (training would fail the test)."""
    monkeypatch.setattr(subprocess, "run", no_training)
    results = paper_runs.run_all(systems, [0, 1, 2], tmp_path / "runs", overrides)
    paper_runs.report(results, str(tmp_path / "curves.png"), "test")
    return capsys.readouterr().out


def test_equal_budget_report_is_rebuilt_from_the_kept_runs(tmp_path, monkeypatch, capsys):
    systems = {label: f"recipes/paper/{recipe}.yaml" for label, recipe in equal_budget.SYSTEMS.items()}
    out = rebuilt_report(systems, (), tmp_path, monkeypatch, capsys)
    # docs/results.md, section 1
    assert "| one node [1], rank 24 | 2 | 48 | 0.110 ± 0.031 | 0.230 ± 0.042 | +0.120 ± 0.038 |" in out
    assert "| three nodes [2, 1], rank 8 each | 3 | 0.090 ± 0.012 |" in out
    assert ("trained accuracy, over seeds: +0.103 ± 0.037 over 3 seeds (+0.030, +0.140, +0.140); t-test p = 0.106 "
            "on 2 df; detectable at 80% power: 0.197") in out
    assert "- pooled over 3 seeds x 100 questions: +0.103 ± 0.027 (paired, 300 questions" in out
    assert "- at step 32: +0.090 ± 0.026" in out
    # per node by lineage: the sink of [1] (L0N0, then L1N0) and the first-layer node born as L0N0
    assert "| three nodes [2, 1], rank 8 each | 2 | L0N0 -> L1N0 | 0.20 | 0.44 | 0.88 |" in out
    assert "| three nodes [2, 1], rank 8 each | 2 | L0N0 (from stage 1) | - | 0.59 | 0.98 |" in out
    assert "| three nodes [2, 1], rank 8 each | 2 | 0.098 (19 s) | 0.102 (40 s) | 0.098 (35 s) |" in out
    assert "| one node [1], rank 24 | mean | 0.095 ± 0.009 | 0.124 ± 0.007 | 0.118 ± 0.001 |" in out
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_path_dependence_report_is_rebuilt_from_the_kept_runs(tmp_path, monkeypatch, capsys):
    out = rebuilt_report(path_dependence.SYSTEMS, path_dependence.OVERRIDES, tmp_path, monkeypatch, capsys)
    # docs/results.md, section 2
    assert "| [4, 2, 1] from scratch | 2 | 24 | 0.320 ± 0.047 | 0.610 ± 0.049 | +0.290 ± 0.056 |" in out
    assert "23.6 min since a resume" in out
    assert "| grown 1 -> 3 -> 7 | 3 | 0.467 ± 0.112 |" in out
    assert "- pooled over 3 seeds x 100 questions: -0.097 ± 0.033 (paired, 300 questions" in out
    assert "35 gained, 64 lost" in out
    assert "over seeds: -0.097 ± 0.079 over 3 seeds (+0.010, -0.050, -0.250); t-test p = 0.344" in out
    assert "| grown 1 -> 3 -> 7 | mean | 0.224 ± 0.014 | 0.229 ± 0.038 | 0.406 ± 0.114 |" in out


def test_a_kept_run_of_another_recipe_version_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", no_training)
    # kept as experiments/paper/data/paper-equal-budget-three-seed0; a new comment is no new version
    recipe = tmp_path / "paper" / "equal-budget-three.yaml"
    recipe.parent.mkdir()
    recipe.write_text((ROOT / "recipes/paper/equal-budget-three.yaml").read_text() + "  # a comment\n")
    assert paper_runs.run(str(recipe), 0, tmp_path / "runs")["after"].n == 100
    recipe.write_text((ROOT / "recipes/paper/equal-budget-three.yaml").read_text() + "name: changed\n")
    with pytest.raises(SystemExit, match="another version"):
        paper_runs.run(str(recipe), 0, tmp_path / "runs")


def test_arms_are_chosen_by_their_place_in_the_table():
    systems = {"a": "x.yaml", "b": "y.yaml", "c": "z.yaml"}
    assert list(paper_runs.chosen(systems, [1, 3])) == ["a", "c"]
    assert list(paper_runs.chosen(systems, None)) == ["a", "b", "c"]


def test_the_variant_arm_of_path_dependence_needs_its_overrides():
    done = subprocess.run([sys.executable, "-m", "experiments.paper.path_dependence", "--arms", "2", "3"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "give --grown-with KEY=VALUE" in done.stderr.strip().splitlines()[-1]
