"""NeuroMAS claim 1 at small scale: three nodes [2, 1] with LoRA rank r each vs one node with
rank 3r (the same trainable budget), same steps and samples, on nested arithmetic.

    python -m experiments.paper.equal_budget                 # seeds 0, 1 and 2, runs in runs/paper/
    python -m experiments.paper.equal_budget --seeds 3 4
    python -m experiments.paper.equal_budget --gpu --seeds 0 1 2   # recipes/paper/gpu/: a 1.5B model, 300 steps
    python -m experiments.paper.equal_budget --cutoff-penalty 0.2  # a third arm: three nodes with the penalty

Each run evaluates greedily before training (the untrained system), every 8 steps and after.
Finished runs are reused (their results are kept in experiments/paper/data/), so the script can be stopped
and started again. Prints a Markdown table and
draws the reward curves with `neuromas plot`.
"""

from __future__ import annotations

import argparse

from experiments.paper.runs import ROOT, report, run_all

SYSTEMS = {"three nodes [2, 1], rank 8 each": "equal-budget-three", "one node [1], rank 24": "equal-budget-single"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/paper")
    parser.add_argument("--gpu", action="store_true", help="the GPU protocol: recipes/paper/gpu/")
    parser.add_argument("--cutoff-penalty", type=float, metavar="C",
                        help="add a third arm: the three nodes with algorithm.cutoff_penalty=C (their messages ran "
                             "away to the token limit after growth, docs/results.md section 1)")
    args = parser.parse_args()
    folder = "recipes/paper/gpu" if args.gpu else "recipes/paper"
    systems = {label: f"{folder}/{recipe}.yaml" for label, recipe in SYSTEMS.items()}
    if args.cutoff_penalty is not None:
        penalty = f"{args.cutoff_penalty:g}"
        systems[f"three nodes, cutoff_penalty {penalty}"] = (
            f"{folder}/equal-budget-three.yaml", f"equal-budget-three-cutoff{penalty}",
            (f"algorithm.cutoff_penalty={penalty}",))
    results = run_all(systems, args.seeds, ROOT / args.out)
    report(results, f"docs/images/{'gpu-' if args.gpu else ''}equal-budget-curves.png",
           f"python -m experiments.paper.equal_budget {'--gpu ' if args.gpu else ''}"
           f"--seeds {' '.join(map(str, args.seeds))}"
           + (f" --cutoff-penalty {args.cutoff_penalty:g}" if args.cutoff_penalty is not None else ""))


if __name__ == "__main__":
    main()
