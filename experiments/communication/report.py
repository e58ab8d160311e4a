"""The split-views report, rebuilt from the kept data alone (experiments/communication/data)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from experiments.runner import read_jsonl
from neuromas.config import TaskConfig
from neuromas.stats import Accuracy, OverSeeds, paired_difference
from neuromas.tasks import build_task

MODES = ("empty", "shuffled")


def load(run: Path) -> dict:
    """One kept run: its first and last evaluation (per question), the ablated accuracies at each,
    the last steps' per-node part scores, wall time and load."""
    evals = read_jsonl(run / "evals.jsonl")
    metrics = read_jsonl(run / "metrics.jsonl")
    at = {m["step"]: m for m in metrics if "eval/accuracy" in m}
    first, last = evals[0], evals[-1]
    steps = [m for m in metrics if "reward/mean" in m]
    parts = {k.split("/")[1]: statistics.mean(m[k] for m in steps[-4:] if k in m)
             for k in sorted({k for m in steps for k in m if k.endswith("/part_correct")})}
    return {"ids": first["ids"], "before": Accuracy.of(first["correct"]), "after": Accuracy.of(last["correct"]),
            "steps": last["step"], "ablated": {s: {mode: at[s].get(f"eval/accuracy_{mode}") for mode in MODES}
                                               for s in (first["step"], last["step"])},
            "ablated_after": {mode: Accuracy.of(c) for mode, c in last.get("ablated", {}).items()},
            "changed": {s: {mode: at[s].get(f"eval/changed_{mode}") for mode in MODES}
                        for s in (first["step"], last["step"])},
            "reward": [m["reward/mean"] for m in steps], "parts": parts, **json.loads((run / "wall.json").read_text())}


def trivial_baselines(num_test: int = 100) -> dict[str, float]:
    """On the test split: always the most common answer; always one operand of the whole question
    (the best of its four positions), which a single node could echo."""
    test = build_task(TaskConfig(name="split_arithmetic", max_value=9, num_test=num_test)).test
    answer, count = Counter(s.answer for s in test).most_common(1)[0]
    operands = [[n for n in s.question.replace("(", " ").replace(")", " ").split() if n.isdigit()] for s in test]
    echo = max(sum(ops[i] == s.answer for ops, s in zip(operands, test)) for i in range(4)) / len(test)
    return {f"always {answer}": count / len(test), "an operand (best position)": echo}


def _fmt(a: Accuracy) -> str:
    return f"{a.mean:.3f} ± {a.se:.3f}"


