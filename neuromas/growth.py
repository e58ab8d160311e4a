"""Progressive growth: turn a trained system into a bigger one that starts where it left off.

Layers are aligned from the sink: with a deeper new topology the new layers come first, and
old node ``(l, i)`` becomes ``(l + shift, i)``. Nodes without a pre-image are new; they start
as a copy of a parent node (``copy``), as the base model (``zero``: LoRA B = 0) or as a random
LoRA (``fresh``), and enter through a gate (see `RolloutEngine.run`): with the gate closed the
grown system prompts and answers exactly like its parent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neuromas.agents import Agents, adapter_states, load_adapter_states
from neuromas.errors import ConfigError
from neuromas.topology import Node, Topology, parse_node_id

@dataclass
class GrowthPlan:
    old_to_new: dict[str, str]  # surviving nodes: id before -> id after
    new_nodes: list[str]  # ids with no pre-image
    parents: dict[str, str]  # new node -> old node it copies under `copy` init

    def describe(self) -> str:
        moved = ", ".join(f"{o}->{n}" for o, n in self.old_to_new.items())
        born = ", ".join(f"{n} (from {self.parents[n]})" for n in self.new_nodes)
        return f"kept {moved}; new {born or 'none'}"


def plan_growth(old: Topology, new: Topology, copy_from: dict[str, str] | None = None) -> GrowthPlan:
    shift = new.depth - old.depth
    if shift < 0:
        raise ConfigError(f"growth: {old.widths} -> {new.widths} removes layers; growth only adds nodes")
    old_to_new = {}
    for node in old.nodes:
        layer = node.layer + shift
        if node.index >= new.widths[layer]:
            raise ConfigError(f"growth: {old.widths} -> {new.widths} would remove {node.id}; growth only adds nodes")
        old_to_new[node.id] = Node(layer, node.index).id
    kept = set(old_to_new.values())
    new_nodes = [n.id for n in new.nodes if n.id not in kept]
    parents = {}
    for node_id in new_nodes:
        node = parse_node_id(node_id)
        # Default parent: same index (wrapping) in the node's own layer, or in the first old layer.
        old_layer = max(node.layer - shift, 0)
        parents[node_id] = Node(old_layer, node.index % old.widths[old_layer]).id
    for child, parent in (copy_from or {}).items():
        if child not in new_nodes:
            raise ConfigError(f"growth.stages[].copy_from: {child} is not a new node "
                              f"({', '.join(new_nodes) or 'none'})")
        if parent not in old_to_new:
            raise ConfigError(f"growth.stages[].copy_from: {parent} is not a node of the previous stage")
        parents[child] = parent
    return GrowthPlan(old_to_new, new_nodes, parents)


def grow_agents(agents: Agents, plan: GrowthPlan, new_ids: list[str], init: str, noise: float = 0.0) -> Agents:
    """A new `Agents` on the same frozen base with adapters `new_ids`: survivors keep their
    weights under their new ids, new nodes start by `init`."""
    old = adapter_states(agents)
    states = {plan.old_to_new[o]: state for o, state in old.items()}
    if init == "copy":
        for node_id in plan.new_nodes:
            states[node_id] = {k: v + noise * torch.randn_like(v) if noise else v.clone()
                               for k, v in old[plan.parents[node_id]].items()}
    fresh = set(plan.new_nodes) if init == "fresh" else set()
    base = agents.model.unload()  # the frozen base, LoRA layers removed (nothing merged)
    grown = Agents(base, agents.tokenizer, agents.cfg, new_ids, agents.all_node_ids, fresh_nodes=fresh)
    load_adapter_states(grown, states)
    return grown


def lineages(stages: list[Topology]) -> list[dict[str, str]]:
    """For each stage, node id -> the node's lineage name: the ids it has over the stages, from
    the stage it was born in ("L0N0 -> L1N0" for the sink of [1] grown into [2, 1]; "L0N1 (from
    stage 1)" for a node born there). Growth renames survivors, so an id alone names a place in
    the graph, not a node: per-node tables across growth are labelled by lineage."""
    origin = [{n: (0, n) for n in stages[0].node_ids}]  # node -> (stage it was born in, its id then)
    for k, (old, new) in enumerate(zip(stages, stages[1:]), 1):
        plan = plan_growth(old, new)
        origin.append({**{new_id: origin[-1][old_id] for old_id, new_id in plan.old_to_new.items()},
                       **{n: (k, n) for n in plan.new_nodes}})
    ids: dict[tuple[int, str], list[str]] = {}
    for stage in origin:
        for n, o in stage.items():
            if ids.get(o, [None])[-1] != n:
                ids.setdefault(o, []).append(n)

    def name(o: tuple[int, str]) -> str:
        return " -> ".join(ids[o]) + (f" (from stage {o[0]})" if o[0] else "")
    return [{n: name(o) for n, o in stage.items()} for stage in origin]
