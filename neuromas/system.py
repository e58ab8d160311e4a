"""The live system: one adapter per node on the frozen base (`Agents`), the graph
(`Topology`), and the nodes still behind a growth gate. Growth and loading a saved system
each return a new `System`; whoever holds it (the trainer, `neuromas eval`, `neuromas grow`)
hands it to the rollout engine and the optimizer, which keep no copy of their own."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from neuromas import checkpoint as ckpt
from neuromas.agents import Agents, load_adapter_states
from neuromas.config import Config, load_config
from neuromas.growth import GrowthPlan, grow_agents, plan_growth
from neuromas.models import load_base_model
from neuromas.topology import Topology


@dataclass(frozen=True)
class System:
    agents: Agents
    topology: Topology
    new_nodes: frozenset[str] = field(default_factory=frozenset)  # entered through the gate of their stage

    @property
    def node_ids(self) -> list[str]:
        return self.topology.node_ids

    def grow(self, topology: Topology, init: str, noise: float = 0.0,
             copy_from: dict[str, str] | None = None) -> tuple[System, GrowthPlan]:
        """This system grown into `topology`: survivors keep their weights, new nodes start by `init`."""
        plan = plan_growth(self.topology, topology, copy_from)
        agents = grow_agents(self.agents, plan, topology.node_ids, init, noise)
        return System(agents, topology, frozenset(plan.new_nodes)), plan

    def with_weights_from(self, path: Path) -> System:
        """This system with the adapter weights saved at `path` loaded into it (the same topology),
        and the saved system's gated nodes (a hand-grown system's new nodes stay gated)."""
        load_adapter_states(self.agents, ckpt.adapter_states_from(path, self.node_ids))
        return replace(self, new_nodes=frozenset(ckpt.read_state(path).get("new_nodes", [])))

    def with_saved(self, path: Path) -> System:
        """The system saved at `path` (its topology, adapters and gated nodes) on this system's frozen base."""
        state = ckpt.read_state(path)
        topology = Topology.from_dict(state["topology"])
        agents = Agents(self.agents.model.unload(), self.agents.tokenizer, self.agents.cfg, topology.node_ids,
                        all_node_ids=self.agents.all_node_ids)
        load_adapter_states(agents, ckpt.adapter_states_from(path, topology.node_ids))
        return System(agents, topology, frozenset(state.get("new_nodes", [])))


def load_system(source: Path, trained: bool = True,
                all_node_ids: list[str] | None = None) -> tuple[System, Config, Path]:
    """A saved system (a run directory's final adapters, or a checkpoint), its run's config
    and the directory it was read from. `trained=False`: the same topology with fresh adapters."""
    directory, config_path = ckpt.find_system(source)
    cfg = load_config(config_path)
    state = ckpt.read_state(directory)
    topology = Topology.from_dict(state["topology"])
    base, tokenizer = load_base_model(cfg.model)
    agents = Agents(base, tokenizer, cfg.agents, topology.node_ids, all_node_ids)
    if trained:
        load_adapter_states(agents, ckpt.adapter_states_from(directory, topology.node_ids))
    return System(agents, topology, frozenset(state.get("new_nodes", []))), cfg, directory
