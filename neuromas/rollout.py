"""The rollout engine: runs the graph layer by layer, one batched generate per layer.

Every (episode, node) row of a layer goes into the same generate call, each row with its
own node's adapter; the layer's messages then feed the next layer's prompts. For every
message we keep the prompt ids, the sampled ids and their sampling log-probs, so the update
never re-tokenizes text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple, Protocol

import torch

from neuromas.agents import BASE, Agents, Generation
from neuromas.aggregation import Combined, Vote, combine, parse_judge
from neuromas.config import Config, RolloutConfig
from neuromas.prompts import PromptBuilder
from neuromas.system import System
from neuromas.tasks import Sample
from neuromas.tasks.votes import boxed_vote
from neuromas.tools import Call, ToolBox
from neuromas.topology import Topology, parse_node_id


@dataclass
class Message:
    """What one node wrote in one episode: an edge of the graph."""

    episode: int
    node_id: str
    prompt_ids: torch.Tensor  # [P] int64
    completion_ids: torch.Tensor  # [C] int64, ends with the stop token unless truncated
    logprobs: torch.Tensor | None  # [C] fp32 sampling log-probs; None for greedy rollouts
    text: str
    truncated: bool
    input_spans: dict[str, tuple[int, int]]  # upstream node id -> its message's token span in prompt_ids
    # With tools (neuromas.tools), completion_ids also hold each tool result's tokens, which the node
    # did not sample: sampled_mask [C] is 1 on the node's own tokens, 0 on those (None: all its own).
    sampled_mask: torch.Tensor | None = None
    tool_calls: int = 0
    tool_errors: int = 0
    turn: int = 0  # of a multi-turn episode (neuromas.envs): the turn the message was written in

    @property
    def own_mask(self) -> torch.Tensor:
        """[C] 1.0 on the tokens the node sampled (what the loss trains), 0.0 on tool results."""
        if self.sampled_mask is None:
            return torch.ones(len(self.completion_ids))
        return self.sampled_mask.float()

    @property
    def num_sampled(self) -> int:
        return len(self.completion_ids) if self.sampled_mask is None else int(self.sampled_mask.sum())


@dataclass(frozen=True)
class Branch:
    """Resample `node_id` of `episode` `copies` times, inputs held fixed, downstream re-run."""

    episode: int
    node_id: str
    copies: int


class BranchGroup(NamedTuple):
    """A branch carried out: its source episode, the branched node and the copy episodes."""

    source: int
    node_id: str
    copies: list[int]


@dataclass
class Episodes:
    """E full-system rollouts: the one batch type that crosses component boundaries.

    The first `num_regular` episodes are the K samples per question; any after them are branch
    copies, which share their source episode's messages except the branched node's and those
    downstream of it (only those are in `messages`).
    """

    samples: list[Sample]  # [E] the task sample of each episode
    group_ids: torch.Tensor  # [E] int64, question index within the batch (advantage group)
    messages: list[Message]  # every generated message of every episode, layer by layer
    answer_ids: list[str]  # the answering nodes (the last layer): one sink, or a combined layer's nodes
    full: list[bool]  # [E] whether the episode included the growth-gated new nodes
    num_regular: int  # episodes before the branch copies
    branches: list[BranchGroup]
    combined: dict[tuple[int, int], Combined] = field(default_factory=dict)  # (episode, layer) -> its combination
    # Multi-turn episodes (neuromas.envs): each episode's return, and per turn its action, the
    # observation that answered it and that turn's reward. None: one-turn episodes, scored by the task.
    returns: torch.Tensor | None = None
    turns: list[list[dict]] | None = None

    @property
    def num_episodes(self) -> int:
        return len(self.samples)

    @cached_property
    def _by_node(self) -> dict[str, list[Message]]:
        """Messages by node, in order: indexed once (`messages` is not changed after a rollout)."""
        out: dict[str, list[Message]] = {}
        for m in self.messages:
            out.setdefault(m.node_id, []).append(m)
        return out

    def answers(self) -> list[str]:
        """The system's answer of each episode, in episode order: the sink's text, or the last
        layer's combination."""
        last = parse_node_id(self.answer_ids[0]).layer
        if (0, last) in self.combined:
            return [self.combined[e, last].text for e in range(self.num_episodes)]
        by_episode = {m.episode: m.text for m in self.of_node(self.answer_ids[0])}
        return [by_episode[e] for e in range(self.num_episodes)]

    def of_node(self, node_id: str) -> list[Message]:
        return self._by_node.get(node_id, [])

    def transcript(self, episode: int) -> list[tuple[str, str]]:
        """(node id, text) of every message of one episode, layer by layer, each combined layer's
        combination after its messages as ("L<layer> combined", text)."""
        out, layers = [], sorted({layer for e, layer in self.combined if e == episode})
        for m in (m for m in self.messages if m.episode == episode):
            layer = parse_node_id(m.node_id).layer
            while layers and layers[0] < layer:
                out.append((f"L{layers[0]} combined", self.combined[episode, layers.pop(0)].text))
            out.append((m.node_id if not m.turn else f"turn {m.turn + 1} {m.node_id}", m.text))
        return out + [(f"L{layer} combined", self.combined[episode, layer].text) for layer in layers]


