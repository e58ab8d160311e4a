"""The rollout engine: runs the graph layer by layer, one batched generate per layer.

Every (episode, node) row of a layer goes into the same generate call, each row with its
own node's adapter; the layer's messages then feed the next layer's prompts. For every
message we keep the prompt ids, the sampled ids and their sampling log-probs, so the update
never re-tokenizes text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neuromas.agents import Agents
from neuromas.config import RolloutConfig
from neuromas.prompts import PromptBuilder
from neuromas.tasks import Sample
from neuromas.topology import Topology


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


@dataclass
class Episodes:
    """E full-system rollouts: the one batch type that crosses component boundaries."""

    samples: list[Sample]  # [E] the task sample of each episode
    group_ids: torch.Tensor  # [E] int64, question index within the batch (advantage group)
    messages: list[Message]  # every node's message of every episode, layer by layer
    sink_id: str

    @property
    def num_episodes(self) -> int:
        return len(self.samples)

    def answers(self) -> list[str]:
        """The sink's text of each episode, in episode order."""
        by_episode = {m.episode: m.text for m in self.messages if m.node_id == self.sink_id}
        return [by_episode[e] for e in range(self.num_episodes)]

    def of_node(self, node_id: str) -> list[Message]:
        return [m for m in self.messages if m.node_id == node_id]

    def transcript(self, episode: int) -> list[tuple[str, str]]:
        """(node id, text) of every message of one episode, layer by layer."""
        return [(m.node_id, m.text) for m in self.messages if m.episode == episode]


class RolloutEngine:
    def __init__(self, cfg: RolloutConfig, agents: Agents, topology: Topology, prompts: PromptBuilder):
        self.cfg = cfg
        self.agents = agents
        self.topology = topology
        self.prompts = prompts

    def run(self, questions: list[Sample], samples_per_question: int, greedy: bool = False) -> Episodes:
        """Roll out `samples_per_question` episodes of the whole system for each question."""
        samples = [q for q in questions for _ in range(samples_per_question)]
        group_ids = torch.arange(len(questions)).repeat_interleave(samples_per_question)
        texts: dict[tuple[int, str], str] = {}
        messages: list[Message] = []
        for layer in self.topology.layers:
            rows = [(episode, node) for node in layer for episode in range(len(samples))]
            prompts = [self.agents.encode(self.prompts.messages(node, samples[episode].question, {
                src: texts[episode, src] for src in self.topology.predecessors(node.id)})) for episode, node in rows]
            generations = self._generate(prompts, [node.id for _, node in rows], greedy)
            for (episode, node), prompt, gen in zip(rows, prompts, generations):
                text = self.agents.decode(gen.completion_ids)
                texts[episode, node.id] = text
                messages.append(Message(episode, node.id, prompt, gen.completion_ids, gen.logprobs, text,
                                        gen.truncated))
        return Episodes(samples, group_ids, messages, self.topology.sink.id)

    def _generate(self, prompts: list[torch.Tensor], node_ids: list[str], greedy: bool):
        out = []
        size = self.cfg.micro_batch_size
        for start in range(0, len(prompts), size):
            out += self.agents.generate(prompts[start:start + size], node_ids[start:start + size],
                                        self.cfg.max_new_tokens, self.cfg.temperature, self.cfg.top_p, greedy)
        return out
