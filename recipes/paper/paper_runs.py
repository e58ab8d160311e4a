"""Shared by the reproduction scripts in this folder: run a recipe once per seed (reusing
finished runs, so a script can be stopped and started again), read back its metrics, print a
Markdown table and draw the reward curves with `neuromas plot`."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(recipe: str, seed: int, out: Path, overrides: tuple[str, ...] = ()) -> dict:
    """Train `recipe` (a path under the repository) with `train.seed=seed` into out/<name>-seed<seed>."""
    run_dir = out / f"{Path(recipe).stem}-seed{seed}"
    if not (run_dir / "adapters").is_dir():
        shutil.rmtree(run_dir, ignore_errors=True)
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "neuromas", "train", recipe, f"train.seed={seed}", f"tracking.run_dir={run_dir}",
               *overrides]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        (run_dir / "wall_seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/accuracy" in r]
    rewards = [r["reward/mean"] for r in rows if "reward/mean" in r]
    return {"dir": run_dir, "seed": seed, "before": evals[0]["eval/accuracy"], "after": evals[-1]["eval/accuracy"],
            "reward_first": sum(rewards[:3]) / 3, "reward_last": sum(rewards[-3:]) / 3, "steps": len(rewards),
            "wall": float((run_dir / "wall_seconds.txt").read_text()), "questions": evals[-1]["eval/num_questions"]}


def report(results: dict[str, list[dict]], picture: str, command: str) -> None:
    """Print the table of `results` (system label -> one run per seed) and draw their reward curves."""
    import torch

    first = next(iter(results.values()))[0]
    print(f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}. "
          f"Greedy accuracy on {first['questions']:.0f} test questions.\n")
    print("| system | seed | steps | untrained accuracy | trained accuracy | sampled reward, first 3 steps "
          "| last 3 steps | wall time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, runs in results.items():
        for r in runs:
            print(f"| {label} | {r['seed']} | {r['steps']} | {r['before']:.3f} | {r['after']:.3f} | "
                  f"{r['reward_first']:.3f} | {r['reward_last']:.3f} | {r['wall'] / 60:.1f} min |")
    for label, runs in results.items():
        print(f"\nmean trained accuracy, {label}: {sum(r['after'] for r in runs) / len(runs):.3f}", end="")
    subprocess.run([sys.executable, "-m", "neuromas", "plot", *[str(r["dir"]) for runs in results.values() for r in runs],
                    "--out", str(ROOT / picture)], cwd=ROOT, check=True, capture_output=True)
    print(f"\n\nReward curves: {picture}\nCommand: {command}")
