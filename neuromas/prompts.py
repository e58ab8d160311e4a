"""Role-free, structure-aware prompts.

A node's prompt says where the node sits (layer, index, depth, width, whether it answers),
gives it the task (to every node, or to the first layer only) and the messages of the nodes
that feed it, labelled by position only. It never names a role: what a node does is learned.
"""

from __future__ import annotations

from neuromas.config import PromptsConfig
from neuromas.errors import ConfigError
from neuromas.topology import Node, Topology, parse_node_id

SYSTEM_FIELDS = ("index", "width", "layer", "num_layers", "widths", "place")
USER_FIELDS = ("task", "inputs", "instruction")


class PromptBuilder:
    """Renders the chat messages of one node from `PromptsConfig` templates."""

    def __init__(self, cfg: PromptsConfig, answer_format: str):
        self.cfg = cfg
        self.answer_format = answer_format
        self._check_templates()

    def messages(self, topo: Topology, node: Node, question: str, inputs: dict[str, str]) -> list[dict[str, str]]:
        """Chat messages for `node` of `topo`. `inputs` maps each predecessor id to its message text."""
        assert set(inputs) == set(topo.predecessors(node.id)), (node.id, sorted(inputs))
        cfg = self.cfg
        is_sink = node == topo.sink
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
        user = cfg.user.format(task=task, inputs=self._inputs(inputs), instruction=instruction)
        return [{"role": "system", "content": system}, {"role": "user", "content": user.strip()}]

    def _inputs(self, inputs: dict[str, str]) -> str:
        return "".join(self.input_block(src, inputs[src]) for src in sorted(inputs, key=_order))

    def input_block(self, node_id: str, text: str) -> str:
        node = parse_node_id(node_id)
        return self.cfg.input_block.format(layer=node.layer + 1, index=node.index + 1, text=self.rendered_input(text))

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
