"""The experiment reports rebuild from their kept data alone (experiments/*/data), and their
numbers are the ones the kept per-question results give."""

import json
from pathlib import Path

from experiments.communication.report import report, trivial_baselines

DATA = Path(__file__).resolve().parents[1] / "experiments" / "communication" / "data"


def test_the_split_views_report_rebuilds_from_the_kept_runs():
    seeds = sorted(int(p.name.split("seed")[1]) for p in DATA.glob("views-seed*"))
    assert seeds, "no kept split-views runs"
    text = report(DATA, "CMD")
    for seed in seeds:
        evals = [json.loads(line) for line in (DATA / f"views-seed{seed}" / "evals.jsonl").read_text().splitlines()]
        after = sum(evals[-1]["correct"]) / len(evals[-1]["correct"])
        before = sum(evals[0]["correct"]) / len(evals[0]["correct"])
        assert f"| {seed} | [2, 1] views | 16 | {before:.3f} ± " in text and f"| {after:.3f} ± " in text
    assert f"{len(seeds)} seeds" in text and text.endswith("Command: CMD")


def test_the_trivial_baselines_of_split_arithmetic():
    baselines = trivial_baselines(100)
    assert set(baselines) == {"always 4", "an operand (best position)"}
    assert 0 < min(baselines.values()) and max(baselines.values()) < 0.1


def test_the_navigate_report_rebuilds_from_the_kept_runs():
    from experiments.communication.navigate_report import report as navigate_report

    data = DATA / "navigate"
    seeds = sorted(int(p.name.split("seed")[1]) for p in data.glob("chain-seed*"))
    assert seeds, "no kept Navigate runs"
    text = navigate_report(data, "CMD")
    for seed in seeds:
        for arm, label in (("chain", "NeuroMAS-3 chain"), ("single", "single agent, rank 24")):
            evals = (data / f"{arm}-seed{seed}" / "evals.jsonl").read_text().splitlines()
            last = json.loads(evals[-1])
            after = sum(last["correct"]) / len(last["correct"])
            assert f"| {seed} | {label} | {after:.3f} ± " in text
    untrained = json.loads((data / "untrained-chain.json").read_text())
    assert f"chain {untrained['greedy_accuracy']:.3f} ± " in text and "always Yes (or always No): 0.500" in text
    assert text.endswith("Command: CMD")
