"""The live system: one adapter per node on the frozen base (`Agents`), the graph
(`Topology`), each node's instruction text (optional, trainable by text), and the nodes still
behind a growth gate. Growth and loading a saved system
each return a new `System`; whoever holds it (the trainer, `neuromas eval`, `neuromas grow`)
hands it to the rollout engine and the optimizer, which keep no copy of their own."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from neuromas import checkpoint as ckpt
from neuromas.agents import Agents, load_adapter_states
from neuromas.config import Config
from neuromas.recipe import load_config
from neuromas.growth import GrowthPlan, grow_agents, plan_growth
from neuromas.models import load_base_model
from neuromas.topology import Topology


@dataclass(frozen=True)
class System:
    agents: Agents
    topology: Topology
    new_nodes: frozenset[str] = field(default_factory=frozenset)  # entered through the gate of their stage
    # node id -> its instruction text, shown in its prompt (nodes without one are left out): role-free
    # unless a recipe seeds it (agents.texts) or a textual optimiser writes it
    texts: dict[str, str] = field(default_factory=dict)

    @property
    def node_ids(self) -> list[str]:
        return self.topology.node_ids

    def grow(self, topology: Topology, init: str, noise: float = 0.0, copy_from: dict[str, str] | None = None,
             seed_texts: dict[str, str] | None = None) -> tuple[System, GrowthPlan]:
        """This system grown into `topology`: survivors keep their weights and texts, new nodes
        start by `init` (copy: the parent's weights and text; otherwise the base, and the text
        `seed_texts` gives the new id, if any)."""
        plan = plan_growth(self.topology, topology, copy_from)
        agents = grow_agents(self.agents, plan, topology.node_ids, init, noise)
        texts = {new: self.texts[old] for old, new in plan.old_to_new.items() if old in self.texts}
        for node_id in plan.new_nodes:
            text = self.texts.get(plan.parents[node_id]) if init == "copy" else (seed_texts or {}).get(node_id)
            if text:
                texts[node_id] = text
        return System(agents, topology, frozenset(plan.new_nodes), texts), plan

    def with_texts(self, texts: dict[str, str]) -> System:
        """This system with node texts `texts` (node id -> text; an empty text removes it)."""
        assert set(texts) <= set(self.node_ids), sorted(set(texts) - set(self.node_ids))
        return replace(self, texts={n: t for n, t in {**self.texts, **texts}.items() if t})

    def with_weights_from(self, path: Path) -> System:
        """This system with the adapter weights and texts saved at `path` loaded into it (the same
        topology), and the saved system's gated nodes (a hand-grown system's new nodes stay gated)."""
        load_adapter_states(self.agents, ckpt.adapter_states_from(path, self.node_ids))
        return replace(self, new_nodes=frozenset(ckpt.read_state(path).get("new_nodes", [])),
                       texts=ckpt.texts_from(path, self.node_ids))

    def with_saved(self, path: Path) -> System:
        """The system saved at `path` (its topology, adapters and gated nodes) on this system's frozen base."""
        state = ckpt.read_state(path)
        topology = Topology.from_dict(state["topology"])
        agents = Agents(self.agents.model.unload(), self.agents.tokenizer, self.agents.cfg, topology.node_ids,
                        all_node_ids=self.agents.all_node_ids)
        load_adapter_states(agents, ckpt.adapter_states_from(path, topology.node_ids))
        return System(agents, topology, frozenset(state.get("new_nodes", [])), ckpt.texts_from(path, topology.node_ids))


def recipe_texts(texts: dict[str, str], node_ids: list[str]) -> dict[str, str]:
    """The recipe's node texts (`agents.texts`) of the nodes in `node_ids`; empty ones are none."""
    return {n: t for n, t in texts.items() if n in node_ids and t}


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
    texts = recipe_texts(cfg.agents.texts, topology.node_ids)  # as the run started
    if trained:
        load_adapter_states(agents, ckpt.readable_adapter_states(directory, topology.node_ids))
        texts = ckpt.texts_from(directory, topology.node_ids)
    return System(agents, topology, frozenset(state.get("new_nodes", [])), texts), cfg, directory
