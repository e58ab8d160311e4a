import json

import pytest

from neuromas.config import TrackingConfig
from neuromas.errors import ConfigError
from neuromas.tracking import Tracker, truncate_jsonl


def test_jsonl_metrics_and_truncation(tmp_path):
    tracker = Tracker(TrackingConfig(backend="none"), tmp_path, "run", {})
    for step in range(1, 5):
        tracker.log({"reward/mean": step / 10}, step)
    tracker.truncate_after(2)
    tracker.log({"reward/mean": 0.9}, 3)
    tracker.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line["reward/mean"]) for line in lines] == [(1, 0.1), (2, 0.2), (3, 0.9)]
    truncate_jsonl(tmp_path / "metrics.jsonl", 2, inclusive=True)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]


def test_wandb_offline_run_needs_no_account(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is in the test extra; installed by the README's test command")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "neuromas-tests")
    tracker = Tracker(TrackingConfig(backend="wandb"), tmp_path, "run", {"train": {"steps": 2}})
    tracker.log({"reward/mean": 0.5, "node/L0N0/msg_tokens": 12.0}, 1)
    tracker.textual({"proposals": [{"node_id": "L0N0", "old_text": "", "new_text": None, "problem": "empty"}],
                     "validation_before": 0.5, "validation_after": 0.5, "decision": "no valid edit"}, 1)
    tracker.close()
    assert json.loads((tmp_path / "textual.jsonl").read_text())["proposals"][0]["problem"] == "empty"
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["reward/mean"] == 0.5


def test_wandb_backend_without_wandb_is_a_config_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("no wandb")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(ConfigError, match="wandb is not installed"):
        Tracker(TrackingConfig(backend="wandb"), tmp_path, "run", {})


def test_record_eval_pairs_each_evaluation_with_step_0(tmp_path):
    from neuromas.stats import Accuracy
    from neuromas.tracking import record_eval

    path = tmp_path / "evals.jsonl"
    assert record_eval(path, 0, ["a", "b", "c"], Accuracy.of([0, 0, 1])) is None
    change = record_eval(path, 4, ["a", "b", "c"], Accuracy.of([1, 1, 1]))
    assert change.difference == pytest.approx(2 / 3) and (change.only_a, change.only_b) == (0, 2)
    assert record_eval(path, 8, ["a", "b"], Accuracy.of([1, 1])) is None  # other questions: no pairing
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 4, 8]
