"""The work of `neuromas eval` (commands/eval.py): accuracy of a saved system, and the baselines
it should be compared with.

Message ablations (`--messages empty|shuffled`) evaluate the same system on the same questions
with the messages its nodes read replaced: by nothing, or by what the same nodes wrote for
another question. real - ablated says how much the system uses its messages (per node with
`--per-node`: which node's messages matter).

Greedy accuracy (one rollout per question, no sampling) and pass@k (k sampled rollouts per
question at the recipe's temperature; a question passes when any of them is correct). The
baselines: the same topology with untrained adapters (`--system untrained`, i.e. the base
model in every node), and one node whose LoRA rank gives it the same number of trainable
parameters as the whole system (`--single-agent`, the NeuroMAS paper's fair baseline).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from neuromas.accuracy import answers_changed, greedy, majority_vote, pass_at_k
from neuromas.agents import Agents
from neuromas.config import Config, TopologyConfig
from neuromas.errors import NeuromasError
from neuromas.rollout import Ablation, RolloutEngine
from neuromas.stats import Accuracy, PairedDifference, paired_difference
from neuromas.checkpoint import load_system
from neuromas.system import System
from neuromas.tasks import build_task
from neuromas.topology import Topology


@dataclass
class EvalRequest:
    source: Path
    split: str = "test"  # test | validation
    samples: int = 1  # k of pass@k (1: greedy only)
    num_questions: int | None = None  # default: the whole split
    system: str = "trained"  # trained | untrained
    single_agent: bool = False
    messages: tuple[str, ...] = ()  # message ablations besides the real messages: empty | shuffled
    per_node: bool = False  # ablate one node's outgoing messages at a time (else every node's at once)
    transcripts: int = 8  # full transcripts kept per variant in the result
    vote: int = 0  # also vote@K: the majority answer of K sampled rollouts per question (0: not measured)
    max_new_tokens: int | None = None  # every node's token limit (a token-matched baseline); None: the recipe's


def num_lora_params(agents: Agents, node_id: str | None = None) -> int:
    return sum(p.numel() for p in agents.parameters(node_id))


def single_agent_rank(system_params: int, params_at_rank_1: int) -> int:
    """The rank whose single adapter has the system's trainable-parameter count (nearest)."""
    return max(1, round(system_params / params_at_rank_1))


def evaluate(request: EvalRequest) -> dict:
    system, cfg, _ = load_system(request.source, trained=request.system == "trained")
    if request.max_new_tokens:
        cfg.rollout.max_new_tokens = cfg.rollout.answer_max_new_tokens = request.max_new_tokens
    system_params = num_lora_params(system.agents)
    if request.single_agent:
        system, note = _single_agent(system.agents, cfg, system_params)
    else:
        note = f"{len(system.node_ids)} nodes, {system_params:,} trainable parameters"
    task = build_task(cfg.task)
    questions = task.test if request.split == "test" else task.validation
    questions = questions[:request.num_questions] if request.num_questions else questions
    if not questions:
        raise NeuromasError(f"--split {request.split}: the task has no such split (see task.test_path)")
    engine = RolloutEngine.for_run(cfg, task)
    result = {"source": str(request.source), "system": "single-agent" if request.single_agent else request.system,
              "widths": system.topology.widths, "split": request.split, "num_questions": len(questions),
              "note": note, "question_ids": [q.id for q in questions], **compute(system.topology, cfg.rollout)}
    runs = {"real": greedy(engine, system, task, questions, keep=request.transcripts)}
    for name, ablation in ablations(system.topology, request.messages, request.per_node).items():
        runs[name] = greedy(engine, system, task, questions, ablation, name, request.transcripts)
    metrics = {"greedy_accuracy" if name == "real" else f"greedy_accuracy_{name}": Accuracy.of(r.correct[:, 0].tolist())
               for name, r in runs.items()}
    if request.vote:
        metrics[f"vote@{request.vote}"] = majority_vote(engine, system, task, questions, request.vote, cfg.train.seed)
    if request.samples > 1:
        metrics[f"pass@{request.samples}"] = pass_at_k(engine, system, task, questions, request.samples,
                                                        cfg.train.seed)
    for name, accuracy in metrics.items():  # the mean, its standard error, and every question's result
        result.update({name: accuracy.mean, f"{name}_se": accuracy.se,
                       f"{name}_correct": list(map(int, accuracy.correct))})
    result["real_minus_ablated"] = {name[len("greedy_accuracy_"):]: paired_difference(accuracy,
                                                                                     metrics["greedy_accuracy"]).to_dict()
                                    for name, accuracy in metrics.items() if name.startswith("greedy_accuracy_")}
    result["answers_changed"] = {name: answers_changed(runs["real"].answers, r.answers)
                                 for name, r in runs.items() if name != "real"}
    result["transcripts"] = {name: r.transcripts for name, r in runs.items()}
    return result


