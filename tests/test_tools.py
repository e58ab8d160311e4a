"""Tools inside a node's turn: calls are read, run and answered (errors included), the node's sampled
tokens are kept exactly through every round, tool results are in the prompt and out of the loss,
and the node's own log-probs still equal the trainer's."""

from __future__ import annotations

import textwrap

import pytest
import torch

from neuromas.config import AlgorithmConfig, PromptsConfig, RolloutConfig, ToolsConfig, TopologyConfig, TrainConfig
from neuromas.errors import ConfigError
from neuromas.prompts import PromptBuilder
from neuromas.rollout import RolloutEngine
from neuromas.system import System
from neuromas.tasks.sample import Sample
from neuromas.tools import ToolBox
from neuromas.topology import Topology
from neuromas.update import PolicyUpdate, own_masks
from test_agents import make_agents

CALL = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'


@pytest.fixture()
def tools_file(tmp_path):
    path = tmp_path / "my_tools.py"
    path.write_text(textwrap.dedent('''
        import time

        def add(a: int, b: int) -> int:
            """Add two integers.

            Args:
                a: the first
                b: the second
            """
            return a + b

        def fail(x: str) -> str:
            """Always raises.

            Args:
                x: anything
            """
            raise ValueError("no " + x)

        def slow(s: float) -> str:
            """Sleeps.

            Args:
                s: seconds
            """
            time.sleep(s)
            return "woke"

        def undocumented(a):
            return a
    '''))
    return path


def box(tools_file, *names, **settings) -> ToolBox:
    return ToolBox(ToolsConfig(use=[f"{tools_file}:{n}" if n != "python" else n for n in names], **settings))


def test_calls_are_run_and_every_failure_comes_back_as_an_error_result(tools_file):
    tools = box(tools_file, "add", "fail", "slow", "python", timeout_s=30.0)  # generous: a loaded machine
    hasty = box(tools_file, "slow", "python", timeout_s=1.0)
    assert set(tools.tools) == {"add", "fail", "slow", "python"}
    assert tools.tools["add"].schema["function"]["parameters"]["required"] == ["a", "b"]
    assert '"name": "add"' in tools.instructions()
    ok = tools.run("I will add. " + CALL)
    assert (ok.name, ok.result, ok.error) == ("add", "5", False)
    assert tools.run('<tool_call>{"name": "python", "arguments": {"code": "print(6 * 7)"}}</tool_call>').result \
        == "42\n"
    for toolbox, text, expected in [
            (tools, '<tool_call>{"name": "add", "arguments": </tool_call>', "is not"),
            (tools, '<tool_call>{"name": "mul", "arguments": {}}</tool_call>', "no tool named 'mul'"),
            (tools, '<tool_call>{"name": "fail", "arguments": {"x": "way"}}</tool_call>', "ValueError: no way"),
            (tools, '<tool_call>{"name": "add", "arguments": {"c": 1}}</tool_call>', "TypeError"),
            (tools, '<tool_call>{"name": "python", "arguments": {"code": "x = bytearray(2 ** 33)"}}</tool_call>',
             "MemoryError"),
            (hasty, '<tool_call>{"name": "slow", "arguments": {"s": 5}}</tool_call>', "longer than 1.0s"),
            (hasty, '<tool_call>{"name": "python", "arguments": {"code": "while True: pass"}}</tool_call>',
             "longer than 1.0s")]:
        call = toolbox.run(text)
        assert (call.error or "exit status" in call.result) and expected in call.result, (text, call)
    assert tools.run('<tool_call>{"name": "python", "arguments": {"code": "raise SystemExit(3)"}}</tool_call>') \
        .result.endswith("(exit status 3)")
    assert ToolBox.call_end("no call here <tool_call>{") is None
    assert ToolBox.call_end(CALL + " more") == len(CALL)
    tools.close()
    hasty.close()


def test_a_long_result_is_cut_saying_how_much_was_left(tools_file):
    tools = ToolBox(ToolsConfig(use=["python"], max_result_chars=10))
    call = tools.run('<tool_call>{"name": "python", "arguments": {"code": "print(\'x\' * 50)"}}</tool_call>')
    assert call.result == "x" * 10 + "... (41 more characters)"


