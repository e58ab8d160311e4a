"""Step time and generated tokens per second: 1 process vs N processes (data parallel, DeepSpeed).

Every row trains the same recipe with the same global batch (questions_per_step x samples),
so a faster row is the same work done sooner. The CPU cores are split evenly between the
processes of a row (OMP_NUM_THREADS). Times are medians over the steps after the first.

    python benchmarks/distributed_step.py                      # quickstart recipe, SmolLM2-135M
    python benchmarks/distributed_step.py --steps 4 --processes 1 2 4 -- train.questions_per_step=8

Prints a Markdown table; quote ratios from one run, not absolute times (machines are shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(processes: int, deepspeed: str | None, recipe: str, steps: int, overrides: list[str], cores: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="neuromas-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        args = [recipe, f"train.steps={steps}", "eval.num_questions=0", "tracking.transcripts_every=0",
                "checkpoint.every=0", f"tracking.run_dir={run_dir}", *overrides]
        if deepspeed:
            args += ["--deepspeed", deepspeed]
        if processes == 1:
            cmd = [sys.executable, "-m", "neuromas", "train", *args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   "-m", "neuromas", "train", *args]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes))}
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"benchmark run failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps_logged = [r for r in rows if "time/step" in r][1:] or [r for r in rows if "time/step" in r]
    step = statistics.median(r["time/step"] for r in steps_logged)
    tokens = statistics.median(r["rollout/tokens"] for r in steps_logged)
    return {"step_s": step, "tokens": tokens, "tokens_per_s": tokens / step, "wall_s": wall,
            "rollout_s": statistics.median(r["time/rollout"] for r in steps_logged),
            "update_s": statistics.median(r["time/update"] for r in steps_logged)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("overrides", nargs="*", help="recipe overrides (after --)")
    args = parser.parse_args()
    configs = [(1, None, "torch AdamW, no DeepSpeed")]
    configs += [(p, "zero2", "DeepSpeed ZeRO-2") for p in args.processes]
    results = []
    for processes, deepspeed, label in configs:
        print(f"running {processes} process(es), {label} ...", file=sys.stderr, flush=True)
        results.append((processes, label, run(processes, deepspeed, args.recipe, args.steps, args.overrides,
                                              args.cores)))
    base = results[0][2]["step_s"]
    import torch

    print(f"\nMachine: {platform.machine()}, {args.cores} CPU cores, torch {torch.__version__}, "
          f"python {platform.python_version()}; recipe {args.recipe}, {args.steps} steps per row "
          f"(median of steps 2..{args.steps}).\n")
    print("| processes | optimizer | s/step | rollout s | update s | tokens/step | tokens/s | step time vs 1 process |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for processes, label, r in results:
        print(f"| {processes} | {label} | {r['step_s']:.1f} | {r['rollout_s']:.1f} | {r['update_s']:.1f} | "
              f"{r['tokens']:.0f} | {r['tokens_per_s']:.1f} | {r['step_s'] / base:.2f}x |")
    extra = (" -- " + " ".join(args.overrides)) if args.overrides else ""
    print(f"\nCommand: python benchmarks/distributed_step.py --steps {args.steps} "
          f"--processes {' '.join(map(str, args.processes))}{extra}")


if __name__ == "__main__":
    main()
