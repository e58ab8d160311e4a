"""How the cost of a step grows with the system (issue 8, table 4): seconds per step for widths
[1], [2, 1], [4, 2, 1], [8, 4, 2, 1] on the same questions, samples and tokens per message.

    python benchmarks/scaling.py                  # quickstart settings, 2 steps per system
    python benchmarks/scaling.py --steps 3 -- train.questions_per_step=2

Prints a Markdown table; the ratios are to the 1-node system in the same run.
"""

from __future__ import annotations

import argparse
import platform
import sys

from common import median_after_first, train_run

SYSTEMS = ["[1]", "[2,1]", "[4,2,1]", "[8,4,2,1]"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--systems", nargs="+", default=SYSTEMS)
    parser.add_argument("overrides", nargs="*", help="recipe overrides (after --)")
    args = parser.parse_args()
    results = []
    for widths in args.systems:
        print(f"running {widths} ...", file=sys.stderr, flush=True)
        rows, _ = train_run(args.recipe, args.steps, [f"topology.widths={widths}", *args.overrides])
        nodes = sum(int(w) for w in widths.strip("[]").split(","))
        results.append((widths, nodes, {key: median_after_first(rows, key) for key in
                                        ("time/step", "time/rollout", "time/update", "rollout/tokens")}))
    import torch

    base = results[0][2]["time/step"]
    print(f"\nMachine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; recipe "
          f"{args.recipe} {' '.join(args.overrides)}; {args.steps} steps per system (median after the first).\n")
    print("| widths | nodes | s/step | rollout s | update s | generated tokens/step | s/step vs [1] "
          "| s/step per node |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for widths, nodes, r in results:
        print(f"| {widths} | {nodes} | {r['time/step']:.1f} | {r['time/rollout']:.1f} | {r['time/update']:.1f} | "
              f"{r['rollout/tokens']:.0f} | {r['time/step'] / base:.2f}x | {r['time/step'] / nodes:.1f} |")
    extra = (" -- " + " ".join(args.overrides)) if args.overrides else ""
    print(f"\nCommand: python benchmarks/scaling.py --steps {args.steps}{extra}")


if __name__ == "__main__":
    main()
