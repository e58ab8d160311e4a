"""The topology as a picture (the trainer's topology.png, `neuromas show`, `neuromas attribute`), with matplotlib."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure  # not pyplot: drawing to files needs no backend switch
from matplotlib.patches import Circle

from neuromas.topology import Topology


def draw_topology(topology: Topology, path: Path, title: str = "",
                  edge_weights: dict[tuple[str, str], float] | None = None,
                  node_shade: dict[str, float] | None = None) -> Path:
    """Layers left to right, nodes labelled by id, the answering layer highlighted, each combined
    layer's aggregation written under it. `edge_weights` (in [0, 1]) set each edge's width and
    label; `node_shade` (in [0, 1]) shades each node from white to red and labels it below."""
    positions = {}
    for layer in topology.layers:
        for node in layer:
            positions[node.id] = (node.layer, (len(layer) - 1) / 2 - node.index)
    height = max(topology.widths)
    fig = Figure(figsize=(2.2 * topology.depth + 1, 1.1 * height + 1.2))
    ax = fig.subplots()
    for src, dst in topology.edges:
        (x0, y0), (x1, y1) = positions[src], positions[dst]
        weight = None if edge_weights is None else edge_weights.get((src, dst), 0.0)
        lw = 1.0 if weight is None else 0.5 + 6 * weight
        ax.annotate("", xy=(x1 - 0.17, y1), xytext=(x0 + 0.17, y0),
                    arrowprops=dict(arrowstyle="->", color="0.55", lw=lw, shrinkA=0, shrinkB=0))
        if weight is not None:  # labelled nearer the reader, where a reader's inputs fan apart
            t = 0.62
            ax.text(x0 + 0.17 + t * (x1 - x0 - 0.34), y0 + t * (y1 - y0), f"{weight:.2f}", fontsize=7,
                    ha="center", va="center", zorder=5, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="0.7"))
    for node_id, (x, y) in positions.items():
        sink = node_id in topology.answer_ids
        color, text_color = ("#d95f02" if sink else "#1b9e77"), "white"
        if node_shade is not None:
            share = node_shade.get(node_id, 0.0)
            color, text_color = (1.0, 1.0 - 0.8 * share, 1.0 - 0.8 * share), "black"
            ax.text(x, y - 0.22, f"source {share:.0%}", ha="center", va="top", fontsize=7, color="0.2")
        ax.add_patch(Circle((x, y), 0.17, facecolor=color, edgecolor="#d95f02" if sink else "0.3", lw=1.5,
                            zorder=3))
        ax.text(x, y, node_id, ha="center", va="center", color=text_color, fontsize=8, zorder=4, weight="bold")
    for l, width in enumerate(topology.widths):
        how = f"\n{topology.aggregation[l]}" if topology.combines(l) else ""
        ax.text(l, -(height - 1) / 2 - 0.6, f"layer {l}\n{width} node{'s' * (width > 1)}{how}", ha="center",
                va="top", fontsize=8, color="0.3")
    ax.set_xlim(-0.5, topology.depth - 0.5)
    ax.set_ylim(-(height - 1) / 2 - 1.4, (height - 1) / 2 + 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"widths {topology.widths}, {len(topology.edges)} edges (answering in orange)", fontsize=8,
                 wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    return path
