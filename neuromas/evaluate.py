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

from neuromas import checkpoint as ckpt
from neuromas.agents import Agents
from neuromas.config import Config, TopologyConfig, load_config
from neuromas.errors import NeuromasError
from neuromas.growth import load_adapter_states
from neuromas.models import load_base_model
from neuromas.prompts import PromptBuilder
from neuromas.rollout import RolloutEngine
from neuromas.surgery import find_system
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
    system_dir, config_path = find_system(request.source)
    cfg = load_config(config_path)
    state = ckpt.read_state(system_dir)
    topology = Topology.from_dict(state["topology"])
    base, tokenizer = load_base_model(cfg.model)
    agents = Agents(base, tokenizer, cfg.agents, topology.node_ids)
    system_params = num_lora_params(agents)
    if request.single_agent:
        agents, topology, note = _single_agent(agents, cfg, system_params)
    else:
        note = f"{len(topology.node_ids)} nodes, {system_params:,} trainable parameters"
        if request.system == "trained":
            load_adapter_states(agents, ckpt.adapter_states_from(system_dir, topology.node_ids))
    task = build_task(cfg.task)
    questions = task.test if request.split == "test" else task.validation
    questions = questions[:request.num_questions] if request.num_questions else questions
    if not questions:
        raise NeuromasError(f"--split {request.split}: the task has no such split (see task.test_path)")
    engine = RolloutEngine(cfg.rollout, agents, topology, PromptBuilder(cfg.prompts, task.answer_format))
    result = {"source": str(request.source), "system": "single-agent" if request.single_agent else request.system,
              "widths": topology.widths, "split": request.split, "num_questions": len(questions), "note": note,
              "greedy_accuracy": _greedy(engine, task, questions)}
    if request.samples > 1:
        result[f"pass@{request.samples}"] = _pass_at_k(engine, task, questions, request.samples, cfg.train.seed)
    return result


def _single_agent(agents: Agents, cfg: Config, system_params: int):
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
    return single, topology, note


@torch.no_grad()
def _correct(engine: RolloutEngine, task, questions, k: int, greedy: bool, desc: str) -> torch.Tensor:
    """[Q, k] bool: which rollouts answered correctly, in chunks with a progress bar."""
    chunk = max(1, engine.cfg.micro_batch_size // k)
    out = []
    for start in tqdm(range(0, len(questions), chunk), desc=desc, unit="chunk", dynamic_ncols=True):
        episodes = engine.run(questions[start:start + chunk], samples_per_question=k, greedy=greedy)
        out.append((task.score(episodes.answers(), episodes.samples) >= 1.0).view(-1, k))
    return torch.cat(out)


def _greedy(engine: RolloutEngine, task, questions) -> float:
    return float(_correct(engine, task, questions, 1, True, "eval greedy").float().mean())


def _pass_at_k(engine: RolloutEngine, task, questions, k: int, seed: int) -> float:
    torch.manual_seed(seed)
    return float(_correct(engine, task, questions, k, False, f"eval pass@{k}").any(dim=1).float().mean())


def format_table(result: dict) -> str:
    rows = [("system", f"{result['system']} {result['widths']}"), ("", result["note"]),
            ("split", f"{result['split']} ({result['num_questions']} questions)"),
            ("greedy accuracy", f"{result['greedy_accuracy']:.3f}")]
    rows += [(k, f"{v:.3f}") for k, v in result.items() if k.startswith("pass@")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def write_result(result: dict, path: Path) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n")
