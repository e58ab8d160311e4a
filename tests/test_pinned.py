"""Pinned numbers: short training runs on the tiny model whose per-step losses, rewards and final
adapters were recorded (tests/data/pinned.json) and must come out bit for bit the same. They
guard refactors of the trainer: behaviour and every number stay the same.

The runs cover the stage machine (growth with a gate, validation, a stage checkpoint), credit by
attribution with a KL penalty in the reward, and branch credit with a running REINFORCE baseline.
Floating-point results can change with the torch build: the file records the torch version it
was made with, and another version is compared to 1e-5 instead of exactly. To record them anew
(only when a change is *meant* to alter the numbers, and say so in the commit):

    python tests/test_pinned.py
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
import transformers

from conftest import build_tiny_model, tiny_overrides
from neuromas.recipe import load_config
from neuromas.trainer import Trainer
from test_trainer import RECIPE, VARYING_REWARD

PINNED = Path(__file__).parent / "data" / "pinned.json"
GROWTH = "[{topology: {widths: [1]}, steps: 2}, {topology: {widths: [2, 1]}, steps: 3, init: copy, gate_steps: 2}]"
RUNS = {
    "growth-attribution-kl": {"growth.stages": GROWTH, "growth.margin": 0.5, "growth.validation_questions": 2,
                              "eval.every": 2, "algorithm.credit": "attribution", "algorithm.kl.coef": 0.05,
                              "algorithm.kl.applied_to": "reward", "checkpoint.every": 2},
    "branch-reinforce": {"train.steps": 3, "algorithm.credit": "branch", "algorithm.branch.samples": 2,
                         "algorithm.advantage": "reinforce", "algorithm.baseline_decay": 0.5},
}


def fingerprint(trainer: Trainer, history: list[dict]) -> dict:
    """What must not change: per-step loss and reward, and a hash of every adapter tensor."""
    adapters = {name: hashlib.sha256(p.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]
                for name, p in trainer.agents.model.named_parameters() if "lora_" in name}
    return {"loss": [m["train/loss"] for m in history], "reward": [m["reward/mean"] for m in history],
            "adapters": adapters, "topology": trainer.topology.widths}


def train(name: str, model_dir: Path, run_dir: Path) -> dict:
    overrides = tiny_overrides(model_dir, run_dir, **{"rollout.samples_per_question": 3, **RUNS[name]})
    cfg = load_config(RECIPE, [*overrides, VARYING_REWARD])
    trainer = Trainer(cfg, run_dir)
    return fingerprint(trainer, trainer.fit())


@pytest.mark.parametrize("name", RUNS)
def test_numbers_are_the_pinned_ones(tiny_model_dir, tmp_path, name):
    got = train(name, tiny_model_dir, tmp_path / "run")
    pinned = json.loads(PINNED.read_text())
    want = pinned[name]
    assert got["topology"] == want["topology"]
    if pinned["torch"] == torch.__version__ and pinned["transformers"] == transformers.__version__:
        assert got == want  # bit for bit: every float and every adapter byte
    else:  # another build may round differently: the numbers must still agree closely
        for key in ("loss", "reward"):
            assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(got[key], want[key], strict=True))


def record() -> None:
    """Record every run's numbers anew into tests/data/pinned.json."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "tiny-llama")  # as the session fixture builds it
        pinned = {"torch": torch.__version__, "transformers": transformers.__version__}
        pinned.update({name: train(name, model_dir, Path(tmp) / name) for name in RUNS})
    PINNED.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
    print(f"recorded {', '.join(RUNS)} in {PINNED}")


if __name__ == "__main__":
    record()
