"""Shared by the reproduction drivers (experiments/paper, experiments/ann): run a recipe once per seed (reusing
finished runs, so a script can be stopped and started again), read back its metrics, print a
Markdown table with standard errors and a paired test between the arms, and draw the reward
curves with a band over seeds."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from neuromas.growth import lineages
from neuromas.recipe import load_config
from neuromas.stats import Accuracy, OverSeeds, paired_difference
from neuromas.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"  # what the tables and curves are made from, kept in git
KEPT = ("evals.jsonl", "metrics.jsonl", "wall.json", "recipe.txt")  # recipe.txt: recipe text and overrides
KEPT_IF_WRITTEN = ("textual.jsonl",)  # a textual run's proposals, validation scores and decisions


def run(recipe: str, seed: int, out: Path, overrides: tuple[str, ...] = (), arm: str | None = None,
        data: Path = DATA) -> dict:
    """Train `recipe` (a path under the repository) with `train.seed=seed` into out/<name>-seed<seed>
    (name: the recipe's folder and stem, or `arm` when one recipe serves several arms).

    The run's per-question evaluations, metrics and wall time are copied to `data`/<name>-seed<seed>/;
    a run found there (or finished in `out`) is not trained again, so a script can be stopped and
    started again, in this session or a later one."""
    name = f"{Path(recipe).parent.name}-{arm or Path(recipe).stem}-seed{seed}"
    run_dir, kept = out / name, data / name
    made_from = "\n".join([(ROOT / recipe).read_text(), *overrides]) + "\n"
    for folder in (kept, run_dir):  # results of another version of the recipe are never reused
        if (folder / "wall.json").is_file() and not _same_recipe(_made_from(folder), made_from):
            sys.exit(f"{folder} holds a run of another version of {recipe} (or of unknown origin): "
                     "move it aside to keep it, or delete it to train again")
    if not (kept / "wall.json").is_file():
        if not (run_dir / "adapters").is_dir():
            # A run stopped with the session resumes from its last checkpoint (every 8 steps; a
            # resumed run logs the same metrics as one never stopped, tests/test_growth.py).
            resume = ["--resume", str(run_dir)] if _same_recipe(_made_from(run_dir), made_from) \
                and any(run_dir.glob("checkpoints/step_*")) else []
            if not resume:
                shutil.rmtree(run_dir, ignore_errors=True)
                run_dir.mkdir(parents=True)
                (run_dir / "recipe.txt").write_text(made_from)
            start, load = time.perf_counter(), os.getloadavg()[0]
            cmd = [sys.executable, "-m", "neuromas", "train", recipe, f"train.seed={seed}",
                   f"tracking.run_dir={run_dir}", "checkpoint.every=8", *overrides, *resume]
            print(f"[{time.strftime('%H:%M:%S')}] {' '.join(cmd[3:])}", file=sys.stderr)
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            (run_dir / "wall.json").write_text(json.dumps({"wall_s": time.perf_counter() - start, "load_before": load,
                                                           "load_after": os.getloadavg()[0],
                                                           "resumed": bool(resume)}) + "\n")
        kept.mkdir(parents=True, exist_ok=True)
        for file in KEPT + tuple(f for f in KEPT_IF_WRITTEN if (run_dir / f).is_file()):
            shutil.copyfile(run_dir / file, kept / file)
    rows = [json.loads(line) for line in (kept / "metrics.jsonl").read_text().splitlines()]
    evals = [json.loads(line) for line in (kept / "evals.jsonl").read_text().splitlines()]
    rewards = [(r["step"], r["reward/mean"]) for r in rows if "reward/mean" in r]
    step_times = [(r["step"], r["time/step"]) for r in rows if "reward/mean" in r and "time/step" in r]
    # rows with a non-zero advantage, i.e. that carry a gradient (none in a text-only run)
    signal = [r["train/rows_updated"] / r["rollout/messages"] for r in rows if "train/rows_updated" in r]
    names = lineages(stage_topologies(kept))  # per stage: node id -> the node's lineage across growth
    truncated = {}  # node (by lineage) -> [(step, share of its messages cut off at the token limit)]
    for r in rows:
        for key, value in r.items():
            if key.endswith("/truncated") and "reward/mean" in r:
                node = names[int(r["growth/stage"])][key.split("/")[1]]
                truncated.setdefault(node, []).append((r["step"], value))
    return {"dir": run_dir, "seed": seed, "before": Accuracy.of(evals[0]["correct"]),
            "after": Accuracy.of(evals[-1]["correct"]), "ids": evals[-1]["ids"], "rewards": rewards,
            "signal": statistics.mean(signal) if signal else None, "truncated": truncated, "step_times": step_times,
            "evals": [(e["step"], Accuracy.of(e["correct"])) for e in evals],
            **json.loads((kept / "wall.json").read_text())}


def stage_topologies(kept: Path) -> list[Topology]:
    """The topology of each stage of the recipe a kept run was made from (recipe.txt: the recipe's
    text, then its overrides, one per line)."""
    lines = (kept / "recipe.txt").read_text().splitlines()
    overrides: list[str] = []
    while lines and re.match(r"^[\w.]+=", lines[-1]):
        overrides.insert(0, lines.pop())
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "recipe.yaml").write_text("\n".join(lines) + "\n")
        cfg = load_config(Path(tmp) / "recipe.yaml", overrides)
    return [Topology.from_config(stage.topology) for stage in cfg.stages()]


def _made_from(folder: Path) -> str | None:
    path = folder / "recipe.txt"
    return path.read_text() if path.is_file() else None


def _same_recipe(a: str | None, b: str) -> bool:
    """Two recipe texts (with their overrides) that differ at most in comments and blank lines."""
    def meaning(text: str) -> list[str]:
        lines = (re.sub(r"(^|\s)#.*$", "", line).rstrip() for line in text.splitlines())
        return [line for line in lines if line]
    return a is not None and meaning(a) == meaning(b)


def run_all(systems: dict[str, str | tuple[str, str, tuple[str, ...]]], seeds: list[int], out: Path,
            overrides: tuple[str, ...] = (), data: Path = DATA) -> dict:
    """Every arm on every seed, seed by seed (so that a stopped script leaves paired arms behind).
    An arm is a recipe, or (recipe, arm name, the arm's own overrides)."""
    def one(arm, seed):
        recipe, name, own = (arm, None, ()) if isinstance(arm, str) else arm
        return run(recipe, seed, out, (*overrides, *own), name, data)
    runs = {seed: {label: one(arm, seed) for label, arm in systems.items()} for seed in seeds}
    return {label: [runs[seed][label] for seed in seeds] for label in systems}


def add_arms_argument(parser, systems: dict) -> None:
    """`--arms I [I ...]`: run (and report) only these arms, 1-based in the order of `systems`, e.g.
    to fit one long arm into the time at hand; the others' kept runs stay where they are."""
    listing = ", ".join(f"{i} = {label}" for i, label in enumerate(systems, 1))
    parser.add_argument("--arms", type=int, nargs="+", choices=range(1, len(systems) + 1), metavar="I",
                        help=f"only these arms ({listing}); default: all")


def chosen(systems: dict, arms: list[int] | None) -> dict:
    return {label: arm for i, (label, arm) in enumerate(systems.items(), 1) if arms is None or i in arms}


def _se(values: list[float], alone: float = float("nan")) -> float:
    """Standard error of the mean over seeds (`alone` for a single value)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else alone


def _mean_se(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {_se(values):.3f}"


def report(results: dict[str, list[dict]], picture: str, command: str) -> None:
    """Print the table of `results` (arm label -> one run per seed), compare the arms, draw the curves."""
    import torch

    first = next(iter(results.values()))[0]
    print(f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}. "
          f"Greedy accuracy on {first['after'].n} test questions (± standard error).\n")
    print("| system | seed | steps | untrained | trained | change (paired) | sampled reward, first 3 / last 3 steps "
          "| rows with a gradient | wall time | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, runs in results.items():
        for r in runs:
            change, rewards = paired_difference(r["before"], r["after"]), [v for _, v in r["rewards"]]
            print(f"| {label} | {r['seed']} | {len(rewards)} | {r['before'].mean:.3f} ± {r['before'].se:.3f} | "
                  f"{r['after'].mean:.3f} ± {r['after'].se:.3f} | {change.difference:+.3f} ± {change.se:.3f} | "
                  f"{statistics.mean(rewards[:3]):.2f} / {statistics.mean(rewards[-3:]):.2f} | "
                  f"{'-' if r['signal'] is None else format(r['signal'], '.0%')} | "
                  f"{r['wall_s'] / 60:.1f} min{' since a resume' if r.get('resumed') else ''} | "
                  f"{r['load_before']:.1f} -> {r['load_after']:.1f} |")
    print("\n| system | seeds | trained accuracy, mean over seeds ± s.e. |\n| --- | --- | --- |")
    for label, runs in results.items():
        print(f"| {label} | {len(runs)} | {_mean_se([r['after'].mean for r in runs])} |")
    steps = sorted({step for runs in results.values() for r in runs for step, _ in r["evals"]})
    print("\nGreedy accuracy at each evaluation, mean over seeds ± s.e.:\n")
    print("| system | " + " | ".join(f"step {s}" for s in steps) + " |\n|" + " --- |" * (len(steps) + 1))
    for label, runs in results.items():
        cells = [[a.mean for r in runs for s, a in r["evals"] if s == step] for step in steps]
        print(f"| {label} | " + " | ".join(_mean_se(c) if c else "" for c in cells) + " |")
    (label_a, runs_a), *others = results.items()
    for label_b, runs_b in others:  # every arm against the first, on the same (seed, question) pairs
        pairs = [(a, b) for a in runs_a for b in runs_b if a["seed"] == b["seed"] and a["ids"] == b["ids"]]
        if not pairs:
            continue
        # The headline is the test over seeds: whether one arm trains better in general. The pooled
        # test asks whether these trained systems differ on these questions, leaving out the seeds'
        # spread; it comes second. Detectable differences are at 80% power (2.8 s.e.).
        per_seed = OverSeeds(tuple(b["after"].mean - a["after"].mean for a, b in pairs))
        print(f"\n{label_b} - {label_a}, trained accuracy, over seeds: {per_seed}")
        diff = _pooled_difference([a["after"] for a, _ in pairs], [b["after"] for _, b in pairs])
        print(f"- pooled over {len(pairs)} seeds x {first['after'].n} questions: {diff}; detectable at 80% power: "
              f"{2.8 * diff.se:.3f}")
        for step in steps[1:-1]:  # the same comparison at each evaluation before the last
            at = [(dict(a["evals"]).get(step), dict(b["evals"]).get(step)) for a, b in pairs]
            if all(x is not None and y is not None for x, y in at):
                print(f"- at step {step}: {_pooled_difference([x for x, _ in at], [y for _, y in at])}")
    reward_table(results)
    cut_off_table(results)
    draw_band(results, ROOT / picture)
    print(f"\nCurves (mean over seeds ± one standard error): {picture}\nCommand: {command}")


def _pooled_difference(a: list[Accuracy], b: list[Accuracy]):
    """B minus A over every (seed, question) pair: run i of A and run i of B answered the same questions."""
    return paired_difference(Accuracy.of([c for acc in a for c in acc.correct]),
                             Accuracy.of([c for acc in b for c in acc.correct]))


def _spans(results: dict[str, list[dict]], blocks: int) -> list[tuple[int, int]]:
    """`blocks` equal spans of steps (first, last), 1-based, over the longest run."""
    steps = max(len(r["rewards"]) for runs in results.values() for r in runs)
    return [(i * steps // blocks + 1, (i + 1) * steps // blocks) for i in range(blocks)]


def _span_means(series: list[tuple[int, float]], spans: list[tuple[int, int]]) -> list[float | None]:
    return [statistics.mean(c) if (c := [v for step, v in series if a <= step <= b]) else None for a, b in spans]


def reward_table(results: dict[str, list[dict]], blocks: int = 3) -> None:
    """Sampled reward and seconds a step, mean over each of `blocks` equal spans of steps, per seed
    and over seeds (mean ± s.e.): where each arm's learning happened, and what it cost (a grown
    arm trains smaller systems first)."""
    spans = _spans(results, blocks)
    print("\nSampled reward (seconds a step), mean over each span of steps:\n")
    print("| system | seed | " + " | ".join(f"steps {a}-{b}" for a, b in spans) + " |")
    print("|" + " --- |" * (blocks + 2))
    for label, runs in results.items():
        per_seed = []
        for r in runs:
            rewards, times = _span_means(r["rewards"], spans), _span_means(r["step_times"], spans)
            per_seed.append(rewards)
            print(f"| {label} | {r['seed']} | " + " | ".join(
                "-" if v is None else f"{v:.3f}" + ("" if s is None else f" ({s:.0f} s)")
                for v, s in zip(rewards, times)) + " |")
        if len(runs) > 1:
            cells = [[row[i] for row in per_seed if row[i] is not None] for i in range(blocks)]
            print(f"| {label} | mean | " + " | ".join(_mean_se(c) if c else "-" for c in cells) + " |")


def cut_off_table(results: dict[str, list[dict]], blocks: int = 3) -> None:
    """Share of each node's messages cut off at the token limit (`node/<id>/truncated`), mean over
    each of `blocks` equal spans of steps: a reply that runs away to the limit never reaches its
    answer and scores 0. A node id names a place in the graph: after growth, L0N0 is no longer the
    answering node, so the rows are nodes by lineage (`growth.lineages`): the ids a node has had."""
    spans = _spans(results, blocks)
    print("\nShare of each node's messages cut off at the token limit, mean over each span of steps:\n")
    print("| system | seed | node | " + " | ".join(f"steps {a}-{b}" for a, b in spans) + " |")
    print("|" + " --- |" * (blocks + 3))
    for label, runs in results.items():
        for r in runs:
            for node, series in sorted(r["truncated"].items()):
                print(f"| {label} | {r['seed']} | {node} | "
                      + " | ".join("-" if v is None else f"{v:.2f}" for v in _span_means(series, spans)) + " |")


def draw_band(results: dict[str, list[dict]], path: Path, window: int = 8) -> None:
    """Left: sampled reward per step, a running mean over `window` steps (every seed sees the same
    questions at a step, so the raw curve mostly shows which questions were hard), each arm's mean
    over seeds with a band of ± one standard error. Right: greedy test accuracy at each evaluation,
    mean over seeds ± one standard error."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    reward_ax, eval_ax = fig.subplots(1, 2)
    for i, (label, runs) in enumerate(results.items()):
        curves = []
        for r in runs:
            values = [v for _, v in sorted(r["rewards"])]
            curves.append([statistics.mean(values[max(0, k + 1 - window):k + 1]) for k in range(len(values))])
        steps = range(1, min(len(c) for c in curves) + 1)
        mean = [statistics.mean(c[k - 1] for c in curves) for k in steps]
        se = [_se([c[k - 1] for c in curves], 0.0) for k in steps]
        reward_ax.plot(steps, mean, color=f"C{i}", label=f"{label} ({len(runs)} seeds)")
        reward_ax.fill_between(steps, [m - e for m, e in zip(mean, se)], [m + e for m, e in zip(mean, se)],
                               color=f"C{i}", alpha=0.2)
        at = sorted({s for r in runs for s, _ in r["evals"]})
        by_step = [[a.mean for r in runs for s, a in r["evals"] if s == step] for step in at]
        eval_ax.errorbar(at, [statistics.mean(v) for v in by_step], [_se(v, 0.0) for v in by_step],
                         color=f"C{i}", marker="o", capsize=3, label=label)
    reward_ax.set(xlabel="step", ylabel=f"sampled reward (running mean, {window} steps)")
    n = next(iter(results.values()))[0]["after"].n
    eval_ax.set(xlabel="step", ylabel=f"greedy test accuracy ({n} questions)")
    reward_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