@dataclass(frozen=True)
class Ablation:
    """Messages replaced where they are read (evaluation only): "empty" reads nothing in place of
    each replaced message, "shuffled" reads the message the same node wrote for the next question
    of the batch (its episodes rotated by one question: real text, the wrong question). `nodes`
    are the nodes whose outgoing messages are replaced (empty: every node that is read)."""

    mode: str  # empty | shuffled
    nodes: frozenset[str] = frozenset()

    def replaces(self, node_id: str) -> bool:
        return not self.nodes or node_id in self.nodes


ABLATIONS = ("real", "empty", "shuffled")


@dataclass(frozen=True)
class RolloutPlan:
    """Which episodes a rollout runs, decided before anything is generated (`plan_rollout`).

    Episodes [0, num_regular) are the K samples per question; the rest are branch copies, which
    re-run only `regenerate[e]` and read every other message from their `source` episode."""

    samples: list[Sample]  # [E] the task sample of each episode
    full: list[bool]  # [E] whether the episode includes the growth-gated new nodes
    source: list[int]  # [E] the episode a copy shares its other messages with (itself when regular)
    regenerate: list[frozenset[str] | None]  # [E] the nodes a copy re-runs; None: every node
    active: dict[bool, frozenset[str]]  # full -> the nodes such an episode runs
    group_ids: torch.Tensor  # [E] int64, question index within the batch (advantage group)
    branches: list[BranchGroup]
    num_regular: int

    @property
    def num_episodes(self) -> int:
        return len(self.samples)

    def runs(self, episode: int, node_id: str) -> bool:
        """Whether `node_id` generates a message in `episode`."""
        redo = self.regenerate[episode]
        return node_id in self.active[self.full[episode]] and (redo is None or node_id in redo)


def plan_rollout(topology: Topology, new_nodes: frozenset[str], questions: list[Sample], samples_per_question: int,
                 gate: float = 1.0, branches: list[Branch] = ()) -> RolloutPlan:
    """K episodes per question, each with the gated nodes with probability `gate` (drawn from
    `random`), then `branches`' copies of their source episodes (a branch on a node its episode
    gated out is dropped)."""
    samples = [q for q in questions for _ in range(samples_per_question)]
    num_regular = len(samples)
    full = [not new_nodes or gate >= 1 or (gate > 0 and random.random() < gate) for _ in samples]
    active = {True: frozenset(topology.node_ids), False: frozenset(topology.node_ids) - new_nodes}
    source, regenerate, groups = list(range(num_regular)), [None] * num_regular, []
    for b in branches:
        if b.node_id not in active[full[b.episode]]:
            continue  # gated out of its source episode: nothing to resample
        first = len(samples)
        redo = frozenset({b.node_id} | topology.descendants(b.node_id))
        for _ in range(b.copies):
            samples.append(samples[b.episode])
            full.append(full[b.episode])
            source.append(b.episode)
            regenerate.append(redo)
        groups.append(BranchGroup(b.episode, b.node_id, list(range(first, len(samples)))))
    group_ids = torch.arange(len(questions)).repeat_interleave(samples_per_question)
    group_ids = torch.cat([group_ids, group_ids[source[num_regular:]]]).long()
    return RolloutPlan(samples, full, source, regenerate, active, group_ids, groups, num_regular)


