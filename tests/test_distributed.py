"""Multi-process training on CPU: 2 ranks under torchrun and under the deepspeed launcher (gloo).

Each run starts real processes (about 10-20 s each); tests/dist_driver.py is what they run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_overrides
from neuromas.config import TrainConfig
from neuromas.distributed import World, init_world
from neuromas.errors import ConfigError, NeuromasError
from neuromas.optim import resolve_deepspeed_config
from test_trainer import RECIPE, VARYING_REWARD

pytestmark = pytest.mark.slow  # each test launches real multi-process runs

TESTS = Path(__file__).parent
DRIVER = TESTS / "dist_driver.py"


# A time limit only catches a hang: it must not decide a verdict on a slow or loaded machine. A run
# here takes 10-60 s alone; the limit is 30 minutes (NEUROMAS_TEST_TIMEOUT seconds, if set).
TIMEOUT = int(os.environ.get("NEUROMAS_TEST_TIMEOUT", "1800"))


def failure_report(done: subprocess.CompletedProcess) -> str:
    """The tail of a failed launch's output, and the lines that name a crash (an abort in one rank
    scrolls out of the tail behind the launcher's report)."""
    crash = [line for line in done.stderr.splitlines()
             if any(m in line for m in ("terminate called", "what():", "Fatal Python error", "Error", "Signal"))]
    return "\n".join([done.stdout[-3000:], done.stderr[-3000:], "crash lines:", *crash[:40]])


def launch(launcher: str, *args: str, processes: int = 2, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU, as in CI, also on a machine with fewer GPUs than processes
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # torchrun, deepspeed
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_port", str(free_port())]
    elif launcher == "script":
        cmd = ["bash"]
    elif launcher == "accelerate":
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(TESTS.parent / "configs" / "accelerate" / "cpu-2proc.yaml"), "--main_process_port", str(free_port())]
    else:
        cmd = [sys.executable]
    done = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, failure_report(done)
    return done


def free_port() -> int:
    from neuromas.distributed import _free_port

    return _free_port()


def rank_states(directory: Path, processes: int = 2) -> list[dict[str, dict[str, torch.Tensor]]]:
    return [torch.load(directory / f"rank{r}.pt") for r in range(processes)]


