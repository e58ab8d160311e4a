"""Pictures: the topology (`neuromas show`) and training curves (`neuromas plot`), with matplotlib."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure  # not pyplot: drawing to files needs no backend switch
from matplotlib.patches import Circle

from neuromas.errors import NeuromasError
from neuromas.topology import Topology
from neuromas.tracking import read_jsonl


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


def read_run(run_dir: Path) -> tuple[list[dict], list[int]]:
    """(metrics lines, steps at which the system grew) of a run directory."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise NeuromasError(f"{run_dir} is not a run directory (no metrics.jsonl)")
    lines = read_jsonl(metrics)
    if not any("reward/mean" in line or "eval/accuracy" in line for line in lines):
        raise NeuromasError(f"{run_dir} has nothing to plot yet (no step or evaluation in its metrics.jsonl)")
    growth = run_dir / "growth.jsonl"
    grew = [row["step"] for row in read_jsonl(growth)] if growth.is_file() else []
    return lines, grew


def _series(lines: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(line["step"], line[key]) for line in lines if key in line]
    return [p[0] for p in points], [p[1] for p in points]


def plot_runs(run_dirs: list[Path], path: Path, smooth: int = 3) -> Path:
    """Reward and accuracy (raw and moving average) and greedy eval accuracy per run;
    per-node message length and reward; growth events as dashed lines."""
    fig = Figure(figsize=(12, 7))
    axes = fig.subplots(2, 2)
    for i, run_dir in enumerate(run_dirs):
        lines, grew = read_run(run_dir)
        color = f"C{i}"
        for ax, key in ((axes[0, 0], "reward/mean"), (axes[0, 1], "reward/accuracy")):
            steps, values = _series(lines, key)
            ax.plot(steps, values, color=color, alpha=0.25)
            ax.plot(steps, _moving_average(values, smooth), color=color, label=run_dir.name)
            ax.set_title(f"{key} (faint: per step; line: mean of {smooth})", fontsize=9)
        steps, values = _series(lines, "eval/accuracy")
        axes[0, 1].plot(steps, values, "o--", color=color, label=f"{run_dir.name} eval (greedy)")
        node_keys = sorted({k for line in lines for k in line if k.startswith("node/") and k.endswith("/msg_tokens")})
        for j, key in enumerate(node_keys):
            style = dict(color=color, alpha=1 - 0.5 * j / max(1, len(node_keys)))
            # One run: a legend entry per node. Several: one per run, or the legend buries the plot.
            label = f"{run_dir.name} {key.split('/')[1]}" if len(run_dirs) == 1 else \
                f"{run_dir.name} (a line per node)" if j == 0 else None
            for ax, metric in ((axes[1, 0], key), (axes[1, 1], key.replace("msg_tokens", "reward/mean"))):
                # Growth renames nodes (L0N0 may become L1N0): one line per stage, not across it.
                for k, (steps, values) in enumerate(_stages(*_series(lines, metric), grew)):
                    ax.plot(steps, _moving_average(values, smooth), label=label if k == 0 else None, **style)
        for ax in axes.flat:
            for step in grew:
                ax.axvline(step + 0.5, color=color, ls=":", lw=1)
    axes[1, 0].set_title("message length per node (tokens)", fontsize=9)
    axes[1, 1].set_title("reward per node (episodes it took part in)", fontsize=9)
    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.suptitle("dotted lines: growth events", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _stages(steps: list[int], values: list[float], grew: list[int]) -> list[tuple[list[int], list[float]]]:
    """Split a series at the steps after which the system grew."""
    bounds = [0, *sorted(grew), float("inf")]
    out = []
    for low, high in zip(bounds, bounds[1:]):
        part = [(s, v) for s, v in zip(steps, values) if low < s <= high]
        if part:
            out.append(([s for s, _ in part], [v for _, v in part]))
    return out


def _moving_average(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
            for i in range(len(values))]


def topology_of(source: Path) -> tuple[Topology, dict[str, str]]:
    """The topology and node texts of a recipe (the system it ends with: its last growth stage's;
    the texts it seeds), a run directory or a checkpoint."""
    from neuromas import checkpoint as ckpt
    from neuromas.config import load_config
    from neuromas.system import recipe_texts

    if source.is_file():
        cfg = load_config(source)
        topology = Topology.from_config(cfg.stages()[-1].topology)
        return topology, recipe_texts(cfg.agents.texts, topology.node_ids)
    system, _ = ckpt.find_system(source)
    topology = Topology.from_dict(ckpt.read_state(system)["topology"])
    return topology, ckpt.texts_from(system, topology.node_ids)

