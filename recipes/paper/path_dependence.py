"""NeuroMAS claim 2 at small scale: the same 7-node system [4, 2, 1] trained from scratch vs
grown 1 -> 3 -> 7 (recipes/growth/), with the same total steps, on nested arithmetic with
operands 1..5 (the equal-budget task, which the untrained model sometimes solves).

    python recipes/paper/path_dependence.py              # seeds 0 and 1, runs in runs/paper/
    python recipes/paper/path_dependence.py --seeds 0 1 2

The untrained accuracy of the grown arm is that of its first stage, one node. Finished runs
are reused. Prints a Markdown table and draws the reward curves with `neuromas plot`.
"""

from __future__ import annotations

import argparse

from paper_runs import ROOT, report, run

SYSTEMS = {"[4, 2, 1] from scratch": "recipes/growth/scratch-7.yaml",
           "grown 1 -> 3 -> 7": "recipes/growth/grow-1-3-7.yaml"}
# The equal-budget task and test size, so the two reproductions read alike.
OVERRIDES = ("task.max_value=5", "task.num_test=48", "eval.num_questions=48", "tracking.transcripts_every=0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="runs/paper")
    args = parser.parse_args()
    results = {label: [run(recipe, seed, ROOT / args.out, OVERRIDES) for seed in args.seeds]
               for label, recipe in SYSTEMS.items()}
    report(results, "docs/images/path-dependence-curves.png",
           f"python recipes/paper/path_dependence.py --seeds {' '.join(map(str, args.seeds))}")


if __name__ == "__main__":
    main()
