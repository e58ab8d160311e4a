"""The work of `neuromas attribute RUN` (commands/attribute.py): GBC/AgentChord's connection
weights on a saved system's failures.

The system answers the first N questions of a split greedily. For every failing episode, each
node's inputs get a salience (the gradient of the node's objective with respect to the input
message's embeddings, `Agents.input_salience`); normalised over a reader's inputs these are
the reader's connection weights. The failure is then traced back from the answering node along
the strongest connection at each reader until a node that reads nobody: that node is the
episode's strongest error source. The report gives each edge's mean connection weight over the
failing episodes, each node's share of being the strongest source, a picture and a JSON file.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from neuromas.attribution import failing_episodes, failure_shares, strongest_path
from neuromas.errors import NeuromasError
from neuromas.pictures import draw_topology
from neuromas.rollout import Episodes, RolloutEngine
from neuromas.checkpoint import load_system
from neuromas.tasks import build_task


@torch.no_grad()
def _failing(engine: RolloutEngine, system, task, questions) -> tuple[Episodes, list[int], int]:
    episodes = engine.run(system, questions, samples_per_question=1, greedy=True)
    rewards = task.rewards(episodes)
    return episodes, failing_episodes(rewards, len(questions)), len(questions)


def attribute(source: Path, num_questions: int, split: str, agg: str, objective: str) -> dict:
    """The report as a plain dict (see the module docstring)."""
    system, cfg, _ = load_system(source)
    task = build_task(cfg.task)
    questions = (task.test if split == "test" else task.validation)[:num_questions]
    if not questions:
        raise NeuromasError(f"--split {split}: the task has no such split (see task.test_path)")
    engine = RolloutEngine.for_run(cfg, task)
    episodes, failing, total = _failing(engine, system, task, questions)
    shares, raw = failure_shares(system.agents, episodes, failing, agg, objective, cfg.rollout.temperature,
                                 cfg.rollout.micro_batch_size)
    edges = []
    for src, dst in system.topology.edges:  # mean over the failing episodes in which the reader ran
        seen = [shares[e][dst].get(src, 0.0) for e in failing if dst in shares[e]]
        edges.append({"source": src, "target": dst, "weight": statistics.mean(seen) if seen else 0.0,
                      "raw_salience": statistics.mean(raw[src, dst]) if (src, dst) in raw else 0.0})
    sources = {n: 0 for n in system.node_ids}
    for e in failing:
        answering = episodes.combined.get((e, system.topology.depth - 1))
        start = answering.source if answering is not None and answering.source else system.topology.answer_ids[0]
        sources[strongest_path(start, shares[e])[-1]] += 1
    return {"source": str(source), "split": split, "num_questions": total, "num_failing": len(failing),
            "agg": agg, "objective": objective, "topology": system.topology.to_dict(), "edges": edges,
            "strongest_source": {n: c / len(failing) if failing else 0.0 for n, c in sources.items()},
            "strongest_source_counts": sources}


def draw_report(report: dict, path: Path) -> Path:
    from neuromas.topology import Topology

    topology = Topology.from_dict(report["topology"])
    weights = {(e["source"], e["target"]): e["weight"] for e in report["edges"]}
    title = (f"connection weights ({report['objective']}, {report['agg']}) on {report['num_failing']} failing of "
             f"{report['num_questions']} questions; shade: share as strongest error source")
    return draw_topology(topology, path, title, edge_weights=weights, node_shade=report["strongest_source"])


def format_report(report: dict) -> str:
    lines = [f"{report['num_failing']} of {report['num_questions']} questions failed ({report['split']} split); "
             f"connection weights: {report['objective']}, {report['agg']}, mean over the failing episodes"]
    lines += [f"  {e['source']} -> {e['target']}: weight {e['weight']:.3f} (salience {e['raw_salience']:.3g})"
              for e in report["edges"]]
    lines += ["strongest error source (share of failing episodes):"]
    lines += [f"  {node}: {share:.2f} ({report['strongest_source_counts'][node]})"
              for node, share in report["strongest_source"].items()]
    return "\n".join(lines)
