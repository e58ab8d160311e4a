"""The textual backward pass (ANN): edits to node texts, and optionally to a layer's aggregation,
proposed by an optimiser model from the system's own episodes and kept only if they help.

One textual step, after a rollout:
1. **Global critique.** The optimiser reads up to `episodes` episodes (failing first, then
   passing) - the task, every node's message, the answer, the reference and the score - and
   writes what the system as a whole did wrong (and, with `edit: text+aggregation`, may name a
   layer's new aggregation on a line ``LAYER <n>: <kind>``).
2. **Local critiques.** For each node chosen (every node, or GBC's "bandwidth": the `top_k`
   nodes with the largest connection weight on the failing episodes), the optimiser reads the
   node's place, its current text, its messages, and the global critique, and critiques the
   node. The prompt mixes them as ANN does: G_local = beta * G_global + (1 - beta) * local.
3. **Momentum.** Each node keeps its last `history` critiques (bounded); the edit prompt gives
   the new one weight alpha and the earlier ones 1 - alpha: G_t = alpha * G_t + (1 - alpha) * G_{t-1}.
4. **Edit, check, gate.** The optimiser writes each node's new text after ``NEW TEXT:`` (its
   reply starts with that marker, which the model continues). A
   proposal that does not parse, is empty, too long or unchanged fails the format check. The
   candidate (all edits that passed; with `gate: per_node`, only those that beat the current
   system when scored alone) is scored on the fixed validation split beside the current
   system; it is committed only if it beats it by more than `margin`, else rolled back.

The optimiser model is the base itself with the adapters off (`optimizer_model: base`) or another
local model. Every proposal, its check, the validation scores and the decision go to the log.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch

from neuromas.agents import BASE, Agents
from neuromas.aggregation import AGGREGATIONS
from neuromas.accuracy import accuracy_over_ranks
from neuromas.attribution import failing_episodes, failure_weights
from neuromas.config import AgentsConfig, Config, LoraSettings, ModelConfig, TextualConfig
from neuromas.errors import ConfigError
from neuromas.rollout import Episodes
from neuromas.system import System
from neuromas.topology import Topology, parse_node_id

_NEW_TEXT = re.compile(r"NEW TEXT:\s*(.+)", re.DOTALL)
_LAYER = re.compile(r"LAYER\s+(\d+)\s*:\s*([a-z:]+)", re.IGNORECASE)


class Critic:
    """The optimiser model: writes greedy replies to chat prompts. `base`: the system's own frozen
    base (adapter-free rows); otherwise a local model directory (or built-in name) loaded once."""

    def __init__(self, name: str, model_cfg: ModelConfig):
        self.name, self._own = name, None
        if name != "base":
            from neuromas.models import load_base_model

            base, tokenizer = load_base_model(ModelConfig(name=name, dtype=model_cfg.dtype, device=model_cfg.device))
            self._own = Agents(base, tokenizer, AgentsConfig(lora=LoraSettings(rank=1)), ["L0N0"])

    @torch.no_grad()
    def write(self, agents: Agents, chats: list[list[dict[str, str]]], max_new_tokens: int,
              prefix: str = "") -> list[str]:
        """Greedy replies; `prefix` starts each reply (the model continues it), so a small model
        cannot miss a marker such as ``NEW TEXT:``."""
        model = self._own or agents
        start = torch.tensor(model.tokenizer(prefix, add_special_tokens=False).input_ids, dtype=torch.long)
        prompts = [torch.cat([model.encode_with_spans(chat, [])[0], start]) for chat in chats]
        replies = model.generate(prompts, [BASE] * len(prompts), max_new_tokens, greedy=True)
        return [(prefix + model.decode(r.completion_ids)).strip() for r in replies]


@dataclass
class Proposal:
    node_id: str
    critique: str
    old_text: str
    new_text: str | None  # None: failed the format check
    problem: str = ""  # why it failed the check
    reply: str = ""  # the optimiser's whole edit reply
    validation: float | None = None  # gate: per_node - its validation accuracy alone


def parse_text(reply: str, old: str, max_chars: int) -> tuple[str | None, str]:
    """(the new text, "") from an edit reply, or (None, why it fails the format check)."""
    found = _NEW_TEXT.search(reply)
    if not found:
        return None, "no NEW TEXT: line"
    text = found.group(1).strip().splitlines()[0].strip() if found.group(1).strip() else ""
    if not text:
        return None, "empty"
    if len(text) > max_chars:
        return None, f"longer than {max_chars} characters"
    if text == old.strip():
        return None, "unchanged"
    return text, ""


def parse_aggregation(reply: str, topology: Topology) -> tuple[list[str] | None, str]:
    """A layer aggregation edit named in the global critique (``LAYER n: kind``), as the new
    per-layer list; (None, "") when none is named, (None, why) when it is not valid here."""
    found = _LAYER.search(reply)
    if not found:
        return None, ""
    layer, how = int(found.group(1)), found.group(2).lower()
    if how not in AGGREGATIONS or not 0 <= layer < topology.depth:
        return None, f"LAYER {layer}: {how} is not a layer and aggregation of this system"
    aggregation = list(topology.aggregation)
    aggregation[layer] = how
    try:
        Topology(topology.widths, topology.edges, aggregation)
    except ConfigError as e:
        return None, str(e)
    return (aggregation, "") if aggregation != topology.aggregation else (None, "unchanged")


class TextualOptimizer:
    """Owns the critic and each node's critique history (momentum); `step` returns the system to
    go on with (the candidate if committed, else the same one), the step's metrics and its log record."""

    def __init__(self, cfg: TextualConfig, model_cfg: ModelConfig):
        self.cfg = cfg
        self.critic = Critic(cfg.optimizer_model, model_cfg)
        self.history: dict[str, list[str]] = {}  # node id -> its last `cfg.history` critiques, oldest first

    def step(self, system: System, episodes: Episodes, rewards: torch.Tensor, validate: Callable[[System], float],
             weights: dict[str, float] | None = None) -> tuple[System, dict[str, float], dict]:
        """One textual step on `episodes` (scored `rewards`). `validate(system)`: its accuracy on the
        fixed validation split. `weights`: node -> connection weight on the failing episodes (top_k)."""
        cfg, agents = self.cfg, system.agents
        chosen = _pick_episodes(rewards[:episodes.num_regular], cfg.episodes)
        answers = episodes.answers()
        shown = "".join(_episode_text(episodes, e, answers[e], float(rewards[e])) for e in chosen)
        global_critique = self.critic.write(agents, [_global_prompt(system.topology, shown, cfg.edit)],
                                            cfg.max_new_tokens)[0]
        nodes = _nodes_to_edit(system.node_ids, weights, cfg.top_k)
        local_prompts = [_local_prompt(system, n, episodes, chosen, global_critique, cfg.beta) for n in nodes]
        critiques = self.critic.write(agents, local_prompts, cfg.max_new_tokens)
        edit_prompts = [_edit_prompt(n, system.texts.get(n, ""), c, self.history.get(n, []), cfg.alpha)
                        for n, c in zip(nodes, critiques)]
        replies = self.critic.write(agents, edit_prompts, cfg.max_new_tokens, prefix="NEW TEXT:")
        proposals = []
        for node_id, critique, reply in zip(nodes, critiques, replies):
            old = system.texts.get(node_id, "")
            new, problem = parse_text(reply, old, cfg.max_text_chars)
            proposals.append(Proposal(node_id, critique, old, new, problem, reply))
            self.history[node_id] = (self.history.get(node_id, []) + [critique])[-cfg.history:]
        aggregation, aggregation_problem = (parse_aggregation(global_critique, system.topology)
                                            if cfg.edit == "text+aggregation" else (None, ""))
        edits = {p.node_id: _with_text(p.node_id, p.new_text) for p in proposals if p.new_text is not None}
        if aggregation is not None:
            edits["aggregation"] = _with_aggregation(aggregation)
        candidate, before, after, alone = self._gate(system, edits, validate)
        for p in proposals:
            p.validation = alone.get(p.node_id)
        commit = candidate is not system
        record = {"global_critique": global_critique, "proposals": [vars(p) for p in proposals],
                  "aggregation": aggregation, "aggregation_problem": aggregation_problem,
                  "aggregation_validation": alone.get("aggregation"), "gate": cfg.gate,
                  "validation_before": before, "validation_after": after,
                  "decision": "commit" if commit else "roll back" if edits else "no valid edit"}
        metrics = {"textual/validation_before": before, "textual/validation_after": after,
                   "textual/committed": float(commit),
                   "textual/format_ok": sum(p.new_text is not None for p in proposals) / max(len(proposals), 1)}
        return candidate, metrics, record

    def _gate(self, system: System, edits: dict[str, Callable[[System], System]],
              validate: Callable[[System], float]) -> tuple[System, float, float, dict[str, float]]:
        """(the system to go on with, validation before, after, each edit's score alone). joint:
        all edits as one candidate. per_node: each edit scored alone first, and only those that
        beat the current system go into the candidate (itself scored when it combines several)."""
        before = validate(system)
        if not edits:
            return system, before, before, {}
        alone = {name: validate(edit(system)) for name, edit in edits.items()} if self.cfg.gate == "per_node" else {}
        kept = [n for n in edits if n not in alone or alone[n] > before + self.cfg.margin]
        if not kept:
            return system, before, max(alone.values()), alone
        candidate = system
        for name in kept:
            candidate = edits[name](candidate)
        after = alone[kept[0]] if len(kept) == 1 and alone else validate(candidate)
        return (candidate if after > before + self.cfg.margin else system), before, after, alone

    def renamed(self, old_to_new: dict[str, str]) -> None:
        """After growth: survivors' histories follow them to their new ids; new nodes start empty."""
        self.history = {old_to_new[n]: h for n, h in self.history.items() if n in old_to_new}

    def state(self) -> dict:
        return {"history": self.history}

    def load_state(self, state: dict | None) -> None:
        self.history = {n: list(h) for n, h in ((state or {}).get("history") or {}).items()}


