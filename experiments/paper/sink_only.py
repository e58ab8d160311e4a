"""Diagnosis probe: train only the answering node of a [2, 1] system (the first layer's adapters
stay at the base, `train.frozen_nodes`) to see whether the first layer's drift or the sink's noisy
inputs hold the system back (docs/results.md, "Training that learns").

    python -m experiments.paper.sink_only runs/sink-only train.lr=2e-3 rollout.temperature=0.5 train.steps=12 \\
        eval.every=6

Takes a run directory and overrides of recipes/quickstart.yaml (run as a plain [2, 1] system).
The same run from the command line:

    neuromas train recipes/quickstart.yaml growth.stages=[] topology.widths=[2,1] \\
        "train.frozen_nodes=[L0N0,L0N1]" tracking.run_dir=RUN ...
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    run_dir, overrides = sys.argv[1], sys.argv[2:]
    subprocess.run([sys.executable, "-m", "neuromas", "train", "recipes/quickstart.yaml", "growth.stages=[]",
                    "topology.widths=[2,1]", "train.frozen_nodes=[L0N0,L0N1]", f"tracking.run_dir={run_dir}",
                    *overrides], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
