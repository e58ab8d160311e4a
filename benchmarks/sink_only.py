"""Diagnosis probe: train only the answering node of a [2, 1] system (the first layer's adapters
frozen at the base) to see whether the first layer's drift or the sink's noisy inputs hold the
system back (docs/results.md, "Training that learns").

    python benchmarks/sink_only.py runs/sink-only train.lr=2e-3 rollout.temperature=0.5 train.steps=12 eval.every=6

Takes a run directory and overrides of recipes/quickstart.yaml (run as a plain [2, 1] system).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuromas import update  # noqa: E402
from neuromas.recipe import load_config  # noqa: E402
from neuromas.trainer import Trainer  # noqa: E402


def main() -> None:
    run_dir = Path(sys.argv[1])
    cfg = load_config(ROOT / "recipes" / "quickstart.yaml", ["growth.stages=[]", "topology.widths=[2,1]",
                                                             f"tracking.run_dir={run_dir}", *sys.argv[2:]])
    trainer = Trainer(cfg, run_dir)
    sink = trainer.topology.sink.id
    for node_id in trainer.topology.node_ids:
        if node_id != sink:
            for param in trainer.agents.parameters(node_id):
                param.requires_grad_(False)
    every_message = update.trainable
    update.trainable = lambda episodes: [m for m in every_message(episodes) if m.node_id == sink]
    trainer.fit()


if __name__ == "__main__":
    main()