class TextualStep(TextualOptimizer):
    """The textual step as a training run takes it: the optimizer given, once, an accuracy function
    on the fixed validation questions (the gate) and, under `textual.top_k`, a bandwidth function
    (node -> connection weight on the failing episodes, `attribution.failure_weights`)."""

    def __init__(self, cfg: TextualConfig, model_cfg: ModelConfig, accuracy: Callable[[System], float],
                 bandwidth: Callable[[System, Episodes, torch.Tensor], dict[str, float]] | None = None):
        super().__init__(cfg, model_cfg)
        self.accuracy, self.bandwidth = accuracy, bandwidth

    def __call__(self, system: System, episodes: Episodes, rewards: torch.Tensor, step: int
                 ) -> tuple[System, dict[str, float], dict, str]:
        """One gated step on a training step's rollout: (the system to go on with, metrics, the log
        record, one line saying what was decided)."""
        weights = self.bandwidth(system, episodes, rewards) if self.bandwidth and self.cfg.top_k is not None else None
        start = time.perf_counter()
        system, metrics, record = self.step(system, episodes, rewards, self.accuracy, weights)
        metrics["time/textual"] = time.perf_counter() - start
        well_formed = sum(p["new_text"] is not None for p in record["proposals"])
        line = (f"text  step {step:>4} | {record['decision']} (validation {record['validation_before']:.3f} -> "
                f"{record['validation_after']:.3f}, {well_formed} of {len(record['proposals'])} proposals well-formed)")
        return system, metrics, record, line

    @classmethod
    def for_run(cls, cfg: Config, task, engine, world) -> "TextualStep | None":
        """The textual step a run's recipe asks for (None without `textual.every` or `.only`): its
        gate is greedy accuracy on the first `textual.validation_questions` validation questions,
        its bandwidth GBC's connection weights on the failing episodes."""
        if not (cfg.textual.every or cfg.textual.only):
            return None
        if world.size > 1:
            raise ConfigError("textual: textual steps run in one process (launch without torchrun/deepspeed)")
        if not task.validation:
            raise ConfigError("textual: the gate needs a validation split (task.validation_path)")
        questions, alg = task.validation[:cfg.textual.validation_questions], cfg.algorithm

        def accuracy(system: System) -> float:
            return accuracy_over_ranks(engine, system, task, questions, world).mean

        def bandwidth(system: System, episodes: Episodes, rewards: torch.Tensor) -> dict[str, float]:
            return failure_weights(system.agents, episodes, rewards, alg.attribution.agg, alg.attribution.objective,
                                   cfg.rollout.temperature, cfg.train.micro_batch_size)
        return cls(cfg.textual, cfg.model, accuracy, bandwidth)


