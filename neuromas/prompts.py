"""Role-free, structure-aware prompts.

A node's prompt says where the node sits (layer, index, depth, width, whether it answers),
gives it the task (to every node, or to the first layer only) and the messages of the nodes
that feed it, labelled by position only. It never names a role: what a node does is learned.
"""

from __future__ import annotations

from dataclasses import dataclass

from neuromas.config import PromptsConfig
from neuromas.errors import ConfigError
from neuromas.topology import Node, Topology, parse_node_id

SYSTEM_FIELDS = ("index", "width", "layer", "num_layers", "widths", "place")
USER_FIELDS = ("task", "inputs", "instruction")


@dataclass(frozen=True)
class Block:
    """One upstream input of a prompt: a node's message, or a combined layer's message."""

    source: str  # the upstream node id, or "L<layer>" for a combined layer
    text: str  # the whole block as it appears in the prompt
    part: str  # the message inside it (whose token span attribution reads)


class PromptBuilder:
    """Renders the chat messages of one node from `PromptsConfig` templates."""

    def __init__(self, cfg: PromptsConfig, answer_format: str):
        self.cfg = cfg
        self.answer_format = answer_format
        self._check_templates()

    def messages(self, topo: Topology, node: Node, question: str, inputs: dict[str, str],
                 combined: dict[int, str] | None = None, text: str = "") -> list[dict[str, str]]:
        """Chat messages for `node` of `topo`. `inputs` maps each predecessor id in a concat layer
        to its message text; `combined` maps each combined layer it reads to that layer's message;
        `text` is the node's own instruction text (none when empty)."""
        cfg = self.cfg
        is_sink = node.layer == topo.depth - 1
        position = dict(
            index=node.index + 1,
            width=topo.widths[node.layer],
            layer=node.layer + 1,
            num_layers=topo.depth,
            widths=", ".join(map(str, topo.widths)),
        )
        system = cfg.system.format(**position, place=cfg.sink_place if is_sink else cfg.hidden_place)
        sees_task = cfg.task_to == "all" or node.layer == 0
        task = cfg.task_block.format(question=question) if sees_task else ""
        instruction = (cfg.sink_instruction.format(answer_format=self.answer_format)
                       if is_sink else cfg.hidden_instruction)
        if text.strip():
            instruction = cfg.text_block.format(text=text.strip()) + instruction
        blocks = "".join(b.text for b in self.blocks(topo, node, inputs, combined or {}))
        user = cfg.user.format(task=task, inputs=blocks, instruction=instruction)
        return [{"role": "system", "content": system}, {"role": "user", "content": user.strip()}]

    def blocks(self, topo: Topology, node: Node, inputs: dict[str, str], combined: dict[int, str]) -> list[Block]:
        """The input blocks of `node`'s prompt, in order: by layer, a combined layer's one block in
        place of its nodes' messages."""
        predecessors = topo.predecessors(node.id)
        read = {parse_node_id(p).layer for p in predecessors if topo.combines(parse_node_id(p).layer)}
        assert set(combined) == read and set(inputs) == {p for p in predecessors
                                                         if parse_node_id(p).layer not in read}, (node.id, inputs)
        out = []
        for layer in sorted({parse_node_id(p).layer for p in predecessors}):
            if layer in read:
                part = self.rendered_input(combined[layer])
                out.append(Block(f"L{layer}", self.cfg.combined_block.format(
                    layer=layer + 1, width=topo.widths[layer], how=topo.aggregation[layer], text=part), part))
                continue
            for src in sorted((p for p in inputs if parse_node_id(p).layer == layer), key=_order):
                part, index = self.rendered_input(inputs[src]), parse_node_id(src).index + 1
                out.append(Block(src, self.cfg.input_block.format(layer=layer + 1, index=index, text=part), part))
        return out

    def judge_messages(self, question: str, candidates: list[str]) -> list[dict[str, str]]:
        """What the frozen base reads to pick one of a layer's messages (select:judge)."""
        listed = "".join(self.cfg.judge_candidate.format(number=i + 1, text=self.rendered_input(text))
                         for i, text in enumerate(candidates))
        return [{"role": "user", "content": self.cfg.judge.format(question=question, candidates=listed).strip()}]

    def rendered_input(self, text: str) -> str:
        """An upstream message as it appears in its reader's prompt."""
        return text.strip() or self.cfg.empty_message

    def _check_templates(self) -> None:
        """Render every template once with dummy values so a typo fails at startup, naming the field."""
        checks = {
            "system": (self.cfg.system, SYSTEM_FIELDS),
            "user": (self.cfg.user, USER_FIELDS),
            "task_block": (self.cfg.task_block, ("question",)),
            "input_block": (self.cfg.input_block, ("layer", "index", "text")),
            "combined_block": (self.cfg.combined_block, ("layer", "width", "how", "text")),
            "judge": (self.cfg.judge, ("question", "candidates")),
            "text_block": (self.cfg.text_block, ("text",)),
            "judge_candidate": (self.cfg.judge_candidate, ("number", "text")),
            "sink_instruction": (self.cfg.sink_instruction, ("answer_format",)),
        }
        for name, (template, fields) in checks.items():
            try:
                template.format(**{f: "x" for f in fields})
            except (KeyError, IndexError, ValueError) as e:
                raise ConfigError(f"prompts.{name}: bad placeholder {e} (allowed: {', '.join(fields)})") from None


def _order(node_id: str) -> tuple[int, int]:
    node = parse_node_id(node_id)
    return node.layer, node.index
