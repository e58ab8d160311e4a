"""`neuromas grow`: grow a saved system by hand, outside a training run."""

from __future__ import annotations

from pathlib import Path

from neuromas import checkpoint as ckpt
from neuromas.agents import Agents
from neuromas.config import StageConfig, load_config, save_config
from neuromas.errors import NeuromasError
from neuromas.growth import grow_agents, load_adapter_states, plan_growth
from neuromas.models import load_base_model
from neuromas.topology import Topology


def find_system(source: Path) -> tuple[Path, Path]:
    """(directory with trainer_state.json and the adapters, the run's config.yaml) for a run
    directory (its final adapters) or a checkpoint inside one."""
    system = ckpt.system_dir(source)
    for parent in (system, *system.parents[:3]):
        if (parent / "config.yaml").is_file():
            return system, parent / "config.yaml"
    raise NeuromasError(f"no config.yaml found above {system}")


def grow_saved_system(source: Path, widths: list[int], init: str, connectivity: str | None, noise: float,
                      gate_steps: int, out: Path | None) -> Path:
    system, config_path = find_system(source)
    cfg = load_config(config_path)
    state = ckpt.read_state(system)
    old = Topology.from_dict(state["topology"])
    cfg.topology.widths, cfg.topology.connectivity = widths, connectivity or cfg.topology.connectivity
    new = Topology.from_config(cfg.topology)
    plan = plan_growth(old, new)
    base, tokenizer = load_base_model(cfg.model)
    agents = Agents(base, tokenizer, cfg.agents, old.node_ids, new.node_ids)
    load_adapter_states(agents, ckpt.adapter_states_from(system, old.node_ids))
    grown = grow_agents(agents, plan, new.node_ids, init, noise)
    out = out or source / f"grown-{'-'.join(map(str, widths))}"
    ckpt.save_adapters(out, grown, {"step": 0, "topology": new.to_dict(), "new_nodes": plan.new_nodes,
                                    "grown_from": str(system), "old_to_new": plan.old_to_new, "init": init})
    # The recipe to go on with: same settings, the grown topology, these adapters as the start.
    cfg.name, cfg.tracking.run_dir, cfg.train.init_from = f"{cfg.name}-grown", None, str(out)
    cfg.growth.stages = [StageConfig(topology=cfg.topology, steps=cfg.train.steps, gate_steps=gate_steps)]
    save_config(cfg, out / "config.yaml")
    print(f"grew {old.widths} -> {new.widths}: {plan.describe()}")
    return out
