"""Checkpoints: ``step_N/`` directories written atomically (staged, then renamed).

A checkpoint holds one standard peft adapter directory per node (``adapters/<node_id>/``,
loadable by plain peft), the optimizer state, RNG states and ``trainer_state.json``. A crash
while writing leaves only a ``.tmp-*`` directory, never a ``step_N/`` that looks complete.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch

from neuromas.agents import Agents


def write_atomically(target: Path, fill) -> Path:
    """Call `fill(staging_dir)`, then rename the staging directory to `target`."""
    staging = target.parent / f".tmp-{target.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    fill(staging)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(directory: Path, step: int, agents: Agents, optimizer: torch.optim.Optimizer,
                    trainer_state: dict, keep_last: int) -> Path:
    def fill(staging: Path) -> None:
        agents.save(staging / "adapters")
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(rng_state(), staging / "rng.pt")
        (staging / "trainer_state.json").write_text(json.dumps({"step": step, **trainer_state}, indent=2))

    path = write_atomically(directory / f"step_{step}", fill)
    for old in sorted(directory.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-keep_last]:
        shutil.rmtree(old)
    return path
