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
import os
import platform
import sys

from common import median_after_first, train_run


def run(processes: int, deepspeed: str | None, recipe: str, steps: int, overrides: list[str], cores: int) -> dict:
    rows, wall = train_run(recipe, steps, overrides, processes, deepspeed, cores)
    step, tokens = median_after_first(rows, "time/step"), median_after_first(rows, "rollout/tokens")
    return {"step_s": step, "tokens": tokens, "tokens_per_s": tokens / step, "wall_s": wall,
            "rollout_s": median_after_first(rows, "time/rollout"), "update_s": median_after_first(rows, "time/update")}


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
