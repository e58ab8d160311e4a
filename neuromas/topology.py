"""The layered graph of nodes: who reads whom.

Nodes have stable ids ``L<layer>N<index>`` (0-based). Edges always go from an earlier layer
to a later one. Each layer has an aggregation (`neuromas.aggregation`): how its messages are
combined before later layers read them. The last layer answers: a single sink node whose
message is the system's answer, or several nodes whose combination (a vote, a selection) is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from neuromas.config import TopologyConfig
from neuromas.errors import ConfigError

_NODE_ID = re.compile(r"^L(\d+)N(\d+)$")


@dataclass(frozen=True)
class Node:
    layer: int  # 0-based
    index: int  # 0-based within the layer

    @property
    def id(self) -> str:
        return f"L{self.layer}N{self.index}"


def parse_node_id(node_id: str) -> Node:
    match = _NODE_ID.match(node_id)
    if not match:
        raise ConfigError(f"topology: {node_id!r} is not a node id (expected e.g. L0N1)")
    return Node(int(match[1]), int(match[2]))


class Topology:
    """A validated layered DAG. Construct with `Topology(widths, edges)` or `from_config`."""

    def __init__(self, widths: list[int], edges: list[tuple[str, str]], aggregation: list[str] | None = None):
        self.widths = list(widths)
        self.aggregation = list(aggregation or ["concat"] * len(self.widths))  # per layer
        assert len(self.aggregation) == len(self.widths), (self.aggregation, self.widths)
        _check_widths(self.widths, self.aggregation)
        self.layers: list[list[Node]] = [[Node(l, i) for i in range(w)] for l, w in enumerate(self.widths)]
        self.nodes: list[Node] = [n for layer in self.layers for n in layer]
        self.edges: list[tuple[str, str]] = sorted(set(edges), key=_edge_order)
        self._predecessors: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        self._successors: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        for src, dst in self.edges:
            self._check_edge(src, dst)
            self._predecessors[dst].append(src)
            self._successors[src].append(dst)
        self._check_reachable()

    @classmethod
    def from_config(cls, cfg: TopologyConfig) -> "Topology":
        aggregation = _aggregation(cfg)
        _check_widths(cfg.widths, aggregation)
        if cfg.connectivity == "edges":
            if not cfg.edges:
                raise ConfigError("topology.edges: required when topology.connectivity is edges")
            bad = [e for e in cfg.edges if len(e) != 2]
            if bad:
                raise ConfigError(f"topology.edges: each edge is [source, target], got {bad[0]}")
            return cls(cfg.widths, [(s, d) for s, d in cfg.edges], aggregation)
        read = cfg.widths[:-1]  # the layers a later layer reads
        if cfg.connectivity == "sparse" and read and cfg.fan_in > max(read):
            raise ConfigError(f"topology.fan_in: {cfg.fan_in} is more nodes than any layer of widths {cfg.widths} "
                              f"holds (at most {max(read)}); with fan_in = the layer width, sparse is full")
        builders = {"full": _full_edges, "skip": _skip_edges, "sparse": lambda w: _sparse_edges(w, cfg.fan_in)}
        return cls(cfg.widths, builders[cfg.connectivity](cfg.widths), aggregation)

    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def sink(self) -> Node:
        """The single answering node (a system ending in a combined layer has none)."""
        assert self.widths[-1] == 1, f"widths {self.widths} end in a combined layer of {self.widths[-1]} nodes"
        return self.layers[-1][0]

    @property
    def answer_ids(self) -> list[str]:
        """The answering nodes: the last layer's (one sink, or the nodes a last layer combines)."""
        return [n.id for n in self.layers[-1]]

    def combines(self, layer: int) -> bool:
        """Whether later layers read `layer`'s messages combined into one (not each on its own)."""
        return self.aggregation[layer] != "concat"

    @property
    def node_ids(self) -> list[str]:
        return [n.id for n in self.nodes]

    def predecessors(self, node_id: str) -> list[str]:
        """Ids of the nodes whose messages `node_id` reads, in (layer, index) order."""
        return list(self._predecessors[node_id])

    def successors(self, node_id: str) -> list[str]:
        return list(self._successors[node_id])

    def descendants(self, node_id: str) -> set[str]:
        """Every node that reads `node_id`'s message, directly or through others."""
        out: set[str] = set()
        stack = list(self._successors[node_id])
        while stack:
            node = stack.pop()
            if node not in out:
                out.add(node)
                stack += self._successors[node]
        return out

    def view(self, active: set[str]) -> tuple["Topology", dict[str, str]]:
        """The graph an episode runs when only the `active` nodes take part (growth gates).

        An inactive node whose layer keeps other active nodes is dropped: its message is left
        out. A layer with no active node passes its inputs through: its readers read its inputs
        instead. The view is renumbered as if the inactive nodes never existed, so a grown
        system with its new nodes gated out prompts exactly like its parent. Returns the view
        and a map from this topology's active ids to the view's ids.
        """
        kept_layers = [l for l, layer in enumerate(self.layers) if any(n.id in active for n in layer)]
        id_map = {}
        for view_layer, l in enumerate(kept_layers):
            for view_index, node in enumerate(n for n in self.layers[l] if n.id in active):
                id_map[node.id] = Node(view_layer, view_index).id

        def sources(node_id: str) -> list[str]:
            out = []
            for src in self._predecessors[node_id]:
                if src in id_map:
                    out.append(src)
                elif parse_node_id(src).layer not in kept_layers:
                    out += sources(src)  # a gated-out layer passes its inputs through
            return out

        edges = [(id_map[src], id_map[dst]) for dst in id_map for src in sources(dst)]
        widths = [sum(n.id in active for n in self.layers[l]) for l in kept_layers]
        return Topology(widths, edges, [self.aggregation[l] for l in kept_layers]), id_map

    def describe(self) -> str:
        """A text picture: one line per layer, then each node's inputs."""
        lines = [f"layer {l}" + (f" ({self.aggregation[l]})" if self.combines(l) else "") + ": "
                 + "  ".join(n.id for n in layer) for l, layer in enumerate(self.layers)]
        lines += [f"{n.id} <- {', '.join(self._predecessors[n.id])}" for n in self.nodes if self._predecessors[n.id]]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"widths": self.widths, "edges": [list(e) for e in self.edges], "aggregation": self.aggregation}

    @classmethod
    def from_dict(cls, data: dict) -> "Topology":
        """The inverse of `to_dict` (as stored in checkpoints)."""
        return cls(data["widths"], [tuple(e) for e in data["edges"]], data.get("aggregation"))

    def _check_edge(self, src: str, dst: str) -> None:
        s, d = parse_node_id(src), parse_node_id(dst)
        for node in (s, d):
            if node.id not in self._predecessors:
                raise ConfigError(f"topology: edge {src} -> {dst} names {node.id}, "
                                  f"which is not in widths {self.widths}")
        if s.layer >= d.layer:
            raise ConfigError(f"topology: edge {src} -> {dst} does not go to a later layer")

    def _check_reachable(self) -> None:
        for node in self.nodes:
            if node.layer > 0 and not self._predecessors[node.id]:
                raise ConfigError(f"topology: node {node.id} has no inputs (unreachable)")
            if node.layer < self.depth - 1 and not self._successors[node.id]:
                raise ConfigError(f"topology: node {node.id} feeds no later node, so it cannot reach the sink")


