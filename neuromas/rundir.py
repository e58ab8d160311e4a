"""The run directory before any model loads: which directory a run writes to, whether it holds
work that must not be overwritten, what a resume continues with, and the lock that keeps two
processes out of one directory. No torch: every answer here comes in well under a second."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from neuromas.config import Config
from neuromas.recipe import load_config, to_dict
from neuromas.errors import NeuromasError

STATE_FILE = "trainer_state.json"  # as neuromas.checkpoint writes it
STALE = ("metrics.jsonl", "evals.jsonl", "eval_transcripts.jsonl", "transcripts.jsonl", "growth.jsonl",
         "textual.jsonl")
# Keys a resume may change: how long it trains on, what it measures, where and how it reports and
# keeps checkpoints; not what a step computes.
FREE_ON_RESUME = ("train.steps", "eval.", "tracking.", "checkpoint.")


def checkpoints(run_dir: Path) -> list[Path]:
    """The complete checkpoints of a run (a write cut short, .tmp-*, is none)."""
    return [p for p in (run_dir / "checkpoints").glob("*")
            if not p.name.startswith(".tmp-") and (p / STATE_FILE).is_file()]


def started(run_dir: Path) -> bool:
    """Whether `run_dir` holds work: a checkpoint, final adapters, or a logged training step. A
    run stopped during its step-0 evaluation holds none, and may be started again in place."""
    if checkpoints(run_dir) or (run_dir / "adapters" / STATE_FILE).is_file():
        return True
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return False
    for line in metrics.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) > 0:
                return True
        except json.JSONDecodeError:
            continue  # a torn line
    return False


def _start_again(run_dir: Path) -> None:
    for name in STALE:
        (run_dir / name).unlink(missing_ok=True)
    print(f"neuromas: {run_dir} stopped before its first step; starting it again", file=sys.stderr)


def new_run_dir(name: str, configured: str | None) -> Path:
    """The configured directory, or runs/<name>-<time>. A new run never overwrites work."""
    path = Path(configured) if configured else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if started(path):
        raise NeuromasError(f"{path} already holds a run; resume it with: neuromas train {path / 'config.yaml'} "
                            f"--resume {path}, or set tracking.run_dir=<new dir>")
    if (path / "metrics.jsonl").exists():
        _start_again(path)
    return path


def resumed_run_dir(resume: str) -> tuple[Path, bool]:
    """(the run directory, whether it has a checkpoint to resume from): a run that stopped before
    its first step has none and starts again; one that trained without checkpoints is an error."""
    path = Path(resume)
    if not (path / "config.yaml").is_file():
        raise NeuromasError(f"--resume: {resume} is not a run directory (no config.yaml)")
    if checkpoints(path):
        return path, True
    if started(path):
        raise NeuromasError(f"{path} has no checkpoint to resume from (set checkpoint.every to save them)")
    _start_again(path)
    return path, False


def resume_config(recipe: str, overrides: list[str], run_dir: Path) -> Config:
    """The config a resume continues with: the recipe and overrides given, which must match the
    run's own config.yaml in everything but `FREE_ON_RESUME` (else one line listing the keys)."""
    given = load_config(recipe, overrides)
    saved = load_config(run_dir / "config.yaml")
    differ = [k for k, v in _flat(to_dict(given)).items() if not k.startswith(FREE_ON_RESUME)
              and _flat(to_dict(saved)).get(k) != v]
    if differ:
        shown = ", ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
        raise NeuromasError(f"--resume: the recipe and overrides given differ from the run's config in {shown}; "
                            f"resume with the run's own: neuromas train {run_dir / 'config.yaml'} --resume {run_dir}")
    return given


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_writable(run_dir: Path) -> None:
    """That a run could write `run_dir` (for --dry-run): a file is made and removed in it, or in
    the nearest folder above it that exists."""
    existing = run_dir
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise NeuromasError(f"tracking.run_dir: cannot write to {run_dir} ({e.strerror or e})") from None


def lock_run_dir(run_dir: Path):
    """Create the run directory and hold an exclusive lock on it while this process trains, so a
    second run (or --resume) on the same directory stops at once. Rank 0 only (the others write
    nothing). The lock goes with the process, however it ends."""
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / "run.lock", "a+")
    except OSError as e:
        raise NeuromasError(f"tracking.run_dir: cannot write to {run_dir} ({e.strerror})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        raise NeuromasError(f"{run_dir} is in use by another neuromas process (pid {owner}); wait for it to "
                            "end, or set tracking.run_dir=<new dir>") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def saved_system(source: str | Path, what: str = "") -> Path:
    """`source` checked as a saved system (a finished run directory or a checkpoint) without
    loading anything; `what` names the argument in the error."""
    path = Path(source)
    if not ((path / STATE_FILE).is_file() or (path / "adapters" / STATE_FILE).is_file()):
        raise NeuromasError(f"{what + ': ' if what else ''}{source} is neither a finished run directory nor a "
                            "checkpoint")
    return path


def result_path(source: Path, name: str) -> Path:
    """Where a command writes its result about `source`: in the run directory, and for a
    checkpoint of a run beside the run with the checkpoint's name in front (never inside a
    checkpoint, which pruning deletes)."""
    if source.parent.name == "checkpoints":
        return source.parent.parent / f"{source.name}-{name}"
    return source / name
