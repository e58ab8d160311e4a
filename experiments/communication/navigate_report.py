"""The Navigate report (NeuroMAS-3 against the single agent), rebuilt from the kept data alone
(experiments/communication/data/navigate)."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.communication.report import _fmt, _pooled, by_question
from experiments.runner import read_jsonl
from neuromas.stats import Accuracy, OverSeeds

MATCHED = {"vote": ("vote@3", "vote@3 of the trained single agent (3 calls, as the chain)"),
           "tokens": ("greedy_accuracy", "the trained single agent given 192 tokens (the chain's budget)")}


def load(run: Path) -> dict:
    """One kept run: its final evaluation per question (and with its messages shuffled), the
    share of answers that changed, its sampled rewards, wall time and load."""
    last = read_jsonl(run / "evals.jsonl")[-1]
    metrics = read_jsonl(run / "metrics.jsonl")
    at = {m["step"]: m for m in metrics if "eval/accuracy" in m}[last["step"]]
    return {"ids": last["ids"], "steps": last["step"], "after": Accuracy.of(last["correct"]),
            "ablated": {mode: Accuracy.of(c) for mode, c in last.get("ablated", {}).items()},
            "changed": at.get("eval/changed_shuffled"),
            "reward": [m["reward/mean"] for m in metrics if "reward/mean" in m],
            **json.loads((run / "wall.json").read_text())}


def _changed(path: Path) -> str:
    """The untrained chain's share of answers that changed with its messages replaced."""
    if not path.is_file():
        return ""
    shares = json.loads(path.read_text()).get("answers_changed", {})
    return (" Answers of the untrained chain that changed with its messages: "
            + ", ".join(f"{mode} {share:.2f}" for mode, share in shares.items()) + ".") if shares else ""


def report(data: Path, command: str) -> str:
    seeds = sorted(int(p.name.split("seed")[1]) for p in data.glob("chain-seed*") if (p / "wall.json").is_file())
    chain = {s: load(data / f"chain-seed{s}") for s in seeds}
    single = {s: load(data / f"single-seed{s}") for s in seeds if (data / f"single-seed{s}" / "wall.json").is_file()}
    ids = chain[seeds[0]]["ids"]
    assert all(r["ids"] == ids for r in [*chain.values(), *single.values()]), "the arms saw different questions"
    untrained = {name: by_question(data / f"untrained-{arm}.json", key, ids) for name, arm, key in (
        ("chain", "chain", "greedy_accuracy"), ("chain, emptied", "chain", "greedy_accuracy_empty"),
        ("chain, shuffled", "chain", "greedy_accuracy_shuffled"), ("single", "single", "greedy_accuracy"))}
    base = {s: {k: by_question(data / f"single-seed{s}" / f"matched-{k}.json", key, ids)
                for k, (key, _) in MATCHED.items()} for s in single}
    out = [f"Greedy accuracy on the same {len(ids)} test questions of generated BBH Navigate (± standard error), "
           f"{len(seeds)} seed{'s' * (len(seeds) > 1)}, after {chain[seeds[0]]['steps']} steps; the boxed Yes/No, "
           "else the last Yes or No "
           "of the reply.", "",
           "Trivial baseline: always Yes (or always No): 0.500 (every split is balanced by construction).",
           "Untrained (fresh adapters leave the base unchanged, so every seed starts here): "
           + "; ".join(f"{k} {_fmt(a)}" for k, a in untrained.items() if a is not None) + "."
           + _changed(data / "untrained-chain.json"), "",
           "| seed | arm | trained | trained, messages shuffled | answers changed (shuffled) | "
           "sampled reward, first 4 / last 4 steps | wall | load |", "|" + " --- |" * 8]
    for s in seeds:
        for arm, r in (("NeuroMAS-3 chain", chain[s]), ("single agent, rank 24", single.get(s))):
            if r is None:
                continue
            shuffled = r["ablated"].get("shuffled")
            out.append(f"| {s} | {arm} | {_fmt(r['after'])} | {_fmt(shuffled) if shuffled else '-'} | "
                       f"{'-' if r['changed'] is None else format(r['changed'], '.2f')} | "
                       f"{sum(r['reward'][:4]) / 4:.2f} / {sum(r['reward'][-4:]) / 4:.2f} | "
                       f"{r['wall_s'] / 60:.1f} min | {r['load_before']:.1f} -> {r['load_after']:.1f} |")
    if base:
        out += ["", "Compute-matched baselines (the trained single agent; the chain makes 3 calls of at most 64 "
                "tokens):", ""]
        for s, accs in base.items():
            measured = [f"{MATCHED[k][1]}: {_fmt(a)}" for k, a in accs.items() if a]
            out.append(f"- seed {s}: " + ("; ".join(measured) or "not measured"))
    both = [s for s in seeds if s in single]
    rows = [("NeuroMAS-3 - single agent (equal parameters), trained",
             [chain[s]["after"].mean - single[s]["after"].mean for s in both]),
            ("trained chain, real - shuffled messages",
             [chain[s]["after"].mean - chain[s]["ablated"]["shuffled"].mean for s in seeds])]
    for name, arm in (("NeuroMAS-3", chain), ("single agent", single)):
        start = untrained["chain" if arm is chain else "single"]
        if start is not None:
            rows.append((f"{name}: trained - untrained", [arm[s]["after"].mean - start.mean for s in arm]))
    for k, (_, label) in MATCHED.items():
        have = [s for s in both if base[s][k] is not None]
        rows.append((f"NeuroMAS-3 - {label}", [chain[s]["after"].mean - base[s][k].mean for s in have]))
    out += ["", "Over seeds (each seed's difference; the headline):", ""]
    for label, diffs in rows:
        if len(diffs) >= 2:
            out.append(f"- {label}: {OverSeeds(tuple(diffs))}")
        elif diffs:
            out.append(f"- {label}: {diffs[0]:+.3f} (one seed)")
    out += ["", "Pooled over seeds and questions (secondary: these trained systems on these questions):", ""]
    if both:
        out.append(f"- NeuroMAS-3 - single agent: {_pooled([(single[s]['after'], chain[s]['after']) for s in both])}")
    shuffled = [(chain[s]["ablated"]["shuffled"], chain[s]["after"]) for s in seeds]
    out.append(f"- real - shuffled: {_pooled(shuffled)}")
    if untrained["chain"] is not None:
        trained = [(untrained["chain"], chain[s]["after"]) for s in seeds]
        out.append(f"- NeuroMAS-3 trained - untrained: {_pooled(trained)}")
    return "\n".join(out + ["", f"Command: {command}"])
