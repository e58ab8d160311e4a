import re

import pytest

from neuromas.config import PromptsConfig, TopologyConfig
from neuromas.errors import ConfigError
from neuromas.prompts import PromptBuilder
from neuromas.topology import Topology

ROLE_WORDS = re.compile(r"\b(planner|critic|solver|verifier|reviewer|judge|expert|manager|coordinator|aggregator|"
                        r"summari[sz]er|debater|leader|worker|assistant|agent)\b", re.IGNORECASE)
QUESTION = "Compute 3 + 4."


class Graph:
    """A prompt builder with the topology it renders for."""

    def __init__(self, widths=(2, 2, 1), **prompt_kwargs):
        self.builder = PromptBuilder(PromptsConfig(**prompt_kwargs), "Put the final answer in \\boxed{}.")
        self.topology = Topology.from_config(TopologyConfig(widths=list(widths)))


def builder(widths=(2, 2, 1), **prompt_kwargs) -> Graph:
    return Graph(widths, **prompt_kwargs)


def render(g: Graph, node_id: str, inputs: dict[str, str]) -> str:
    node = next(n for n in g.topology.nodes if n.id == node_id)
    return "\n".join(m["content"] for m in g.builder.messages(g.topology, node, QUESTION, inputs))


def test_prompt_holds_position_and_exactly_its_upstream_messages():
    b = builder()
    text = render(b, "L1N1", {"L0N0": "alpha says 7", "L0N1": "beta says 8"})
    assert "node 2 of 2 in layer 2 of 3" in text
    assert "Message from layer 1, node 1:\nalpha says 7" in text
    assert "Message from layer 1, node 2:\nbeta says 8" in text
    assert text.index("alpha") < text.index("beta")
    assert QUESTION in text and "boxed" not in text


def test_sink_knows_it_answers_and_gets_the_answer_format():
    b = builder()
    text = render(b, "L2N0", {"L1N0": "x", "L1N1": ""})
    assert "last node" in text and "\\boxed{}" in text
    assert "Message from layer 2, node 2:\n(no text)" in text


def test_task_only_to_first_layer():
    b = builder(task_to="first_layer")
    assert QUESTION in render(b, "L0N0", {})
    assert QUESTION not in render(b, "L1N0", {"L0N0": "a", "L0N1": "b"})


def test_no_role_words_anywhere():
    b = builder(widths=(4, 2, 1))
    for node in b.topology.nodes:
        text = render(b, node.id, {p: "msg" for p in b.topology.predecessors(node.id)})
        assert not ROLE_WORDS.search(text), (node.id, ROLE_WORDS.search(text))


def test_inputs_must_match_the_topology():
    b = builder()
    with pytest.raises(AssertionError):
        render(b, "L1N0", {"L0N0": "only one of two"})


def test_templates_can_be_overridden_and_typos_are_caught():
    b = builder(system="Position {layer}/{num_layers}, slot {index}.", user="{inputs}{task}{instruction}")
    text = render(b, "L0N1", {})
    assert text.startswith("Position 1/3, slot 2.")
    with pytest.raises(ConfigError, match="prompts.system.*'layr'"):
        builder(system="{layr}")
