"""The settings that decide whether a run gets a learning signal, swept on the built-in model.

The base is the quickstart's first growth stage: one node trained on its arithmetic (that stage
is where the quickstart's learning starts; a [2, 1] step costs three times as much). Each arm
changes one setting of the base and trains for the same steps on the same questions. Per arm:
greedy test accuracy before and after (with standard errors), their paired difference, the
sampled reward over the first and last steps, the share of rows with a non-zero advantage (the
rows that carry a gradient), and seconds per step.

    python -m experiments.paper.sweep                         # every arm, seed 0, into runs/sweep/
    python -m experiments.paper.sweep --arms base lr=3e-4 --seeds 0 1 --steps 16

Finished runs are reused, so the sweep can be stopped and started again. The machine's load
average is printed beside each run: two heavy jobs on 2 cores slow each other several times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from neuromas.stats import Accuracy, paired_difference

ROOT = Path(__file__).resolve().parents[2]

RECIPE = "recipes/quickstart.yaml"
BASE = ["growth.stages=[]", "topology.widths=[1]"]  # the quickstart's first stage, run on its own
# label -> overrides of the base; each arm changes one setting. Ordered by what we expect to matter most.
ARMS = {
    "base": [],
    "lr=3e-4": ["train.lr=3e-4"],
    "lr=1e-3": ["train.lr=1e-3"],
    "lr=1e-2": ["train.lr=1e-2"],
    "temperature=0.3": ["rollout.temperature=0.3"],
    "temperature=1.0": ["rollout.temperature=1.0"],
    "samples=8, questions=2": ["rollout.samples_per_question=8", "train.questions_per_step=2"],
    "advantage=grpo": ["algorithm.advantage=grpo"],
    "advantage=dr_grpo": ["algorithm.advantage=dr_grpo", "algorithm.loss_agg=token"],
    "lora on all 30 layers": ["agents.lora.top_layers=null"],
    "lora rank 32": ["agents.lora.rank=32", "agents.lora.alpha=64"],
    "lora on q, v only": ["agents.lora.target_modules=[q_proj,v_proj]"],
    "max_new_tokens=64": ["rollout.max_new_tokens=64"],
}


def run_arm(label: str, seed: int, steps: int, questions: int, out: Path) -> Path:
    run_dir = out / f"{label.replace(' ', '_').replace(',', '')}-seed{seed}"
    if (run_dir / "adapters").is_dir():
        return run_dir
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    cmd = [sys.executable, "-m", "neuromas", "train", RECIPE, *BASE, *ARMS[label], f"train.seed={seed}",
           f"train.steps={steps}", f"eval.num_questions={questions}", f"tracking.run_dir={run_dir}",
           "tracking.transcripts_every=0", "tracking.backend=jsonl"]
    print(f"[{time.strftime('%H:%M:%S')}] {label} seed {seed}: {' '.join(cmd[3:])}", file=sys.stderr)
    start, load = time.perf_counter(), os.getloadavg()[0]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    (run_dir / "sweep.json").write_text(json.dumps({"wall_s": wall, "load_before": load,
                                                    "load_after": os.getloadavg()[0]}) + "\n")
    return run_dir


def summarise(run_dir: Path) -> dict:
    evals = [json.loads(line) for line in (run_dir / "evals.jsonl").read_text().splitlines()]
    before, after = Accuracy.of(evals[0]["correct"]), Accuracy.of(evals[-1]["correct"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    signal = [r["train/rows_updated"] / r["rollout/messages"] for r in steps]
    rewards = [r["reward/mean"] for r in steps]
    return {"before": before, "after": after, "change": paired_difference(before, after),
            "reward_first": statistics.mean(rewards[:3]), "reward_last": statistics.mean(rewards[-3:]),
            "signal": statistics.mean(signal), "s_per_step": statistics.median(r["time/step"] for r in steps[1:]),
            **json.loads((run_dir / "sweep.json").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), metavar="ARM")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--questions", type=int, default=64, help="greedy test questions before and after")
    parser.add_argument("--out", default="runs/sweep")
    args = parser.parse_args()
    print(f"{args.steps} steps of one node from {RECIPE} ({' '.join(BASE)}); greedy accuracy on "
          f"{args.questions} test questions, before -> after; change = paired difference ± its standard error.\n")
    print("| arm | seed | before | after | change | sampled reward, first 3 / last 3 steps | rows with signal "
          "| s/step | wall | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label in args.arms:
        for seed in args.seeds:
            s = summarise(run_arm(label, seed, args.steps, args.questions, ROOT / args.out))
            print(f"| {label} | {seed} | {s['before'].mean:.3f} ± {s['before'].se:.3f} | {s['after'].mean:.3f} ± "
                  f"{s['after'].se:.3f} | {s['change'].difference:+.3f} ± {s['change'].se:.3f} | "
                  f"{s['reward_first']:.2f} / {s['reward_last']:.2f} | {s['signal']:.0%} | {s['s_per_step']:.0f} | "
                  f"{s['wall_s'] / 60:.1f} min | {s['load_before']:.1f} -> {s['load_after']:.1f} |", flush=True)
    print(f"\nCommand: python -m experiments.paper.sweep --arms {' '.join(repr(a) for a in args.arms)} "
          f"--seeds {' '.join(map(str, args.seeds))} --steps {args.steps} --questions {args.questions}")


if __name__ == "__main__":
    main()