def _check_widths(widths: list[int], aggregation: list[str]) -> None:
    if not widths:
        raise ConfigError("topology.widths: needs at least one layer")
    if any(w < 1 for w in widths):
        raise ConfigError(f"topology.widths: every layer needs at least one node, got {widths}")
    if widths[-1] != 1 and aggregation[-1] == "concat":
        raise ConfigError(f"topology.widths: the last layer must be a single sink node, got {widths} "
                          "(or combine it: topology.aggregation={-1: vote})")


def _aggregation(cfg: TopologyConfig) -> list[str]:
    """`cfg.aggregation` (layer -> kind, negative from the end) as one kind per layer."""
    out = ["concat"] * len(cfg.widths)
    for layer, how in cfg.aggregation.items():
        if not -len(out) <= layer < len(out):
            raise ConfigError(f"topology.aggregation: layer {layer} is not a layer of widths {cfg.widths}")
        out[layer] = how
    return out


def _edge_order(edge: tuple[str, str]) -> tuple:
    s, d = parse_node_id(edge[0]), parse_node_id(edge[1])
    return (d.layer, d.index, s.layer, s.index)


def _full_edges(widths: list[int]) -> list[tuple[str, str]]:
    return [(Node(l, i).id, Node(l + 1, j).id)
            for l in range(len(widths) - 1) for j in range(widths[l + 1]) for i in range(widths[l])]


def _skip_edges(widths: list[int]) -> list[tuple[str, str]]:
    return [(Node(k, i).id, Node(l, j).id)
            for l in range(1, len(widths)) for j in range(widths[l]) for k in range(l) for i in range(widths[k])]


def _sparse_edges(widths: list[int], fan_in: int) -> list[tuple[str, str]]:
    """Node j of a layer of width m reads `fan_in` consecutive nodes of the previous layer (width w),
    starting at floor(j * w / m) and wrapping. The sink reads the whole previous layer: a sparse
    sink would leave nodes that reach nothing."""
    edges = []
    for l in range(1, len(widths)):
        w, m = widths[l - 1], widths[l]
        k = w if l == len(widths) - 1 else min(fan_in, w)
        for j in range(m):
            start = j * w // m
            edges += [(Node(l - 1, (start + t) % w).id, Node(l, j).id) for t in range(k)]
    return edges
