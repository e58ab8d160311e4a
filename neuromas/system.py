"""The live system: one adapter per node on the frozen base (`Agents`), the graph
(`Topology`), each node's instruction text (optional, trainable by text), and the nodes still
behind a growth gate. A value with no I/O: growth and text edits return a new `System`, and
reading one from disk is `checkpoint.load_system` / `checkpoint.with_saved`. Whoever holds it (the
trainer, `neuromas eval`, `neuromas grow`) hands it to the rollout engine and the optimizer, which
keep no copy of their own."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from neuromas.agents import Agents
from neuromas.growth import GrowthPlan, grow_agents, plan_growth
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


def recipe_texts(texts: dict[str, str], node_ids: list[str]) -> dict[str, str]:
    """The recipe's node texts (`agents.texts`) of the nodes in `node_ids`; empty ones are none."""
    return {n: t for n, t in texts.items() if n in node_ids and t}