@pytest.mark.parametrize("spec, expected", [("undocumented", "undocumented"), ("nope", "no function 'nope'")])
def test_a_tool_that_cannot_be_described_is_a_one_line_config_error(tools_file, spec, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        ToolBox(ToolsConfig(use=[f"{tools_file}:{spec}"]))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot import"):
        ToolBox(ToolsConfig(use=["no_such_package.tools:add"]))


class CallsFirst:
    """A generation backend whose first segment of every row is a forced tool call followed by a
    few more tokens (which the engine must drop), scored with the trainer's own log-probs; every
    continuation is sampled by the real backend `inner`."""

    def __init__(self, inner, agents, call: str = CALL):
        self.inner, self.agents, self.forced = inner, agents, []
        self.ids = torch.tensor(agents.tokenizer(call + " and then some", add_special_tokens=False).input_ids)

    def sync(self, agents):
        return getattr(self.inner, "sync", lambda a: None)(agents)

    @property
    def last_sync_s(self):
        return getattr(self.inner, "last_sync_s", 0.0)

    def generate(self, prompts, node_ids, max_new_tokens, temperature=1.0, top_p=1.0, greedy=False):
        first = [not any(len(p) > len(f) and torch.equal(p[:len(f)], f) for f in self.forced) for p in prompts]
        rest = [(p, n) for p, n, f in zip(prompts, node_ids, first) if not f]
        out = self.inner.generate([p for p, _ in rest], [n for _, n in rest], max_new_tokens, temperature, top_p,
                                  greedy) if rest else []
        forced = [(p, n) for p, n, f in zip(prompts, node_ids, first) if f]
        self.forced += [p for p, _ in forced]
        if forced:
            from neuromas.agents import Generation

            ids = self.ids[:max_new_tokens]
            logprobs, _ = self.agents.completion_logprobs([p for p, _ in forced], [ids] * len(forced),
                                                          [n for _, n in forced], temperature)
            made = iter([Generation(ids.clone(), None if greedy else logprobs[row, :len(ids)].detach().cpu(), False)
                         for row in range(len(forced))])
        rest = iter(out)
        return [next(made) if f else next(rest) for f in first]


def tool_engine(agents, tools_file, backend=None, **rollout):
    tools = box(tools_file, "add", "fail")
    cfg = RolloutConfig(max_new_tokens=120, temperature=0.7, **rollout)
    engine = RolloutEngine(cfg, PromptBuilder(PromptsConfig(), "Box it."), CallsFirst(backend or agents, agents),
                           tools=tools)
    return engine


def questions(n: int) -> list[Sample]:
    return [Sample(f"q{i}", f"Compute {i} + 2.", str(i + 2)) for i in range(n)]


@pytest.mark.parametrize("greedy", [False, True])
def test_a_tool_round_keeps_sampled_ids_masks_results_and_matches_the_trainer(tiny_model_dir, tools_file, greedy):
    topology = Topology.from_config(TopologyConfig(widths=[2, 1]))
    agents = make_agents(tiny_model_dir, nodes=topology.node_ids)
    engine = tool_engine(agents, tools_file)
    episodes = engine.run(System(agents, topology), questions(2), 2, greedy=greedy)
    result_ids = agents.tool_result_ids("5")
    call_ids = engine.backend.ids
    for m in episodes.messages:
        assert m.tool_calls == 1 and m.tool_errors == 0
        head = m.completion_ids[:len(call_ids)]
        call_len = next(k for k in range(len(call_ids) + 1) if ToolBox.call_end(agents.decode(call_ids[:k])))
        assert torch.equal(head[:call_len], call_ids[:call_len])  # the call as sampled, the rest dropped
        assert torch.equal(m.completion_ids[call_len:call_len + len(result_ids)], result_ids)
        assert m.sampled_mask[call_len:call_len + len(result_ids)].sum() == 0
        assert int(m.sampled_mask.sum()) == len(m.completion_ids) - len(result_ids) == m.num_sampled
        assert "<tool_response>\n5\n</tool_response>" in m.text and "and then some" not in m.text
        assert "You may call tools" in agents.decode(m.prompt_ids)
        assert m.num_sampled <= 120
    if greedy:
        return
    prompts, completions = [m.prompt_ids for m in episodes.messages], [m.completion_ids for m in episodes.messages]
    logprobs, mask = agents.completion_logprobs(prompts, completions, [m.node_id for m in episodes.messages], 0.7)
    own = own_masks(episodes.messages, mask.shape[1])
    for row, m in enumerate(episodes.messages):  # the node's own tokens, through the tool round
        n = len(m.completion_ids)
        gap = (logprobs[row, :n].detach() - m.logprobs).abs() * own[row, :n]
        assert float(gap.max()) < 1e-4, (m.node_id, float(gap.max()))
        assert float(((logprobs[row, :n].detach() - m.logprobs).abs() * (1 - own[row, :n])).max()) > 1e-2  # results: 0s
    # the update trains the node's own tokens only: its sampler gap is over them, its token counts too
    from neuromas.metrics import Stats
    from neuromas.optim import TorchOptimizer

    update = PolicyUpdate(AlgorithmConfig(), TrainConfig(), 0.7)
    optimizer = TorchOptimizer(agents, TrainConfig())
    advantages = torch.linspace(-1, 1, episodes.num_episodes).unsqueeze(1).expand(-1, 3)
    stats = update.run(agents, optimizer, episodes, advantages, topology.node_ids)
    metrics = update.finish(Stats.combine([stats]), topology.node_ids)
    assert metrics["train/logprob_gap"] < 1e-4
    totals = update.totals(episodes, advantages, topology.node_ids)
    assert float(totals["tokens"]) == sum(m.num_sampled for m in episodes.messages)


def test_a_failing_call_is_answered_and_counted_and_the_turn_goes_on(tiny_model_dir, tools_file):
    topology = Topology.from_config(TopologyConfig(widths=[1]))
    agents = make_agents(tiny_model_dir, nodes=topology.node_ids)
    engine = tool_engine(agents, tools_file)
    engine.backend = CallsFirst(agents, agents, '<tool_call>{"name": "fail", "arguments": {"x": "luck"}}</tool_call>')
    episodes = engine.run(System(agents, topology), questions(1), 2)
    from neuromas.metrics import message_metrics

    for m in episodes.messages:
        assert (m.tool_calls, m.tool_errors) == (1, 1) and "error: ValueError: no luck" in m.text
    assert message_metrics(episodes, ["L0N0"])["node/L0N0/tool_errors"] == 1.0


def test_only_the_nodes_given_tools_call_them(tiny_model_dir, tools_file):
    topology = Topology.from_config(TopologyConfig(widths=[2, 1]))
    agents = make_agents(tiny_model_dir, nodes=topology.node_ids)
    engine = tool_engine(agents, tools_file)
    engine.tools = ToolBox(ToolsConfig(use=[f"{tools_file}:add"], nodes=["L1N0"]))
    episodes = engine.run(System(agents, topology), questions(1), 2)
    for m in episodes.messages:
        assert (m.tool_calls == 1) == (m.node_id == "L1N0")
        assert ("You may call tools" in agents.decode(m.prompt_ids)) == (m.node_id == "L1N0")
