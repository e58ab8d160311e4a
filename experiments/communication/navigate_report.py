"""The Navigate report (NeuroMAS-3 against the single agent), rebuilt from the kept data alone
(experiments/communication/data/navigate)."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.communication.report import _fmt, _pooled, load
from experiments.runner import read_jsonl
from neuromas.stats import Accuracy, OverSeeds

COMMON = 50  # every seed evaluates at least the first 50 test questions

MATCHED = {"vote": ("vote@3", "vote@3 of the trained single agent (3 calls, as the chain)"),
           "tokens": ("greedy_accuracy", "the trained single agent given 192 tokens (the chain's budget)")}


def matched(single: Path, chain_ids: list[str]) -> dict[str, Accuracy]:
    """The single agent's compute-matched accuracies, in the order of the chain's questions."""
    out = {}
    for name, (key, _) in MATCHED.items():
        path = single / f"matched-{name}.json"
        if path.is_file():
            result = json.loads(path.read_text())
            by_id = dict(zip(result["question_ids"], result[f"{key}_correct"]))
            if all(i in by_id for i in chain_ids):
                out[name] = Accuracy.of([by_id[i] for i in chain_ids])
    return out


def load_common(run: Path, k: int = COMMON) -> dict:
    """`load`, with every accuracy restricted to the first `k` test questions (per question, from
    evals.jsonl), so that seeds evaluated on 100 and on 50 questions compare on the same ones."""
    r = load(run)
    first, last = (read_jsonl(run / "evals.jsonl")[i] for i in (0, -1))
    assert first["ids"][:k] == last["ids"][:k]
    r.update(ids=first["ids"][:k], before=Accuracy.of(first["correct"][:k]), after=Accuracy.of(last["correct"][:k]),
             ablated={step: {mode: Accuracy.of(c[:k]).mean for mode, c in e.get("ablated", {}).items()}
                      for step, e in ((0, first), (r["steps"], last))},
             ablated_after={mode: Accuracy.of(c[:k]) for mode, c in last.get("ablated", {}).items()})
    return r


def report(data: Path, command: str) -> str:
    seeds = sorted(int(p.name.split("seed")[1]) for p in data.glob("chain-seed*") if (p / "wall.json").is_file())
    chain = {s: load_common(data / f"chain-seed{s}") for s in seeds}
    single = {s: load_common(data / f"single-seed{s}") for s in seeds
              if (data / f"single-seed{s}" / "wall.json").is_file()}
    base = {s: matched(data / f"single-seed{s}", chain[s]["ids"]) for s in single}
    n = chain[seeds[0]]["after"].n
    out = [f"Greedy accuracy on the same {n} test questions of generated BBH Navigate (± standard error), "
           f"{len(seeds)} seeds; answers read from \\boxed{{}} only (task.extract: boxed). Answers changed: over "
           "all the questions a seed evaluated (100 for seed 0).", "",
           "Trivial baseline: always Yes (or always No): 0.500 (the splits are balanced by construction).", "",
           "| seed | arm | steps | step 0 | trained | trained, messages shuffled | trained, messages emptied | "
           "answers changed (shuffled) | sampled reward, first 4 / last 4 steps | wall | load |",
           "|" + " --- |" * 11]
    for s in seeds:
        for arm, r in (("NeuroMAS-3 chain", chain[s]), ("single agent, rank 24", single.get(s))):
            if r is None:
                continue
            abl, changed = r["ablated"][r["steps"]], r["changed"][r["steps"]]["shuffled"]
            cells = [f"{abl[m]:.3f}" if m in abl else "-" for m in ("shuffled", "empty")]
            reward = r["reward"]
            out.append(f"| {s} | {arm} | {r['steps']} | {_fmt(r['before'])} | {_fmt(r['after'])} | {cells[0]} | "
                       f"{cells[1]} | {'-' if changed is None else f'{changed:.2f}'} | "
                       f"{sum(reward[:4]) / 4:.2f} / {sum(reward[-4:]) / 4:.2f} | {r['wall_s'] / 60:.1f} min | "
                       f"{r['load_before']:.1f} -> {r['load_after']:.1f} |")
    if base:
        out += ["", "Compute-matched baselines (the trained single agent; the chain makes 3 calls of at most 64 "
                "tokens):", ""]
        for s, accs in base.items():
            out.append(f"- seed {s}: " + "; ".join(f"{MATCHED[k][1]}: {_fmt(a)}" for k, a in accs.items()))
    out += ["", "Over seeds (each seed's difference; the headline):", ""]
    both = [s for s in seeds if s in single]
    rows = [("NeuroMAS-3 - single agent (equal parameters), trained", [chain[s]["after"].mean - single[s]["after"].mean
                                                                      for s in both]),
            ("NeuroMAS-3 - single agent, untrained (step 0)", [chain[s]["before"].mean - single[s]["before"].mean
                                                             for s in both]),
            ("NeuroMAS-3 change by training", [chain[s]["after"].mean - chain[s]["before"].mean for s in seeds]),
            ("single agent change by training", [single[s]["after"].mean - single[s]["before"].mean for s in both]),
            ("trained chain, real - shuffled messages", [chain[s]["after"].mean - chain[s]["ablated"][chain[s]["steps"]]
                                                         ["shuffled"] for s in seeds]),
            ("untrained chain, real - shuffled messages", [chain[s]["before"].mean - chain[s]["ablated"][0]["shuffled"]
                                                           for s in seeds])]
    for name in MATCHED:
        have = [s for s in both if name in base[s]]
        rows.append((f"NeuroMAS-3 - {MATCHED[name][1]}", [chain[s]["after"].mean - base[s][name].mean for s in have]))
    for label, diffs in rows:
        if len(diffs) >= 2:
            out.append(f"- {label}: {OverSeeds(tuple(diffs))}")
        elif diffs:
            out.append(f"- {label}: {diffs[0]:+.3f} (one seed)")
    out += ["", "Pooled over seeds and questions (secondary: these trained systems on these questions):", ""]
    if both:
        out.append(f"- NeuroMAS-3 - single agent: {_pooled([(single[s]['after'], chain[s]['after']) for s in both])}")
    shuffled = [(chain[s]["ablated_after"]["shuffled"], chain[s]["after"]) for s in seeds
                if "shuffled" in chain[s]["ablated_after"]]
    if shuffled:
        out.append(f"- real - shuffled, {len(shuffled)} seeds: {_pooled(shuffled)}")
    return "\n".join(out + ["", f"Command: {command}"])