def assert_same_adapters(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for node in a:
        for key in a[node]:
            assert torch.allclose(a[node][key], b[node][key], atol=atol, rtol=0), f"{node} {key} differs"


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_args(model_dir: Path, run_dir: Path, **extra) -> list[str]:
    overrides = tiny_overrides(model_dir, run_dir, **{"checkpoint.every": 1, "train.questions_per_step": 4, **extra})
    return [str(DRIVER), "train", str(RECIPE), *overrides, VARYING_REWARD]


def test_two_processes_train_identical_adapters_and_write_once(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    launch("torchrun", *train_args(tiny_model_dir, run_dir))
    ranks = rank_states(run_dir / "ranks")
    assert_same_adapters(*ranks)
    assert any(v.abs().sum() > 0 for node in ranks[0].values() for k, v in node.items() if "lora_B" in k)
    steps = [m for m in metrics(run_dir) if "train/loss" in m]
    assert [m["step"] for m in steps] == [1, 2]  # logged once, by rank 0
    assert all(math.isfinite(m["train/loss"]) and m["train/rows_updated"] > 0 for m in steps)
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["step_1", "step_2"]  # no second writer's leftovers (.tmp-*)
    saved = torch.load(run_dir / "checkpoints" / "step_2" / "rng.pt", weights_only=False)
    assert len(saved["ranks"]) == 2 and not torch.equal(saved["ranks"][0]["torch"], saved["ranks"][1]["torch"])


def test_two_ranks_update_equals_one_rank_on_the_whole_batch(tiny_model_dir, tmp_path):
    """2 ranks x 2 questions == 1 process x 4 questions: same episodes, same advantages; the
    loss normalisation and DeepSpeed's gradient reduction must make the updates equal."""
    overrides = tiny_overrides(tiny_model_dir, tmp_path / "unused", **{"train.questions_per_step": 4,
                                                                       "rollout.samples_per_question": 3,
                                                                       "train.micro_batch_size": 4})
    launch("torchrun", str(DRIVER), "update", str(tmp_path / "two"), *overrides)
    launch("python", str(DRIVER), "update", str(tmp_path / "one"), *overrides)
    two, (one,) = rank_states(tmp_path / "two" / "ranks"), rank_states(tmp_path / "one" / "ranks", 1)
    assert_same_adapters(*two)
    # Adam's first step is lr * g / (|g| + eps): blind to the gradient's scale, so compare the
    # reduced gradient's norms too (DeepSpeed's, before clipping, against torch's)
    two_metrics, one_metrics = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("two", "one"))
    for key in ["train/grad_norm", *(k for k in one_metrics if k.endswith("/grad_norm"))]:
        assert two_metrics[key] == pytest.approx(one_metrics[key], rel=1e-5), key
    assert two_metrics["train/loss"] == pytest.approx(one_metrics["train/loss"], abs=1e-6)  # a sum near 0
    assert one_metrics["train/grad_norm"] > 0
    # ...and the weights after the step agree far below the step size (lr 3e-4). Not closer: Adam's
    # first step is lr * g / (|g| + eps), so an element whose gradient is near eps moves by a share
    # of lr that rounding decides (one element differed by 1.3e-5 with transformers 5.24)
    assert_same_adapters(two[0], one, atol=3e-5)
    # ...and the update did something: the weights moved away from their (shared) start
    launch("python", str(DRIVER), "update", str(tmp_path / "lr0"), *overrides, "train.lr=1e-12")
    (start,) = rank_states(tmp_path / "lr0" / "ranks", 1)
    with pytest.raises(AssertionError):
        assert_same_adapters(one, start, atol=1e-4)


def test_growth_under_two_processes_keeps_ranks_identical(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    stages = "[{topology: {widths: [1]}, steps: 2}, {topology: {widths: [2, 1]}, steps: 2}]"
    launch("torchrun", *train_args(tiny_model_dir, run_dir, **{"growth.stages": stages}))
    ranks = rank_states(run_dir / "ranks")
    assert sorted(ranks[0]) == ["L0N0", "L0N1", "L1N0"]
    assert_same_adapters(*ranks)
    parent = load_file(run_dir / "checkpoints" / "stage_0" / "adapters" / "L0N0" / "adapter_model.safetensors")
    for new_node in ("L0N0", "L0N1"):  # copies of the parent, then trained by the rebuilt engine
        assert any(not torch.equal(v, parent[k]) for k, v in ranks[0][new_node].items()), new_node
    steps = [m for m in metrics(run_dir) if "train/loss" in m]
    assert [m["growth/stage"] for m in steps] == [0, 0, 1, 1]
    assert all(math.isfinite(m["train/loss"]) for m in steps) and any(m["train/grad_norm"] > 0 for m in steps[2:])


@pytest.mark.parametrize("deepspeed", ["zero2", "zero2-offload"])
def test_resume_under_two_processes_repeats_the_same_steps(tiny_model_dir, tmp_path, deepspeed):
    """Resume a finished run from its step 1: the optimizer state (gathered from the ZeRO
    partitions by name; with offload, from DeepSpeed's CPU Adam) and every rank's RNG come
    back, so step 2 repeats exactly."""
    run_dir = tmp_path / "run"
    launch("torchrun", *train_args(tiny_model_dir, run_dir, **{"distributed.deepspeed": deepspeed}))
    first = [m for m in metrics(run_dir) if m["step"] == 2 and "train/loss" in m][0]
    final = rank_states(run_dir / "ranks")[0]
    shutil.rmtree(run_dir / "checkpoints" / "step_2")
    launch("torchrun", *train_args(tiny_model_dir, run_dir, **{"distributed.deepspeed": deepspeed}),
           f"--resume={run_dir}")
    again = [m for m in metrics(run_dir) if m["step"] == 2 and "train/loss" in m]
    assert len(again) == 1
    for key in ("reward/mean", "train/loss", "train/grad_norm", "node/L1N0/msg_tokens"):
        assert again[0][key] == pytest.approx(first[key], abs=1e-6), key
    resumed = rank_states(run_dir / "ranks")
    assert_same_adapters(*resumed)
    assert_same_adapters(resumed[0], final, atol=1e-7)  # step 2 needed the restored Adam moments


def test_shipped_deepspeed_configs_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: the configs come with the package
    assert resolve_deepspeed_config("zero0", World(), TrainConfig())["zero_optimization"]["stage"] == 0
    own = tmp_path / "configs" / "deepspeed"
    own.mkdir(parents=True)
    (own / "zero0.json").write_text('{"zero_optimization": {"stage": 1}}')
    assert resolve_deepspeed_config("zero0", World(), TrainConfig())["zero_optimization"]["stage"] == 1  # yours first


def test_deepspeed_config_names_resolve_and_bad_ones_fail_in_one_line(tmp_path):
    config = resolve_deepspeed_config("zero2", World(0, 2), TrainConfig(micro_batch_size=4, max_grad_norm=0.5))
    assert config["zero_optimization"]["stage"] == 2 and config["train_batch_size"] == 8
    assert config["gradient_clipping"] == 0.5 and config["bf16"]["enabled"] is torch.cuda.is_available()
    assert resolve_deepspeed_config("zero2", World(), TrainConfig(), gpu=True)["bf16"]["enabled"] \
        is torch.cuda.is_bf16_supported(), "bf16 follows the model's device"
    assert resolve_deepspeed_config("zero2", World(), TrainConfig(), gpu=False)["bf16"]["enabled"] is False
    assert resolve_deepspeed_config(None, World(), TrainConfig()) is None  # one process: plain torch
    assert resolve_deepspeed_config(None, World(0, 2), TrainConfig())["zero_optimization"]["stage"] == 2
    offload = resolve_deepspeed_config("zero2-offload", World(), TrainConfig(lr=3e-4))
    assert offload["optimizer"]["params"]["lr"] == 3e-4
    with pytest.raises(ConfigError, match="no config named 'zero9'"):
        resolve_deepspeed_config("zero9", World(), TrainConfig())
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        resolve_deepspeed_config(str(bad), World(), TrainConfig())
    accumulate = tmp_path / "ga.json"
    accumulate.write_text('{"gradient_accumulation_steps": 4}')
    with pytest.raises(ConfigError, match="gradient_accumulation_steps"):
        resolve_deepspeed_config(str(accumulate), World(), TrainConfig())


def test_accelerate_launch_deepspeed_config_is_the_default(monkeypatch):
    zero0 = TESTS.parent / "neuromas" / "configs" / "deepspeed" / "zero0.json"
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(zero0))
    assert resolve_deepspeed_config(None, World(), TrainConfig())["zero_optimization"]["stage"] == 0
    assert resolve_deepspeed_config("zero2", World(), TrainConfig())["zero_optimization"]["stage"] == 2


def test_more_processes_than_gpus_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("RANK", "1"), monkeypatch.setenv("WORLD_SIZE", "2"), monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(NeuromasError, match=r"process 1 of this node has no GPU: the node has 1; .*nproc_per_node=1"):
        init_world(deepspeed_requested=False, on_gpu=True)


def test_uneven_batch_split_is_a_config_error():
    with pytest.raises(ConfigError, match="does not split evenly over 2 processes"):
        World(1, 2).shard([1, 2, 3])
    assert World(1, 2).shard([1, 2, 3, 4]) == [3, 4]


@pytest.mark.parametrize("script", ["torchrun.sh", "deepspeed.sh"])
def test_launch_scripts_run_the_cli_on_two_processes(tiny_model_dir, tmp_path, script):
    """The launch/ wrappers, as the README gives them; the trainer itself checks at every
    checkpoint that the ranks hold identical adapters, and stops if not."""
    run_dir = tmp_path / "run"
    # model.device=cpu: the deepspeed launcher sets CUDA_VISIBLE_DEVICES itself, so on a machine
    # with fewer GPUs than processes only the recipe keeps the run on CPU, as in CI.
    overrides = tiny_overrides(tiny_model_dir, run_dir, **{"checkpoint.every": 1, "train.questions_per_step": 4,
                                                           "model.device": "cpu"})
    done = launch("script", str(TESTS.parent / "launch" / script), "2", str(RECIPE), *overrides, VARYING_REWARD,
                  "--deepspeed", "zero2")
    assert done.stderr.count("neuromas: done") == 1 and "(2 processes)" in done.stderr
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_1", "step_2"]
    assert (run_dir / "adapters" / "L1N0" / "adapter_model.safetensors").is_file()
    assert [m["step"] for m in metrics(run_dir) if "train/loss" in m] == [1, 2]


def test_accelerate_launch_runs_the_cli_on_two_processes(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_model_dir, run_dir, **{"train.questions_per_step": 4})
    done = launch("accelerate", "-m", "neuromas", "train", str(RECIPE), *overrides, VARYING_REWARD)
    assert done.stderr.count("neuromas: done") == 1 and "(2 processes)" in done.stderr
    assert [m["step"] for m in metrics(run_dir) if "train/loss" in m] == [1, 2]


def test_launcher_with_a_bad_recipe_fails_in_one_line(tmp_path):
    done = subprocess.run(["bash", str(TESTS.parent / "launch" / "torchrun.sh"), "2", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                                      os.environ.get("PATH", "")])})
    assert done.returncode != 0
    assert "neuromas: error: recipe not found" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("script", ["torchrun.sh", "deepspeed.sh"])
def test_launcher_with_a_batch_that_does_not_split_fails_in_one_line(tiny_model_dir, tmp_path, script):
    """Caught by the launcher's dry run, which knows the process count, before any process starts."""
    overrides = tiny_overrides(tiny_model_dir, tmp_path / "run", **{"train.questions_per_step": 3})
    done = subprocess.run(["bash", str(TESTS.parent / "launch" / script), "2", str(RECIPE), *overrides],
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                                      os.environ.get("PATH", "")])})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("train.questions_per_step: 3 does not split evenly over 2 processes") == 1
    assert not (tmp_path / "run").exists()


def test_dry_run_refuses_textual_steps_on_several_processes(tmp_path, capsys):
    from neuromas.cli import main

    assert main(["train", str(RECIPE), "textual.every=2", "train.questions_per_step=4", "--dry-run",
                 "--processes", "2"]) == 2
    assert "textual steps run in one process" in capsys.readouterr().err
    assert main(["train", str(RECIPE), "train.questions_per_step=4", "--dry-run", "--processes", "2"]) == 0