class Generator(Protocol):
    """What the engine generates with: `Agents` (HF generate with grouped LoRA) by default; a
    serving backend (neuromas.vllm_backend) implements the same call, plus `sync(agents)`, which
    the engine calls before every rollout, `last_sync_s` and `close()`. Rows may each name a
    different node's adapter."""

    def generate(self, prompts: list[torch.Tensor], node_ids: list[str], max_new_tokens: int,
                 temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False) -> list[Generation]: ...


class RolloutEngine:
    """Runs a `System` layer by layer; holds only the rollout settings, the prompt builder and,
    when not the system's own `Agents`, the generation backend."""

    def __init__(self, cfg: RolloutConfig, prompts: PromptBuilder, backend: Generator | None = None,
                 vote: Vote | None = None, tools: ToolBox | None = None, environment=None, max_turns: int = 1,
                 sum_rewards: bool = False):
        """`environment`: makes a fresh environment per episode (neuromas.envs) for multi-turn
        episodes of at most `max_turns` turns, whose return is the sum of their rewards with
        `sum_rewards`, else the last turn's."""
        self.cfg = cfg
        self.environment, self.max_turns, self.sum_rewards = environment, max_turns, sum_rewards
        self.prompts = prompts
        self.backend = backend
        self.vote = vote or boxed_vote  # the answer a message holds (Task.vote), for combined layers
        self.tools = tools

    @classmethod
    def for_run(cls, cfg: Config, task, backend: Generator | None = None) -> "RolloutEngine":
        """The engine a recipe asks for: its rollout settings and prompts, the task's answer format
        and vote, and its tools (none unless `tools.use`)."""
        from neuromas.envs import environment_factory

        return cls(cfg.rollout, PromptBuilder(cfg.prompts, task.answer_format), backend, task.vote,
                   ToolBox(cfg.tools) if cfg.tools.use else None, environment_factory(cfg.env, cfg.task.name),
                   cfg.env.max_turns, cfg.env.reward == "sum")

    def run(self, system: System, questions: list[Sample], samples_per_question: int, greedy: bool = False,
            gate: float = 1.0, branches: list[Branch] = (), ablation: Ablation | None = None) -> Episodes:
        """Roll out `samples_per_question` episodes of the whole system for each question.

        Each episode includes the system's gated new nodes with probability `gate` (all of them or
        none); an episode without them runs exactly the parent system. `branches` add copy
        episodes whose rows join the same per-layer generate calls.
        """
        if self.environment is not None:
            from neuromas.envs import play  # it runs this engine once per turn

            return play(self, system, questions, samples_per_question, greedy, gate, ablation)
        plan = plan_rollout(system.topology, system.new_nodes, questions, samples_per_question, gate, branches)
        return self.execute(system, plan, greedy, ablation)

    @property
    def sampler(self) -> torch.Generator | None:
        """The serving backend's own sampling generator (its state decides a resumed run's samples),
        None for the hf backend (which samples from torch's global generator)."""
        return getattr(self.backend, "sampler", None)

    def sync_seconds(self) -> float | None:
        """Time the last rollout spent sending adapters to a serving backend (None: the hf backend)."""
        return None if self.backend is None else self.backend.last_sync_s

    def close(self) -> None:
        """Stop a serving backend and delete the adapters it was sent; stop the tools' threads."""
        if self.backend is not None:
            self.backend.close()
        if self.tools is not None:
            self.tools.close()

    def execute(self, system: System, plan: RolloutPlan, greedy: bool = False,
                ablation: Ablation | None = None) -> Episodes:
        """Run `plan` layer by layer: one generate call per layer over every row that layer has.
        With an `ablation`, readers are given replaced messages; every message is kept as written."""
        topology, agents, backend = system.topology, system.agents, self.backend or system.agents
        if self.backend is not None:  # a serving engine: send it the adapters if they changed
            self.backend.sync(agents)
        views = _views(topology, plan.active)
        texts: dict[tuple[int, str], str] = {}
        combined: dict[tuple[int, int], Combined] = {}
        messages: list[Message] = []
        written = lambda e, n: texts[e, n] if (e, n) in texts else texts[plan.source[e], n]  # noqa: E731
        text_of = written if ablation is None else _ablated(written, ablation, plan)
        combined_of = lambda e, l: combined[e, l] if (e, l) in combined else combined[plan.source[e], l]  # noqa: E731
        for l, layer in enumerate(topology.layers):
            rows = [(e, node) for node in layer for e in range(plan.num_episodes) if plan.runs(e, node.id)]
            if not rows:
                continue  # a new layer gated out of every episode
            encoded = [self._prompt(agents, views[plan.full[e]], node.id, plan.samples[e], text_of,
                                    combined_of, e, system.texts.get(node.id, "")) for e, node in rows]
            limit = self.cfg.answer_max_new_tokens if l == topology.depth - 1 else None
            prompts, node_ids = [p for p, _ in encoded], [node.id for _, node in rows]
            budget = limit or self.cfg.max_new_tokens
            turns = [Turn([gen]) for gen in self._generate(backend, prompts, node_ids, greedy, budget)]
            if self.tools is not None:
                self._call_tools(backend, agents, prompts, node_ids, turns, greedy, budget)
            for (e, node), (prompt, spans), turn in zip(rows, encoded, turns):
                message = turn.message(agents, e, node.id, prompt, spans)
                texts[e, node.id] = message.text
                messages.append(message)
            if topology.combines(l):
                combined.update(self._combine(backend, agents, topology, l, plan, sorted({e for e, _ in rows}),
                                              text_of))
        return Episodes(plan.samples, plan.group_ids, messages, topology.answer_ids, plan.full, plan.num_regular,
                        plan.branches, combined)

    def _combine(self, backend: Generator, agents: Agents, topology: Topology, layer: int, plan: RolloutPlan,
                 episodes: list[int], text_of) -> dict[tuple[int, int], Combined]:
        """Layer `layer`'s combination in each of `episodes` (those that ran a node of it), over
        the nodes each episode runs. select:judge asks the frozen base, in one generate call."""
        how = topology.aggregation[layer]
        groups = {e: [(n.id, text_of(e, n.id)) for n in topology.layers[layer] if n.id in plan.active[plan.full[e]]]
                  for e in episodes}
        choices = {}
        if how == "select:judge":
            prompts = [agents.encode_with_spans(self.prompts.judge_messages(plan.samples[e].question,
                                                                            [t for _, t in groups[e]]), [])[0]
                       for e in episodes]
            replies = self._generate(backend, prompts, [BASE] * len(prompts), True, self.cfg.judge_max_new_tokens)
            choices = {e: parse_judge(agents.decode(r.completion_ids), len(groups[e]))
                       for e, r in zip(episodes, replies)}
        return {(e, layer): combine(how, groups[e], self.vote, choices.get(e)) for e in episodes}

    def _prompt(self, agents: Agents, view, node_id: str, sample: Sample, text_of, combined_of, episode: int,
                own_text: str):
        """A node's prompt ids, rendered from the view its episode runs (positions as in that
        view, and so is the part of the task a node is given), and the token span of each
        upstream message in it (a combined layer's span goes to the node its combination came from)."""
        view, id_map, to_own = view
        node = parse_node_id(id_map[node_id])
        question = sample.view(node.layer, node.index, view.depth)
        inputs, combined, owner = {}, {}, {}
        for src in view.predecessors(node.id):
            own, view_layer = to_own[src], parse_node_id(src).layer
            if view.combines(view_layer):
                found = combined_of(episode, parse_node_id(own).layer)
                combined[view_layer], owner[f"L{view_layer}"] = found.text, found.source
            else:
                inputs[src], owner[src] = text_of(episode, own), own
        blocks = self.prompts.blocks(view, node, inputs, combined)
        chat = self.prompts.messages(view, node, question, inputs, combined, own_text)
        if self.tools is not None and self.tools.serves(node_id):
            chat[0] = {**chat[0], "content": chat[0]["content"] + "\n\n" + self.tools.instructions()}
        ids, spans = agents.encode_with_spans(chat, [(b.text, b.part) for b in blocks])
        return ids, {owner[b.source]: span for b, span in zip(blocks, spans) if owner[b.source] is not None}

    def _call_tools(self, backend: Generator, agents: Agents, prompts: list[torch.Tensor], node_ids: list[str],
                    turns: list[Turn], greedy: bool, budget: int) -> None:
        """Tool rounds over one layer's rows: each row whose last segment holds a complete tool call
        is cut right after it (the tokens sampled past it are dropped, which leaves the kept ones'
        log-probs exact), the call is run, its result tokens are appended, and every such row
        continues in one generate call with what is left of its token budget."""
        tools = self.tools
        pending = [i for i, node_id in enumerate(node_ids) if tools.serves(node_id)]
        for _ in range(tools.cfg.max_calls):
            going = []
            for i in pending:
                last = turns[i].segments[-1]
                cut = _through_call(agents, last.completion_ids)
                if cut is None:
                    continue
                turns[i].segments[-1] = Generation(last.completion_ids[:cut].clone(),
                                                   None if last.logprobs is None else last.logprobs[:cut].clone(),
                                                   truncated=False)
                call = tools.run(agents.decode(last.completion_ids[:cut]))
                turns[i].results.append((call, agents.tool_result_ids(call.result)))
                if budget - turns[i].num_sampled > 0:
                    going.append(i)
            if not going:
                return
            contexts = [torch.cat([prompts[i], turns[i].ids()]) for i in going]
            left = [budget - turns[i].num_sampled for i in going]
            generations = self._generate(backend, contexts, [node_ids[i] for i in going], greedy, max(left))
            for i, room, gen in zip(going, left, generations):
                if len(gen.completion_ids) > room:  # past this row's own budget: cut, as generate would have
                    gen = Generation(gen.completion_ids[:room], None if gen.logprobs is None else gen.logprobs[:room],
                                     truncated=True)
                turns[i].segments.append(gen)
            pending = going

    def _generate(self, backend: Generator, prompts: list[torch.Tensor], node_ids: list[str], greedy: bool,
                  max_new_tokens: int) -> list[Generation]:
        out = []
        size = self.cfg.micro_batch_size
        for start in range(0, len(prompts), size):
            out += backend.generate(prompts[start:start + size], node_ids[start:start + size],
                                    max_new_tokens, self.cfg.temperature, self.cfg.top_p, greedy)
        return out


