"""`neuromas eval`: accuracy of a saved system, and the baselines it should be compared with.

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

import torch
from tqdm import tqdm

from neuromas.agents import Agents
from neuromas.config import Config, TopologyConfig
from neuromas.errors import NeuromasError
from neuromas.prompts import PromptBuilder
from neuromas.rollout import RolloutEngine
from neuromas.stats import Accuracy, PairedDifference, paired_difference
from neuromas.system import System, load_system
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


def num_lora_params(agents: Agents, node_id: str | None = None) -> int:
    return sum(p.numel() for p in agents.parameters(node_id))


def single_agent_rank(system_params: int, params_at_rank_1: int) -> int:
    """The rank whose single adapter has the system's trainable-parameter count (nearest)."""
    return max(1, round(system_params / params_at_rank_1))


def evaluate(request: EvalRequest) -> dict:
    system, cfg, _ = load_system(request.source, trained=request.system == "trained")
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
    engine = RolloutEngine(cfg.rollout, PromptBuilder(cfg.prompts, task.answer_format), vote=task.vote)
    result = {"source": str(request.source), "system": "single-agent" if request.single_agent else request.system,
              "widths": system.topology.widths, "split": request.split, "num_questions": len(questions),
              "note": note, "question_ids": [q.id for q in questions]}
    metrics = {"greedy_accuracy": _greedy(engine, system, task, questions)}
    if request.samples > 1:
        metrics[f"pass@{request.samples}"] = _pass_at_k(engine, system, task, questions, request.samples,
                                                        cfg.train.seed)
    for name, accuracy in metrics.items():  # the mean, its standard error, and every question's result
        result.update({name: accuracy.mean, f"{name}_se": accuracy.se,
                       f"{name}_correct": list(map(int, accuracy.correct))})
    return result


def compare(a: dict, b: dict) -> dict[str, PairedDifference]:
    """B against A, question by question, for every accuracy both results hold."""
    if a["question_ids"] != b["question_ids"]:
        raise NeuromasError(f"{a['source']} and {b['source']} were evaluated on different questions (their recipes' "
                            "task settings differ); a paired comparison needs the same ones")
    names = [name for name in _accuracy_names(a) if f"{name}_correct" in b]
    return {name: paired_difference(Accuracy.of(a[f"{name}_correct"]), Accuracy.of(b[f"{name}_correct"]))
            for name in names}


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


@torch.no_grad()
def correct_answers(engine: RolloutEngine, system: System, task, questions, k: int = 1,
                    greedy: bool = True) -> torch.Tensor:
    """[Q, k] bool: which of k rollouts per question were correct (a reward of at least 1).
    The one definition of "correct" for the trainer's evaluations and `neuromas eval`."""
    episodes = engine.run(system, questions, samples_per_question=k, greedy=greedy)
    return (task.score(episodes.answers(), episodes.samples) >= 1.0).view(-1, k)


def accuracy_over_ranks(engine: RolloutEngine, system: System, task, questions, world) -> Accuracy:
    """Greedy accuracy on `questions`, shared out over the ranks of `world` (every rank gets the result)."""
    mine = questions[world.rank::world.size]
    correct = correct_answers(engine, system, task, mine).view(-1).tolist() if mine else []
    per_rank = world.gather(correct)
    return Accuracy.of(per_rank[i % world.size][i // world.size] for i in range(len(questions)))


def _correct(engine: RolloutEngine, system: System, task, questions, k: int, greedy: bool, desc: str) -> torch.Tensor:
    """`correct_answers` in chunks of the rollout micro-batch, with a progress bar."""
    chunk = max(1, engine.cfg.micro_batch_size // k)
    out = [correct_answers(engine, system, task, questions[start:start + chunk], k, greedy)
           for start in tqdm(range(0, len(questions), chunk), desc=desc, unit="chunk", dynamic_ncols=True)]
    return torch.cat(out)


def _greedy(engine: RolloutEngine, system: System, task, questions) -> Accuracy:
    return Accuracy.of(_correct(engine, system, task, questions, 1, True, "eval greedy")[:, 0].tolist())


def _pass_at_k(engine: RolloutEngine, system: System, task, questions, k: int, seed: int) -> Accuracy:
    torch.manual_seed(seed)
    return Accuracy.of(_correct(engine, system, task, questions, k, False, f"eval pass@{k}").any(dim=1).tolist())


def format_table(result: dict) -> str:
    rows = [("system", f"{result['system']} {result['widths']}"), ("", result["note"]),
            ("split", f"{result['split']} ({result['num_questions']} questions)")]
    rows += [(k.replace("_", " "), str(Accuracy.of(result[f"{k}_correct"]))) for k in _accuracy_names(result)]
    return _rows(rows)


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