def ablations(topology: Topology, modes: tuple[str, ...], per_node: bool) -> dict[str, Ablation]:
    """The message ablations a request asks for, by name: `shuffled` (every read node at once), or
    `shuffled_L0N1` per node. The read nodes are those whose messages another node reads."""
    read = [n for n in topology.node_ids if n not in topology.answer_ids]
    if modes and not read:
        raise NeuromasError(f"--messages: {topology.widths} has no messages to ablate (one answering layer)")
    if not per_node:
        return {mode: Ablation(mode) for mode in modes}
    return {f"{mode}_{node}": Ablation(mode, frozenset({node})) for mode in modes for node in read}


def compute(topology: Topology, cfg) -> dict[str, int]:
    """What one greedy answer of a system costs: its model calls (a judged layer adds one) and the
    most tokens they may generate in all (`cfg`: the RolloutConfig). A compute-matched baseline
    gets one node the same token budget, or a vote over as many samples as calls."""
    limits = [cfg.answer_max_new_tokens or cfg.max_new_tokens if layer == topology.depth - 1 else cfg.max_new_tokens
              for layer, nodes in enumerate(topology.layers) for _ in nodes]
    judged = sum(how == "select:judge" for how in topology.aggregation)
    return {"num_calls": len(limits) + judged, "token_budget": sum(limits) + judged * cfg.judge_max_new_tokens}


def compare(a: dict, b: dict, pairs: list[tuple[str, str]] | None = None) -> dict[str, PairedDifference]:
    """B against A, question by question: for every accuracy both results hold, or for `pairs`
    of (A's accuracy, B's accuracy) such as ("vote@3", "greedy_accuracy")."""
    if a["question_ids"] != b["question_ids"]:
        raise NeuromasError(f"{a['source']} and {b['source']} were evaluated on different questions (their recipes' "
                            "task settings differ); a paired comparison needs the same ones")
    pairs = pairs or [(name, name) for name in _accuracy_names(a) if f"{name}_correct" in b]
    return {name_b if name_a == name_b else f"{name_b} vs {name_a}":
            paired_difference(Accuracy.of(a[f"{name_a}_correct"]), Accuracy.of(b[f"{name_b}_correct"]))
            for name_a, name_b in pairs}


def _single_agent(agents: Agents, cfg: Config, system_params: int) -> tuple[System, str]:
    """One node, untrained, with the rank that matches the system's budget."""
    lora = cfg.agents.lora
    scale = lora.alpha / lora.rank  # kept: the single agent's updates have the same scale
    cfg.agents.overrides = {}
    lora.rank = 1
    probe = Agents(agents.model.unload(), agents.tokenizer, cfg.agents, ["L0N0"])
    rank = single_agent_rank(system_params, num_lora_params(probe))
    lora.rank, lora.alpha = rank, scale * rank
    single = Agents(probe.model.unload(), agents.tokenizer, cfg.agents, ["L0N0"])
    topology = Topology.from_config(TopologyConfig(widths=[1]))
    note = (f"one node, rank {rank}: {num_lora_params(single):,} trainable parameters vs the system's "
            f"{system_params:,}; untrained (train it with topology.widths=[1] agents.lora.rank={rank})")
    return System(single, topology), note


def format_table(result: dict) -> str:
    rows = [("system", f"{result['system']} {result['widths']}"), ("", result["note"]),
            ("split", f"{result['split']} ({result['num_questions']} questions)")]
    rows += [(_label(k), str(Accuracy.of(result[f"{k}_correct"]))) for k in _accuracy_names(result)]
    rows += [(f"real - {name.replace('_', ' ')}", str(PairedDifference(**diff)))
             for name, diff in result.get("real_minus_ablated", {}).items()]
    rows += [(f"answers changed, {name.replace('_', ' ')}", f"{share:.3f} of {result['num_questions']} questions")
             for name, share in result.get("answers_changed", {}).items()]
    return _rows(rows)


def _label(name: str) -> str:
    """greedy_accuracy -> "greedy accuracy"; greedy_accuracy_shuffled_L0N1 -> "greedy, L0N1 shuffled"."""
    if not name.startswith("greedy_accuracy_"):
        return name.replace("_", " ")
    mode, _, node = name[len("greedy_accuracy_"):].partition("_")
    return f"greedy, {node + ' ' if node else 'messages '}{mode}"


def format_comparison(a: dict, b: dict, paired: dict[str, PairedDifference]) -> str:
    """Both systems' tables, then B - A for each accuracy."""
    rows = [(f"B - A, {name.replace('_', ' ')}", str(diff)) for name, diff in paired.items()]
    return f"A: {a['source']}\n{format_table(a)}\n\nB: {b['source']}\n{format_table(b)}\n\n{_rows(rows)}"


def _accuracy_names(result: dict) -> list[str]:
    return [k[:-len("_correct")] for k in result if k.endswith("_correct")]


def _rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def write_result(result: dict, path: Path) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n")