def _with_text(node_id: str, text: str) -> Callable[[System], System]:
    return lambda system: system.with_texts({node_id: text})


def _with_aggregation(aggregation: list[str]) -> Callable[[System], System]:
    def apply(system: System) -> System:
        return replace(system, topology=Topology(system.topology.widths, system.topology.edges, aggregation))
    return apply


def _pick_episodes(rewards: torch.Tensor, count: int) -> list[int]:
    """Up to `count` regular episodes: failing ones first, and up to half of them passing."""
    failing = failing_episodes(rewards, len(rewards))
    passing = [e for e in range(len(rewards)) if e not in failing]
    keep_passing = min(len(passing), count // 2)
    return sorted(failing[:count - keep_passing] + passing[:keep_passing])


def _nodes_to_edit(node_ids: list[str], weights: dict[str, float] | None, top_k: int | None) -> list[str]:
    if top_k is None or weights is None:
        return list(node_ids)
    ranked = sorted(node_ids, key=lambda n: (-weights.get(n, 0.0), -parse_node_id(n).layer, node_ids.index(n)))
    return [n for n in node_ids if n in ranked[:top_k]]


def _episode_text(episodes: Episodes, e: int, answer: str, reward: float) -> str:
    lines = [f"Task: {episodes.samples[e].question}", f"Reference answer: {episodes.samples[e].answer}"]
    lines += [f"[{who}] {text.strip() or '(no text)'}" for who, text in episodes.transcript(e)]
    lines += [f"Final answer: {answer.strip() or '(none)'}", f"Score: {reward:g}"]
    return "\n".join(lines) + "\n\n"


def _global_prompt(topology: Topology, shown: str, edit: str) -> list[dict[str, str]]:
    ask = ("In a few sentences, say what the network as a whole did wrong and what should change.")
    if edit == "text+aggregation":
        ask += (" If a layer should combine its messages differently, end with one line 'LAYER <n>: <kind>', "
                f"kind one of {', '.join(AGGREGATIONS)}.")
    return [{"role": "user", "content": f"A network of language models (layers of widths {topology.widths}) "
                                        f"worked on these tasks together:\n\n{shown}{ask}"}]


def _local_prompt(system: System, node_id: str, episodes: Episodes, chosen: list[int], global_critique: str,
                  beta: float) -> list[dict[str, str]]:
    node, topology = parse_node_id(node_id), system.topology
    own = [m.text.strip() or "(no text)" for m in episodes.of_node(node_id) if m.episode in chosen]
    place = (f"Node {node_id} is node {node.index + 1} of {topology.widths[node.layer]} in layer {node.layer + 1} "
             f"of {topology.depth}. Its current instruction: {system.texts.get(node_id) or '(none)'}")
    listed = "\n".join(f"- {text}" for text in own) or "- (it wrote nothing in these episodes)"
    return [{"role": "user", "content": f"{place}\n\nIts messages:\n{listed}\n\nCritique of the whole network "
                                        f"(weight {beta:g}): {global_critique}\n\nWrite a short critique of this "
                                        f"node's messages, giving the network's critique weight {beta:g} and your own "
                                        f"reading of its messages weight {1 - beta:g}."}]


def _edit_prompt(node_id: str, text: str, critique: str, history: list[str], alpha: float) -> list[dict[str, str]]:
    earlier = "".join(f"\n- {h}" for h in reversed(history)) or " (none)"
    return [{"role": "user", "content": f"Current instruction for node {node_id}: {text or '(none)'}\n\n"
                                        f"Critique now (weight {alpha:g}): {critique}\n\nEarlier critiques (weight "
                                        f"{1 - alpha:g}, newest first):{earlier}\n\nWrite an improved instruction "
                                        f"for this node: one short line starting with 'NEW TEXT:'."}]