@dataclass
class Turn:
    """One node's turn in one episode: its sampled segments, and between each two the tool call
    that ended the first and its result's tokens."""

    segments: list[Generation]
    results: list[tuple[Call, torch.Tensor]] = field(default_factory=list)

    @property
    def num_sampled(self) -> int:
        return sum(len(g.completion_ids) for g in self.segments)

    def ids(self) -> torch.Tensor:
        """Every token of the turn so far, segments and results interleaved."""
        parts = [self.segments[0].completion_ids]
        for (_, result), segment in zip(self.results, self.segments[1:]):
            parts += [result, segment.completion_ids]
        if len(self.results) == len(self.segments):  # the last call's result, before its continuation
            parts.append(self.results[-1][1])
        return torch.cat(parts)

    def message(self, agents: Agents, episode: int, node_id: str, prompt: torch.Tensor,
                spans: dict[str, tuple[int, int]]) -> Message:
        """The turn as the message it is: every token kept as sampled, tool results masked out of
        the loss, and a text that shows each call's result as a <tool_response> block."""
        first = self.segments[0]
        if not self.results:
            return Message(episode, node_id, prompt, first.completion_ids, first.logprobs,
                           agents.decode(first.completion_ids), first.truncated, spans)
        ids, own, logprobs, text = [], [], [], []
        for k, segment in enumerate(self.segments):
            ids.append(segment.completion_ids)
            own.append(torch.ones(len(segment.completion_ids), dtype=torch.bool))
            logprobs.append(segment.logprobs)
            text.append(agents.decode(segment.completion_ids))
            if k < len(self.results):
                call, result = self.results[k]
                ids.append(result)
                own.append(torch.zeros(len(result), dtype=torch.bool))
                logprobs.append(None if segment.logprobs is None else torch.zeros(len(result)))
                text.append(f"\n<tool_response>\n{call.result}\n</tool_response>\n")
        greedy = first.logprobs is None
        return Message(episode, node_id, prompt, torch.cat(ids), None if greedy else torch.cat(logprobs),
                       "".join(text), self.segments[-1].truncated if len(self.segments) > len(self.results) else True,
                       spans,
                       sampled_mask=torch.cat(own), tool_calls=len(self.results),
                       tool_errors=sum(call.error for call, _ in self.results))