def report(data: Path, command: str) -> str:
    seeds = sorted(int(p.name.split("seed")[1]) for p in data.glob("views-seed*"))
    views = {s: load(data / f"views-seed{s}") for s in seeds}
    single = {s: load(data / f"single-seed{s}") for s in seeds if (data / f"single-seed{s}" / "wall.json").is_file()}
    n = views[seeds[0]]["after"].n
    out = [f"Greedy accuracy on the same {n} test questions (± standard error), {len(seeds)} seeds.", ""]
    out += ["Trivial baselines: " + "; ".join(f"{k}: {v:.3f}" for k, v in trivial_baselines(n).items()) + ".", ""]
    out += ["| seed | arm | steps | step 0 | trained | trained, messages emptied | trained, messages shuffled | "
            "first-layer part right (last 4 steps) | wall | load |", "|" + " --- |" * 10]
    for s in seeds:
        for arm, r in (("[2, 1] views", views[s]), ("one node, whole question", single.get(s))):
            if r is None:
                continue
            abl = r["ablated"][r["steps"]]
            cells = [f"{abl[m]:.3f}" if abl.get(m) is not None else "-" for m in MODES]
            parts = ", ".join(f"{k} {v:.2f}" for k, v in r["parts"].items()) or "-"
            out.append(f"| {s} | {arm} | {r['steps']} | {_fmt(r['before'])} | {_fmt(r['after'])} | {cells[0]} | "
                       f"{cells[1]} | {parts} | {r['wall_s'] / 60:.1f} min | {r['load_before']:.1f} -> "
                       f"{r['load_after']:.1f} |")
    out += ["", "Share of the questions whose answer changed when the messages were replaced (whether the "
            "answering node reads them, right or wrong; logged by the run from seed 2 on, measured after the run "
            "by `neuromas eval --messages empty,shuffled` before that):", ""]
    for s in seeds:
        r, after = views[s], _answers_changed(data / f"views-seed{s}" / "eval-messages.json")
        if r["changed"][0]["shuffled"] is not None:
            cells = [f"{mode} {r['changed'][step][mode]:.2f}" for step in (0, r["steps"]) for mode in MODES]
            out.append(f"- seed {s}: step 0: {cells[0]}, {cells[1]}; trained: {cells[2]}, {cells[3]}")
        elif after:
            out.append(f"- seed {s}: trained (after the run): " + ", ".join(f"{m} {v:.2f}" for m, v in after.items()))
    base = {s: {k: by_question(data / f"single-seed{s}" / f"matched-{k}.json", key, views[s]["ids"])
                for k, (key, _) in MATCHED.items()} for s in seeds}
    if any(a for accs in base.values() for a in accs.values()):
        out += ["", "Compute-matched baselines (the trained single node; the [2, 1] system makes 3 calls of at "
                "most 40 tokens):", ""]
        for s, accs in base.items():
            out.append(f"- seed {s}: " + ("; ".join(f"{MATCHED[k][1]}: {_fmt(a)}" for k, a in accs.items() if a)
                                          or "not measured"))
    out += ["", "Over seeds (each seed's difference; the headline):", ""]
    for mode in MODES:
        diffs = [views[s]["after"].mean - views[s]["ablated"][views[s]["steps"]][mode] for s in seeds]
        out.append(f"- trained [2, 1], real - {mode} messages: {OverSeeds(tuple(diffs))}")
        diffs0 = [views[s]["before"].mean - views[s]["ablated"][0][mode] for s in seeds]
        out.append(f"- untrained (step 0) [2, 1], real - {mode} messages: {OverSeeds(tuple(diffs0))}")
    change = OverSeeds(tuple(views[s]["after"].mean - views[s]["before"].mean for s in seeds))
    out.append(f"- [2, 1] change by training: {change}")
    both = [s for s in seeds if s in single]
    if both:
        out.append(f"- [2, 1] views - one node given the whole question, trained: "
                   f"{OverSeeds(tuple(views[s]['after'].mean - single[s]['after'].mean for s in both))}")
        out.append(f"- one node's change by training: "
                   f"{OverSeeds(tuple(single[s]['after'].mean - single[s]['before'].mean for s in both))}")
    for k, (_, label) in MATCHED.items():
        have = [s for s in seeds if base[s][k] is not None]
        if len(have) >= 2:
            out.append(f"- [2, 1] views - {label}: "
                       f"{OverSeeds(tuple(views[s]['after'].mean - base[s][k].mean for s in have))}")
    out += ["", "Pooled over seeds and questions (secondary: these trained systems on these questions):", ""]
    for mode in MODES:
        pairs = [(views[s]["ablated_after"][mode], views[s]["after"]) for s in seeds
                 if mode in views[s]["ablated_after"]]
        if pairs:
            out.append(f"- real - {mode}, {len(pairs)} seeds: {_pooled(pairs)}")
    if both:
        out.append(f"- views - one node: {_pooled([(single[s]['after'], views[s]['after']) for s in both])}")
    return "\n".join(out + ["", f"Command: {command}"])


MATCHED = {"vote": ("vote@3", "vote@3 of the trained single node (3 calls, as the system)"),
           "tokens": ("greedy_accuracy", "the trained single node given 120 tokens (the system's budget)")}


def by_question(path: Path, key: str, ids: list[str]) -> Accuracy | None:
    """Accuracy `key` of a `neuromas eval` result, in the order of `ids` (None: not measured)."""
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if f"{key}_correct" not in result:
        return None
    by_id = dict(zip(result["question_ids"], result[f"{key}_correct"]))
    return Accuracy.of([by_id[i] for i in ids])


def _answers_changed(path: Path) -> dict[str, float]:
    return json.loads(path.read_text()).get("answers_changed", {}) if path.is_file() else {}


def _pooled(pairs: list[tuple[Accuracy, Accuracy]]):
    return paired_difference(Accuracy.of([c for a, _ in pairs for c in a.correct]),
                             Accuracy.of([c for _, b in pairs for c in b.correct]))
