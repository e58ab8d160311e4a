"""NeuroMAS claim 2 at small scale: the same 7-node system [4, 2, 1] trained from scratch vs
grown 1 -> 3 -> 7 (recipes/growth/), 24 steps each, on the quickstart's arithmetic and settings
(where one node and the grown [2, 1] learn), 100 test questions evaluated before and after.

    python -m experiments.paper.path_dependence              # seeds 0, 1 and 2, runs in runs/paper/
    python -m experiments.paper.path_dependence --seeds 3 4
    python -m experiments.paper.path_dependence --seeds 0 --arms 2   # the grown arm alone
    python -m experiments.paper.path_dependence --gpu --seeds 0 1 2   # recipes/paper/gpu/: a 1.5B model
    python -m experiments.paper.path_dependence --arms 2 3 \
        --grown-with growth.stages.1.init=zero growth.stages.2.init=zero
        # the grown arm against a variant of it: here, new nodes start as the base model

The untrained accuracy of the grown arm is that of its first stage, one node. Finished runs
are reused (their results are kept in experiments/paper/data/). Prints a Markdown table and draws the
reward curves with a band over seeds.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from experiments.paper.runs import ROOT, add_arms_argument, chosen, report, run_all

SYSTEMS = {"[4, 2, 1] from scratch": "recipes/growth/scratch-7.yaml",
           "grown 1 -> 3 -> 7": "recipes/growth/grow-1-3-7.yaml"}
GPU_SYSTEMS = {"[4, 2, 1] from scratch": "recipes/paper/gpu/scratch-7.yaml",
               "grown 1 -> 3 -> 7": "recipes/paper/gpu/grow-1-3-7.yaml"}
# The equal-budget test size. Evaluated before and after only: 100 questions through [4, 2, 1]
# take 6-8 minutes on 2 cores.
OVERRIDES = ("task.num_test=100", "eval.num_questions=100", "eval.every=0", "tracking.transcripts_every=0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/paper")
    parser.add_argument("--gpu", action="store_true", help="the GPU protocol: recipes/paper/gpu/")
    parser.add_argument("--grown-with", nargs="+", metavar="KEY=VALUE",
                        help="add a third arm: the grown system with these overrides (algorithm.cutoff_penalty=0.2)")
    add_arms_argument(parser, {**SYSTEMS, "grown, with --grown-with": None})
    args = parser.parse_args()
    systems = dict(GPU_SYSTEMS if args.gpu else SYSTEMS)
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", "-".join(args.grown_with or []))
    if args.grown_with:
        grown = systems["grown 1 -> 3 -> 7"]
        systems[f"grown 1 -> 3 -> 7, {' '.join(args.grown_with)}"] = (grown, f"{Path(grown).stem}-{slug}",
                                                                     tuple(args.grown_with))
    elif args.arms and 3 in args.arms:
        parser.error("--arms 3 is the grown system with overrides: give --grown-with KEY=VALUE [KEY=VALUE ...]")
    systems = chosen(systems, args.arms)
    results = run_all(systems, args.seeds, ROOT / args.out, () if args.gpu else OVERRIDES)
    # A subset of the arms, or a variant, gets its own picture beside the main one.
    picture = f"{'gpu-' if args.gpu else ''}path-dependence-curves" + (
        f"-arms{''.join(map(str, args.arms))}" if args.arms else "") + (f"-{slug}" if slug else "")
    report(results, f"docs/images/{picture}.png",
           f"python -m experiments.paper.path_dependence {'--gpu ' if args.gpu else ''}"
           f"--seeds {' '.join(map(str, args.seeds))}"
           + (f" --arms {' '.join(map(str, args.arms))}" if args.arms else "")
           + (f" --grown-with {' '.join(args.grown_with)}" if args.grown_with else ""))


if __name__ == "__main__":
    main()
