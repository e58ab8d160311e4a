import json

import pytest
import torch

from conftest import tiny_overrides
from neuromas.config import PromptsConfig, RolloutConfig, TaskConfig, TopologyConfig, TrainConfig
from neuromas.recipe import load_config
from neuromas.errors import ConfigError, NeuromasError
from neuromas.optim import TorchOptimizer
from neuromas.agents import adapter_states, rename_adapter
from neuromas.growth import grow_agents, plan_growth
from neuromas.schedule import gate_value
from neuromas.system import System
from neuromas.prompts import PromptBuilder
from neuromas.rollout import RolloutEngine
from neuromas.tasks import build_task
from neuromas.topology import Topology
from neuromas.trainer import Trainer
from test_agents import make_agents
from test_trainer import RECIPE, VARYING_REWARD


def topo(*widths: int) -> Topology:
    return Topology.from_config(TopologyConfig(widths=list(widths)))


def test_plan_aligns_layers_from_the_sink():
    plan = plan_growth(topo(2, 1), topo(4, 2, 1))
    assert plan.old_to_new == {"L0N0": "L1N0", "L0N1": "L1N1", "L1N0": "L2N0"}
    assert plan.new_nodes == ["L0N0", "L0N1", "L0N2", "L0N3"]
    assert plan.parents == {"L0N0": "L0N0", "L0N1": "L0N1", "L0N2": "L0N0", "L0N3": "L0N1"}
    widen = plan_growth(topo(2, 1), topo(3, 1), copy_from={"L0N2": "L0N1"})
    assert widen.old_to_new == {"L0N0": "L0N0", "L0N1": "L0N1", "L1N0": "L1N0"} and widen.parents == {"L0N2": "L0N1"}


@pytest.mark.parametrize("old, new, copy_from, match", [
    ((2, 1), (1,), None, "removes layers"),
    ((2, 1), (1, 1), None, "would remove L0N1"),
    ((2, 1), (3, 1), {"L0N0": "L0N1"}, "L0N0 is not a new node"),
    ((2, 1), (3, 1), {"L0N2": "L0N7"}, "not a node of the previous stage"),
])
def test_plan_errors(old, new, copy_from, match):
    with pytest.raises(ConfigError, match=match):
        plan_growth(topo(*old), topo(*new), copy_from)