def _through_call(agents: Agents, ids: torch.Tensor) -> int | None:
    """The number of leading tokens of `ids` that hold its first complete tool call, or None."""
    if ToolBox.call_end(agents.decode(ids)) is None:
        return None
    return next(k for k in range(1, len(ids) + 1) if ToolBox.call_end(agents.decode(ids[:k])) is not None)


def _ablated(written, ablation: Ablation, plan: RolloutPlan):
    """`written` (episode, node) -> text, with `ablation`'s nodes' messages replaced."""
    regular = plan.num_regular
    per_question = regular // (int(plan.group_ids[:regular].max()) + 1)  # episodes per question

    def text_of(episode: int, node_id: str) -> str:
        if not ablation.replaces(node_id):
            return written(episode, node_id)
        if ablation.mode == "empty":
            return ""
        source = plan.source[episode]  # a branch copy reads as its source episode does
        return written((source + per_question) % regular, node_id)
    return text_of


def _views(topology: Topology, active: dict[bool, frozenset[str]]) -> dict[bool, tuple]:
    """(view, own id -> view id, view id -> own id) for episodes with (True) and without (False)
    the gated new nodes (`RolloutPlan.active`): an episode without them runs, and is prompted
    as, the parent system."""
    views = {}
    for full, nodes in active.items():
        view, id_map = topology.view(set(nodes))
        views[full] = (view, id_map, {v: k for k, v in id_map.items()})
    return views


def build_generator(cfg: Config, agents: Agents, seed: int) -> Generator | None:
    """The rollout backend a recipe asks for: None for hf (the system's own `Agents`)."""
    if cfg.rollout.backend == "hf":
        return None
    from neuromas.models import pick_dtype, resolve_model_path
    from neuromas.vllm_backend import VLLMBackend

    return VLLMBackend(cfg, resolve_model_path(cfg.model.name), agents.stop_ids, agents.device,
                       pick_dtype(cfg.model, agents.device), seed)
