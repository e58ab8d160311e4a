"""NeuroMAS claim 1 at small scale: three nodes [2, 1] with LoRA rank r each vs one node with
rank 3r (the same trainable budget), same steps and samples, on nested arithmetic.

    python recipes/paper/equal_budget.py                 # seeds 0 and 1, runs in runs/paper/
    python recipes/paper/equal_budget.py --seeds 0 1 2

Each run evaluates greedily before training (the untrained system) and after. Finished runs
are reused, so the script can be stopped and started again. Prints a Markdown table and
draws the reward curves with `neuromas plot`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = {"three nodes [2, 1], rank 8 each": "equal-budget-three", "one node [1], rank 24": "equal-budget-single"}


def run(recipe: str, seed: int, out: Path) -> dict:
    run_dir = out / f"{recipe}-seed{seed}"
    if not (run_dir / "adapters").is_dir():
        if run_dir.exists():
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "neuromas", "train", f"recipes/paper/{recipe}.yaml", f"train.seed={seed}",
               f"tracking.run_dir={run_dir}"]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        (run_dir / "wall_seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/accuracy" in r]
    rewards = [r["reward/mean"] for r in rows if "reward/mean" in r]
    return {"dir": run_dir, "before": evals[0]["eval/accuracy"], "after": evals[-1]["eval/accuracy"],
            "reward_first": sum(rewards[:3]) / 3, "reward_last": sum(rewards[-3:]) / 3,
            "wall": float((run_dir / "wall_seconds.txt").read_text()), "questions": evals[-1]["eval/num_questions"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="runs/paper")
    args = parser.parse_args()
    out = ROOT / args.out
    results = {label: [run(recipe, seed, out) for seed in args.seeds] for label, recipe in SYSTEMS.items()}
    import torch

    print(f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}. "
          f"Seeds {args.seeds}; greedy accuracy on {results[next(iter(results))][0]['questions']:.0f} test questions.\n")
    print("| system | seed | untrained accuracy | trained accuracy | sampled reward, first 3 steps | last 3 steps | wall time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, runs in results.items():
        for seed, r in zip(args.seeds, runs):
            print(f"| {label} | {seed} | {r['before']:.3f} | {r['after']:.3f} | {r['reward_first']:.3f} | "
                  f"{r['reward_last']:.3f} | {r['wall'] / 60:.1f} min |")
    for label, runs in results.items():
        mean = sum(r["after"] for r in runs) / len(runs)
        print(f"\nmean trained accuracy, {label}: {mean:.3f}", end="")
    picture = ROOT / "docs" / "images" / "equal-budget-curves.png"
    subprocess.run([sys.executable, "-m", "neuromas", "plot", *[str(r["dir"]) for runs in results.values() for r in runs],
                    "--out", str(picture)], cwd=ROOT, check=True, capture_output=True)
    print(f"\n\nReward curves: {picture.relative_to(ROOT)}")
    print(f"Command: python recipes/paper/equal_budget.py --seeds {' '.join(map(str, args.seeds))}")


if __name__ == "__main__":
    main()
