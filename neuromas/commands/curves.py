"""The work of `neuromas plot` (commands/plot.py): training curves of runs, overlaid, to a PNG."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure  # not pyplot: drawing to files needs no backend switch

from neuromas.errors import NeuromasError
from neuromas.tracking import read_jsonl


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
