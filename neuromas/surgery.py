"""`neuromas grow`: grow a saved system by hand, outside a training run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from neuromas import checkpoint as ckpt
from neuromas.config import StageConfig
from neuromas.recipe import load_config, save_config
from neuromas.checkpoint import load_system
from neuromas.topology import Topology


def grow_saved_system(source: Path, widths: list[int], init: str, connectivity: str | None, noise: float,
                      gate_steps: int, out: Path | None) -> Path:
    cfg = load_config(ckpt.find_system(source)[1])
    saved = cfg.stages()[-1].topology  # the saved system's: its last stage's
    grown_cfg = replace(saved, widths=widths, connectivity=connectivity or saved.connectivity)
    new = Topology.from_config(grown_cfg)
    system, _, directory = load_system(source, all_node_ids=new.node_ids)
    grown, plan = system.grow(new, init, noise)
    out = out or source / f"grown-{'-'.join(map(str, widths))}"
    ckpt.save_adapters(out, grown.agents, {"step": 0, "topology": new.to_dict(), "new_nodes": plan.new_nodes,
                                           "grown_from": str(directory), "old_to_new": plan.old_to_new, "init": init},
                       grown.texts)
    # The recipe to go on with: same settings, the grown topology, these adapters as the start.
    cfg.name, cfg.tracking.run_dir, cfg.train.init_from = f"{cfg.name}-grown", None, str(out)
    cfg.growth.stages = [StageConfig(topology=grown_cfg, steps=cfg.total_steps, gate_steps=gate_steps)]
    save_config(cfg, out / "config.yaml")
    print(f"grew {system.topology.widths} -> {new.widths}: {plan.describe()}")
    return out
