"""The paper's chain on BBH Navigate, at 135M on CPU: NeuroMAS-3 against the single agent.

Per seed, both from the base model: NeuroMAS-3 (recipes/paper/protocol/neuromas-3.yaml, a chain
[1, 1, 1] at rank 8 per node) and the single agent at the same trainable parameters
(single-agent.yaml, one node at rank 24). Both evaluate greedily on the same test questions (100 for
seed 0, their first 50 after) before and after training; the chain also with its messages shuffled
(and emptied, seed 0). Then
the trained single agent's compute-matched baselines, paired with the trained chain in the report:
a majority vote over 3 samples (the chain makes 3 calls) and one reply given the chain's whole
token budget.
Seeds vary the training question stream too (task.stream_seed). The hyperparameters are the
protocol recipes' (lr from the arithmetic sweep); none was chosen on these test questions.

    python -m experiments.communication.navigate --seeds 0 1 2     # trains what is missing, then reports
    python -m experiments.communication.navigate --report           # the report from the kept data alone
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from experiments.runner import ROOT, neuromas, train

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "navigate"
PROTOCOL = "recipes/paper/protocol"


def run_seed(seed: int, out: Path, steps: int) -> None:
    common = [f"train.seed={seed}", f"task.stream_seed={seed}", f"train.steps={steps}", "eval.every=0"]
    # Seed 0 evaluates 100 questions with both ablations; a chain evaluation of that took 40 minutes on
    # 2 shared cores, so later seeds evaluate the first 50 of the same questions, shuffled only. The
    # report compares all seeds on those 50.
    evals = [] if seed == 0 else ["eval.num_questions=50"]
    ablations = "[empty,shuffled]" if seed == 0 else "[shuffled]"
    train(f"{PROTOCOL}/neuromas-3.yaml", out / f"chain-seed{seed}", DATA / f"chain-seed{seed}", *common, *evals,
          f"eval.ablations={ablations}")
    single = train(f"{PROTOCOL}/single-agent.yaml", out / f"single-seed{seed}", DATA / f"single-seed{seed}",
                   *common, *evals, "eval.ablations=[]")
    # The compute-matched baselines of the trained single agent, paired with the chain's last
    # evaluation by question id in the report: vote@3 (the chain makes 3 calls of 64 tokens) and
    # one reply of 192 tokens (the chain's whole budget).
    for name, flags in (("vote", ["--vote", "3"]), ("tokens", ["--max-new-tokens", "192"])):
        kept = DATA / f"single-seed{seed}" / f"matched-{name}.json"
        if not kept.is_file():
            made = single / f"matched-{name}.json"
            neuromas("eval", str(single), *flags, "--questions", "50", "--out", str(made))
            shutil.copy(made, kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=16, help="training steps of each arm")
    parser.add_argument("--out", default="runs/navigate", help="where the runs are trained")
    parser.add_argument("--report", action="store_true", help="only print the report from the kept data")
    args = parser.parse_args()
    if not args.report:
        for seed in args.seeds:
            run_seed(seed, ROOT / args.out, args.steps)
    from experiments.communication.navigate_report import report

    print(report(DATA, "python -m experiments.communication.navigate --seeds " + " ".join(map(str, args.seeds))))


if __name__ == "__main__":
    main()
