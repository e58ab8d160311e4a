"""Issue 17's comparison on the built-in model: LoRA-RL alone, ANN's textual backward pass
alone, and both in one run; and GBC's connection weights as credit, neuromas' objective against
AgentChord's. Every arm starts from the quickstart (recipes/quickstart.yaml: arithmetic, one node
grown into [2, 1]) and is scored on the same 64 test questions.

    python -m experiments.ann.compare                 # seeds 0, 1 and 2, runs in runs/ann/
    python -m experiments.ann.compare --seeds 3
    python -m experiments.ann.compare --seeds 0 --arms 1 3   # LoRA-RL and both

At about equal wall time: a textual step costs several policy-gradient steps (three optimiser
calls and two greedy passes over the validation questions). In the first pilot (docs/results.md,
section 3) one took 75-83 s with 16 validation questions, beside another run; a quickstart
step of [2, 1] takes about 16 s alone. So the text-alone arm has 4 steps of the [2, 1] system
against the others' 24 (16 of [1], 8 of [2, 1]); each run's wall time is in the table.
Finished runs are reused (experiments/ann/data/).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.paper.runs import ROOT, add_arms_argument, chosen, report, run_all

DATA = Path(__file__).resolve().parent / "data"

QUICKSTART = "recipes/quickstart.yaml"
SYSTEMS = {
    "LoRA-RL": (QUICKSTART, "ann-lora", ()),
    "text alone (4 textual steps)": (QUICKSTART, "ann-text", ("growth.stages=[]", "topology.widths=[2,1]",
                                                               "train.steps=4", "textual.only=true")),
    "LoRA-RL + text every 8 steps": (QUICKSTART, "ann-both", ("textual.every=8",)),
    "LoRA-RL, attribution credit (logprob)": (QUICKSTART, "ann-attr-logprob", ("algorithm.credit=attribution",)),
    "LoRA-RL, attribution credit (squared_logits)": (QUICKSTART, "ann-attr-squared",
                                                     ("algorithm.credit=attribution",
                                                      "algorithm.attribution.objective=squared_logits")),
}
OVERRIDES = ("textual.validation_questions=32", "tracking.transcripts_every=0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/ann")
    add_arms_argument(parser, SYSTEMS)
    args = parser.parse_args()
    results = run_all(chosen(SYSTEMS, args.arms), args.seeds, ROOT / args.out, OVERRIDES, DATA)
    report(results, "docs/images/ann-compare-curves.png",
           f"python -m experiments.ann.compare --seeds {' '.join(map(str, args.seeds))}"
           + (f" --arms {' '.join(map(str, args.arms))}" if args.arms else ""))


if __name__ == "__main__":
    main()
