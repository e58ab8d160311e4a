"""What the benchmark scripts share: a training run in a subprocess, and its step metrics."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_run(recipe: str, steps: int, overrides: list[str], processes: int = 1, deepspeed: str | None = None,
              cores: int | None = None) -> tuple[list[dict], float]:
    """`neuromas train` on `processes` processes (torchrun when > 1) with eval, transcripts and
    checkpoints off; returns the per-step metrics and the wall time. The cores are split evenly
    between the processes."""
    cores = cores or os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="neuromas-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        args = [recipe, f"train.steps={steps}", "eval.num_questions=0", "tracking.transcripts_every=0",
                "checkpoint.every=0", f"tracking.run_dir={run_dir}", *overrides]
        if deepspeed:
            args += ["--deepspeed", deepspeed]
        launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                              str(processes)]
        cmd = [sys.executable, *launcher, "-m", "neuromas", "train", *args]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes))}
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"benchmark run failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "time/step" in r], wall


def median_after_first(steps: list[dict], key: str) -> float:
    """The median of `key` over the steps after the first (which pays one-time costs)."""
    later = steps[1:] or steps
    return statistics.median(r[key] for r in later)
