"""Shared by the experiment drivers: run a neuromas command once (a finished run is reused, so a
driver can be stopped and started again), and keep what a report is rebuilt from.

Each driver's kept data live in experiments/<driver>/data/<run>/: the run's evaluations with
every question's result, its metrics, its transcripts and its wall time and load.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEPT = ("evals.jsonl", "metrics.jsonl", "eval_transcripts.jsonl", "transcripts.jsonl", "config.yaml", "wall.json")


def neuromas(*args: str) -> None:
    """`python -m neuromas ARGS`, in the repository root; a failure stops the driver."""
    print(f"[{time.strftime('%H:%M:%S')}] neuromas {' '.join(args)}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "neuromas", *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def train(recipe: str, run_dir: Path, kept: Path | None, *overrides: str) -> Path:
    """Train `recipe` into `run_dir` unless a finished run is there (its final adapters saved), and
    copy what is kept to `kept`. Returns `run_dir`."""
    if not (run_dir / "adapters").is_dir():
        shutil.rmtree(run_dir, ignore_errors=True)
        start, load = time.perf_counter(), os.getloadavg()[0]
        neuromas("train", recipe, f"tracking.run_dir={run_dir}", *overrides)
        (run_dir / "wall.json").write_text(json.dumps({"wall_s": time.perf_counter() - start, "load_before": load,
                                                       "load_after": os.getloadavg()[0],
                                                       "overrides": list(overrides)}) + "\n")
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            if (run_dir / name).is_file():
                shutil.copy(run_dir / name, kept / name)
    return run_dir


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def drive(doc: str, module: str, run_seed, report, data: Path, steps: int, out: str) -> None:
    """A driver's command line: `--seeds`, `--steps`, `--out`, and `--report` (only the report from
    the kept data in `data`). `run_seed(seed, out_dir, steps)` trains what is missing for one seed;
    `report(data, command)` returns the report's text."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=steps, help="training steps of each arm")
    parser.add_argument("--out", default=out, help="where the runs are trained")
    parser.add_argument("--report", action="store_true", help="only print the report from the kept data")
    args = parser.parse_args()
    if not args.report:
        data.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            run_seed(seed, ROOT / args.out, args.steps)
    print(report(data, f"python -m {module} --seeds " + " ".join(map(str, args.seeds))))
