"""Do the agents use each other? Split arithmetic, where they must.

Per seed: one node is trained on one-operator arithmetic (parent.yaml); from it, (a) the [2, 1]
system grown by copy trains on split arithmetic with per-node views (views.yaml: the answering
node is given only "Compute X op Y"), and (b) the parent alone trains on the same task given the
whole question (single.yaml). Both evaluate greedily on the same 100 test questions before and
after, the system also with its messages emptied and shuffled (real - ablated: how much it uses
them). Seeds vary the training question stream too (task.stream_seed). Then, on the same
questions, the trained single node's compute-matched baselines (the [2, 1] system makes 3 calls of
at most 40 tokens): a majority vote over 3 samples, and one reply given 120 tokens; and, for the
trained system, the share of answers that change with its messages replaced (kept for seeds whose
run did not log it).

    python -m experiments.communication.split_views --seeds 0 1 2      # trains what is missing, then reports
    python -m experiments.communication.split_views --report            # the report from the kept data alone
"""

from __future__ import annotations

import shutil
from pathlib import Path

from experiments.runner import drive, neuromas, train

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"


def run_seed(seed: int, out: Path, steps: int) -> None:
    common = [f"train.seed={seed}", f"task.stream_seed={seed}"]
    parent = train("experiments/communication/parent.yaml", out / f"parent-seed{seed}", None, *common)
    grown = out / f"grown-seed{seed}"
    if not (grown / "config.yaml").is_file():
        neuromas("grow", str(parent), "--widths", "2,1", "--init", "copy", "--out", str(grown))
    arm_steps = [f"train.steps={steps}"]
    train("experiments/communication/views.yaml", out / f"views-seed{seed}", DATA / f"views-seed{seed}",
          f"train.init_from={grown}", *common, *arm_steps)
    single = train("experiments/communication/single.yaml", out / f"single-seed{seed}", DATA / f"single-seed{seed}",
                   f"train.init_from={parent / 'adapters'}", *common, *arm_steps)
    for name, flags in (("vote", ["--vote", "3"]), ("tokens", ["--max-new-tokens", "120"])):
        keep(single, f"matched-{name}.json", DATA / f"single-seed{seed}", *flags)
    views = out / f"views-seed{seed}"
    if not any("eval/changed_shuffled" in line for line in (views / "metrics.jsonl").read_text().splitlines()):
        keep(views, "eval-messages.json", DATA / f"views-seed{seed}", "--messages", "empty,shuffled")


def keep(run: Path, name: str, kept: Path, *flags: str) -> None:
    """`neuromas eval RUN FLAGS` on the 100 test questions, kept as `kept/name` (once)."""
    if not (kept / name).is_file():
        neuromas("eval", str(run), *flags, "--questions", "100", "--out", str(run / name))
        shutil.copy(run / name, kept / name)


def main() -> None:
    from experiments.communication.report import report

    drive(__doc__, "experiments.communication.split_views", run_seed, report, DATA, steps=16, out="runs/communication")


if __name__ == "__main__":
    main()