def test_gate_ramp():
    assert [gate_value(k, 4) for k in range(1, 6)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert gate_value(1, 0) == 1.0


def test_rename_adapter_in_parameter_names():
    name = "base_model.model.model.layers.1.self_attn.q_proj.lora_B.L0N1.weight"
    assert rename_adapter(name, {"L0N1": "L1N1"}) == name.replace(".L0N1.", ".L1N1.")
    assert rename_adapter(name, {"L0N0": "L1N0"}) is None


def sampled_run(system: System, gate: float = 0.0, seed: int = 0):
    engine = RolloutEngine(RolloutConfig(max_new_tokens=5),
                           PromptBuilder(PromptsConfig(), "Put the final answer in \\boxed{}."))
    torch.manual_seed(seed)
    return engine.run(system, build_task(TaskConfig()).train_batch(0, 2), samples_per_question=2, gate=gate)


@pytest.mark.parametrize("old, new", [((2, 1), (3, 1)), ((2, 1), (2, 2, 1)), ((1,), (2, 1)), ((2, 1), (3, 2, 1))])
@pytest.mark.parametrize("init", ["copy", "fresh"])
@pytest.mark.slow  # about 10 s or more on 2 cores
def test_closed_gates_reproduce_the_parent(tiny_model_dir, old, new, init):
    parent_topology, grown_topology = topo(*old), topo(*new)
    parent_system = System(make_agents(tiny_model_dir, nodes=parent_topology.node_ids), parent_topology)
    parent = sampled_run(parent_system)
    grown_system, plan = parent_system.grow(grown_topology, init, noise=0.1)
    assert grown_system.new_nodes == set(plan.new_nodes)
    grown = sampled_run(grown_system)
    assert grown.answers() == parent.answers()
    for p, g in zip(parent.messages, grown.messages, strict=True):  # same rows, same prompts, same tokens
        assert plan.old_to_new[p.node_id] == g.node_id
        assert torch.equal(p.prompt_ids, g.prompt_ids) and torch.equal(p.completion_ids, g.completion_ids)
    opened = sampled_run(grown_system, gate=1.0)
    assert {m.node_id for m in opened.messages} == set(grown_topology.node_ids)


def test_copy_init_copies_and_zero_init_is_the_base(tiny_model_dir):
    old, new = topo(2, 1), topo(3, 1)
    agents = make_agents(tiny_model_dir, nodes=old.node_ids)
    before = adapter_states(agents)
    plan = plan_growth(old, new, copy_from={"L0N2": "L0N1"})
    copied = adapter_states(grow_agents(agents, plan, new.node_ids, "copy"))
    for key, value in before["L0N1"].items():
        assert torch.equal(copied["L0N2"][key], value)
    for node in old.node_ids:  # survivors keep their weights
        assert all(torch.equal(copied[node][k], v) for k, v in before[node].items())

    agents = make_agents(tiny_model_dir, nodes=old.node_ids)
    zero = grow_agents(agents, plan, new.node_ids, "zero")
    prompt, completion = [zero.encode([{"role": "user", "content": "Compute 2 + 2."}])], [torch.tensor([5, 6, 7])]
    with torch.no_grad():
        new_node, _ = zero.completion_logprobs(prompt, completion, ["L0N2"])
        base, _ = zero.completion_logprobs(prompt, completion, None)
        kept, _ = zero.completion_logprobs(prompt, completion, ["L0N1"])
    assert torch.allclose(new_node, base, atol=1e-6) and not torch.allclose(kept, base, atol=1e-3)


def test_optimizer_keeps_survivor_state_and_new_nodes_start_fresh(tiny_model_dir):
    old, new = topo(2, 1), topo(2, 2, 1)
    agents = make_agents(tiny_model_dir, nodes=old.node_ids)
    optimizer = TorchOptimizer(agents, TrainConfig(lr=1e-3))
    for p in agents.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    named = optimizer.named_state()
    plan = plan_growth(old, new)
    grown = grow_agents(agents, plan, new.node_ids, "copy")
    fresh = TorchOptimizer(grown, TrainConfig(lr=1e-3))
    assert fresh.load_named_state(named, plan.old_to_new) == len(named)
    fresh_optimizer = fresh.optimizer
    moved = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.L1N1.weight"
    param = dict(grown.model.named_parameters())[moved]
    source = named[moved.replace(".L1N1.", ".L0N1.")]
    assert torch.equal(fresh_optimizer.state[param]["exp_avg"].cpu(), source["exp_avg"])
    assert all(p not in fresh_optimizer.state for p in grown.parameters("L0N0"))  # L0N0 is new now


def growth_overrides(tmp_path, tiny_model_dir, run="run", *extra):
    stages = "[{topology: {widths: [1]}, steps: 2}, {topology: {widths: [2, 1]}, steps: 3, gate_steps: 2}]"
    return tiny_overrides(tiny_model_dir, tmp_path / run, **{"growth.stages": stages, "checkpoint.every": 1,
                                                            "checkpoint.keep_last": 2}) + [VARYING_REWARD, *extra]


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_growth_run_trains_new_adapters_and_optimizer_covers_all(tiny_model_dir, tmp_path):
    cfg = load_config(RECIPE, growth_overrides(tmp_path, tiny_model_dir))
    assert cfg.total_steps == 5 and cfg.stages()[0].topology.widths == [1]
    trainer = Trainer(cfg, tmp_path / "run")
    history = trainer.fit()
    assert trainer.topology.widths == [2, 1] and len(history) == 5
    assert [m["growth/stage"] for m in history] == [0, 0, 1, 1, 1]
    assert [m["growth/gate"] for m in history] == [1.0, 1.0, 0.5, 1.0, 1.0]
    assert set(trainer.optimizer.optimizer.state) == set(trainer.agents.parameters())
    states = adapter_states(trainer.agents)
    assert any(v.abs().sum() > 0 for k, v in states["L0N1"].items() if "lora_B" in k)  # copied then trained
    event = json.loads((tmp_path / "run" / "growth.jsonl").read_text())
    assert event["old_to_new"] == {"L0N0": "L1N0"} and event["new_nodes"] == ["L0N0", "L0N1"]
    assert (tmp_path / "run" / "checkpoints" / "stage_0" / "adapters" / "L0N0").is_dir()


def strip_times(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in path.read_text().splitlines()]


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_resume_mid_stage_matches_an_uninterrupted_run(tiny_model_dir, tmp_path, monkeypatch):
    whole = Trainer(load_config(RECIPE, growth_overrides(tmp_path, tiny_model_dir, "whole")), tmp_path / "whole")
    whole.fit()

    cfg = load_config(RECIPE, growth_overrides(tmp_path, tiny_model_dir, "cut"))
    cut = Trainer(cfg, tmp_path / "cut")
    real_step = Trainer._one_step

    def crash_after_step_4(self):
        if self.step == 4:
            raise KeyboardInterrupt  # killed mid-stage 1, after step 4's checkpoint
        return real_step(self)
    monkeypatch.setattr(Trainer, "_one_step", crash_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        cut.fit()
    monkeypatch.setattr(Trainer, "_one_step", real_step)

    resumed = Trainer(cfg, tmp_path / "cut", resume=True)
    assert (resumed.step, resumed.state.stage_index, resumed.state.stage_step) == (4, 1, 2)
    assert resumed.system.new_nodes == {"L0N0", "L0N1"} and resumed.topology.widths == [2, 1]
    assert json.loads((tmp_path / "cut" / "checkpoints" / "step_4" / "trainer_state.json").read_text())["gate"] == 1.0
    assert json.loads((tmp_path / "cut" / "checkpoints" / "step_3" / "trainer_state.json").read_text())["gate"] == 0.5
    resumed.fit()
    assert strip_times(tmp_path / "cut" / "metrics.jsonl") == strip_times(tmp_path / "whole" / "metrics.jsonl")
    for node, state in adapter_states(whole.agents).items():
        assert all(torch.equal(v, adapter_states(resumed.agents)[node][k]) for k, v in state.items())


def scripted_validation(monkeypatch, values):
    values = iter(values)
    monkeypatch.setattr(Trainer, "_validate", lambda self: next(values))


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_a_grown_stage_below_its_parent_is_rolled_back_and_retried(tiny_model_dir, tmp_path, monkeypatch):
    cfg = load_config(RECIPE, growth_overrides(tmp_path, tiny_model_dir, "run", "growth.margin=0.1",
                                                   "growth.retry_inits=[zero]"))
    scripted_validation(monkeypatch, [0.5, 0.2, 0.45])  # parent, first try (copy), retry (zero)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.fit()
    events = [json.loads(line) for line in (tmp_path / "run" / "growth.jsonl").read_text().splitlines()]
    assert [e["init"] for e in events] == ["copy", "zero"] and trainer.topology.widths == [2, 1]
    assert trainer.step == 2 + 3 + 3


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_a_gate_that_commits_every_stage_trains_as_no_gate(tiny_model_dir, tmp_path):
    """The stage-end validation is greedy and draws no random numbers, so a gated run without a
    rollback is the ungated run, step for step (path dependence's seed 0 relies on this)."""
    Trainer(load_config(RECIPE, growth_overrides(tmp_path, tiny_model_dir, "plain")), tmp_path / "plain").fit()
    gated = Trainer(load_config(RECIPE, growth_overrides(tmp_path, tiny_model_dir, "gated", "growth.margin=1.0")),
                    tmp_path / "gated")
    gated.fit()
    validated = strip_times(tmp_path / "gated" / "metrics.jsonl")
    assert any("growth/validation_accuracy" in row for row in validated)  # the gate did validate
    without = [{k: v for k, v in row.items() if k != "growth/validation_accuracy"} for row in validated]
    assert [row for row in without if len(row) > 1] == strip_times(tmp_path / "plain" / "metrics.jsonl")


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_rollback_without_retries_left_stops_with_a_report(tiny_model_dir, tmp_path, monkeypatch):
    cfg = load_config(RECIPE, growth_overrides(tmp_path, tiny_model_dir, "run", "growth.margin=0.0"))
    scripted_validation(monkeypatch, [0.5, 0.2])
    with pytest.raises(NeuromasError, match=r"stage 1 \(\[2, 1\]\) stayed below its parent.*stage_0"):
        Trainer(cfg, tmp_path / "run").fit()


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_grow_cli_then_train_the_grown_system(tiny_model_dir, tmp_path, capsys):
    from neuromas.checkpoint import adapter_states_from, read_state
    from neuromas.cli import main

    run = tmp_path / "run"
    assert main(["train", str(RECIPE), *tiny_overrides(tiny_model_dir, run)]) == 0
    out = tmp_path / "grown"
    assert main(["grow", str(run), "--widths", "3,1", "--init", "copy", "--gate-steps", "2", "--out", str(out)]) == 0
    state = read_state(out)
    assert state["new_nodes"] == ["L0N2"] and state["topology"]["widths"] == [3, 1]
    saved = adapter_states_from(run, ["L0N0"])["L0N0"]
    grown = adapter_states_from(out, ["L0N2"])["L0N2"]
    assert saved.keys() == grown.keys() and all(torch.equal(saved[k], grown[k]) for k in saved)
    capsys.readouterr()
    assert main(["train", str(out / "config.yaml"), f"tracking.run_dir={tmp_path / 'run2'}"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "run2" / "metrics.jsonl").read_text().splitlines()]
    assert [line["growth/gate"] for line in lines if "growth/gate" in line] == [0.5, 1.0]


@pytest.mark.parametrize("args, message", [
    (["grow", "nowhere", "--widths", "3,1"], "neither a finished run directory nor a checkpoint"),
    (["grow", "RUN", "--widths", "three"], "--widths"),
    (["grow", "RUN", "--widths", "1"], "growth only adds nodes"),
])
@pytest.mark.slow  # about 10 s or more on 2 cores
def test_grow_cli_errors(tiny_model_dir, tmp_path, capsys, args, message):
    from neuromas.cli import main

    run = tmp_path / "run"
    assert main(["train", str(RECIPE), *tiny_overrides(tiny_model_dir, run, **{"train.steps": 1})]) == 0
    capsys.readouterr()
    assert main([a.replace("RUN", str(run)) for a in args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_resume_from_the_cli(tiny_model_dir, tmp_path, capsys):
    from neuromas.cli import main

    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_model_dir, run, **{"checkpoint.every": 1})
    assert main(["train", str(RECIPE), *overrides]) == 0
    assert main(["train", str(RECIPE), *overrides, "train.steps=3", "--resume", str(run)]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "reward/mean" in line]
    assert steps == [1, 2, 3]
    assert main(["train", str(RECIPE), *overrides, "--resume", str(tmp_path / "none")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_lineages_name_a_node_by_the_ids_it_has_across_growth():
    from neuromas.config import TopologyConfig
    from neuromas.growth import lineages
    from neuromas.topology import Topology

    stages = [Topology.from_config(TopologyConfig(widths=w)) for w in ([1], [2, 1], [4, 2, 1])]
    names = lineages(stages)
    assert names[0] == {"L0N0": "L0N0 -> L1N0 -> L2N0"}
    assert names[1]["L1N0"] == names[2]["L2N0"] == "L0N0 -> L1N0 -> L2N0"  # the first node, now the sink
    assert names[1]["L0N0"] == names[2]["L1N0"] == "L0N0 -> L1N0 (from stage 1)"  # same id, another node
    assert names[2]["L0N3"] == "L0N3 (from stage 2)" and len(set(names[2].values())) == 7
