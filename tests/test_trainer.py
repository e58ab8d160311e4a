import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_overrides
from neuromas.cli import main
from neuromas.recipe import load_config
from neuromas.trainer import Trainer

ROOT = Path(__file__).parent.parent
RECIPE = Path(__file__).parent / "recipe.yaml"  # the tests' plain [2, 1] recipe
VARYING_REWARD = "task.reward=helpers:text_parity_reward"


def make_trainer(tiny_model_dir, run_dir, *extra) -> Trainer:
    cfg = load_config(RECIPE, tiny_overrides(tiny_model_dir, run_dir) + [VARYING_REWARD, *extra])
    return Trainer(cfg, run_dir)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_one_step_trains_every_node_and_leaves_the_base_untouched(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path / "run", "train.questions_per_step=2",
                           "rollout.samples_per_question=4")
    before = snapshot(trainer.agents.model)
    metrics = trainer.train_step(1).metrics
    assert metrics["train/rows_updated"] > 0 and metrics["train/grad_norm"] > 0
    after = snapshot(trainer.agents.model)
    for node in trainer.topology.node_ids:
        changed = [n for n in before if f".{node}." in n and not torch.equal(before[n], after[n])]
        assert any("lora_B" in n for n in changed), f"{node}'s adapter did not change"
    frozen = [n for n in before if "lora_" not in n]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    assert metrics["train/logprob_gap"] < 1e-4


def test_frozen_nodes_keep_their_adapters_and_the_rest_trains(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path / "run", "train.questions_per_step=2",
                           "rollout.samples_per_question=4", "train.frozen_nodes=[L0N0,L0N1]")
    before = snapshot(trainer.agents.model)
    metrics = trainer.train_step(1).metrics
    after = snapshot(trainer.agents.model)
    changed = {node for node in trainer.topology.node_ids
               if any(f".{node}." in n and not torch.equal(before[n], after[n]) for n in before)}
    assert metrics["train/rows_updated"] > 0 and changed == {"L1N0"}
    with pytest.raises(Exception, match="train.frozen_nodes: L5N0 is not a node of any stage"):
        make_trainer(tiny_model_dir, tmp_path / "other", "train.frozen_nodes=[L5N0]")


def test_eval_before_false_skips_only_the_step_0_evaluation(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path / "run", "train.steps=1", "eval.num_questions=2",
                           "eval.before=false")
    trainer.fit()
    evals = [json.loads(line) for line in (tmp_path / "run" / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [1] and len(evals[0]["correct"]) == 2


def one_update(trainer, episodes, advantages, **settings) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The gradient and statistics of one update with `advantages` [E] shared by every node of an
    episode, by a PolicyUpdate and an optimizer built here from the trainer's settings with
    `settings` (algorithm.* or train.* fields) changed. The weights are left as they were."""
    from dataclasses import replace

    from neuromas.metrics import Stats
    from neuromas.optim import TorchOptimizer
    from neuromas.update import PolicyUpdate

    cfg = trainer.cfg
    algorithm = replace(cfg.algorithm, **{k: v for k, v in settings.items() if hasattr(cfg.algorithm, k)})
    train = replace(cfg.train, **{k: v for k, v in settings.items() if hasattr(cfg.train, k)})
    update, optimizer = PolicyUpdate(algorithm, train, cfg.rollout.temperature), TorchOptimizer(trainer.agents, train)
    optimizer.optimizer.step = lambda: None  # keep the weights: compare gradients only
    optimizer.zero_grad()
    node_ids = trainer.topology.node_ids
    stats = update.run(trainer.agents, optimizer, episodes, advantages.unsqueeze(1).expand(-1, len(node_ids)), node_ids)
    grads = {n: p.grad.clone() for n, p in trainer.agents.model.named_parameters() if p.grad is not None}
    return grads, update.finish(Stats.combine([stats]), node_ids)


def capture_update_grads(trainer, episodes, advantages, **settings) -> dict[str, torch.Tensor]:
    return one_update(trainer, episodes, advantages, **settings)[0]


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_micro_batching_does_not_change_the_gradient(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path / "run", "train.max_grad_norm=1e9")
    for param in trainer.agents.parameters():  # non-zero B so every LoRA weight gets a gradient
        param.data.normal_(0, 0.1)
    episodes = trainer.engine.run(trainer.system, trainer.task.train_batch(0, 2), 3)
    advantages = torch.tensor([1.0, -0.5, -0.5, 0.3, 0.0, -0.3])
    one_by_one = capture_update_grads(trainer, episodes, advantages, micro_batch_size=1)
    at_once = capture_update_grads(trainer, episodes, advantages, micro_batch_size=64)
    assert one_by_one.keys() == at_once.keys() and len(at_once) == len(trainer.agents.parameters())
    for name in at_once:
        assert torch.allclose(one_by_one[name], at_once[name], atol=1e-6, rtol=1e-4), name


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_kl_to_the_base_is_zero_at_init_and_logged(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path / "run", "algorithm.kl.coef=0.1")
    metrics = trainer.train_step(1).metrics
    assert metrics["train/kl"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["train/rows_updated"] == 2 * 2 * 3  # KL needs every row, even zero-advantage ones


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_train_cli_end_to_end(tiny_model_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", str(RECIPE), *tiny_overrides(tiny_model_dir, run_dir), "checkpoint.every=1",
                 "checkpoint.keep_last=1"]) == 0
    out = capsys.readouterr().out
    assert "step    1/2 | reward" in out and "step    2/2 | reward" in out
    assert "accuracy 0.000 ± 0.000 (2 questions)" in out and "eval  step    2 | change since step 0: +0.000" in out
    saved = load_config(run_dir / "config.yaml")
    assert saved.train.steps == 2 and saved.model.name == str(tiny_model_dir)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if "reward/mean" in line]
    assert [line["step"] for line in train_lines] == [1, 2]
    assert {"node/L0N0/msg_tokens", "time/rollout", "time/update", "train/loss"} <= train_lines[0].keys()
    assert [line["step"] for line in lines if "eval/accuracy" in line] == [0, 2]
    for node in ["L0N0", "L0N1", "L1N0"]:
        assert (run_dir / "adapters" / node / "adapter_model.safetensors").is_file()
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["step_2"]
    state = json.loads((run_dir / "checkpoints" / "step_2" / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["topology"]["widths"] == [2, 1]
    assert (run_dir / "checkpoints" / "step_2" / "adapters" / "L1N0" / "adapter_config.json").is_file()


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuromas", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args, message", [
    (["train", "recipes/missing.yaml"], "recipe not found"),
    (["train", "recipes/quickstart.yaml", "train.stepz=3"], "train.stepz"),
    (["train", "tests/recipe.yaml", "topology.widths=[2,2]"], "single sink"),
    (["train", "recipes/quickstart.yaml", "train.steps=5"], "growth.stages"),
    (["train", "recipes/quickstart.yaml", "topology.widths=[3,1]"], "growth.stages"),
    (["train", "recipes/quickstart.yaml", "task.reward=nowhere:fn"], "task.reward"),
])
def test_cli_user_errors_are_one_line_and_exit_2(args, message):
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("neuromas: error:") and message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_run_directory_is_never_reused(tiny_model_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 0, "eval/accuracy": 0.5}\n{"step": 1, "reward/mean": 0.5}\n')
    assert main(["train", str(RECIPE), *tiny_overrides(tiny_model_dir, run_dir)]) == 2  # a logged step: work kept
    assert f"already holds a run; resume it with: neuromas train {run_dir / 'config.yaml'} --resume {run_dir}" \
        in capsys.readouterr().err


def test_resolved_config_is_plain_yaml(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, tmp_path / "run")
    data = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert data["topology"]["widths"] == [2, 1] and data["task"]["reward"] == "helpers:text_parity_reward"
    assert (tmp_path / "run" / "topology.txt").read_text().startswith("layer 0: L0N0  L0N1")
    trainer.tracker.close()


def test_skipping_zero_advantage_rows_does_not_change_the_gradient(tiny_model_dir, tmp_path, monkeypatch):
    from neuromas.update import PolicyUpdate

    trainer = make_trainer(tiny_model_dir, tmp_path / "run", "train.max_grad_norm=1e9")
    for param in trainer.agents.parameters():
        param.data.normal_(0, 0.1)
    episodes = trainer.engine.run(trainer.system, trainer.task.train_batch(0, 2), 3)
    advantages = torch.tensor([1.0, -0.5, -0.5, 0.0, 0.0, 0.0])  # the second question's group is all zero
    skipped = capture_update_grads(trainer, episodes, advantages)
    monkeypatch.setattr(PolicyUpdate, "needs_all_rows", lambda self: True)  # run every row, zeros included
    everything = capture_update_grads(trainer, episodes, advantages)
    for name in skipped:
        assert torch.allclose(skipped[name], everything[name], atol=1e-7, rtol=1e-5), name


def _shift_sampler(episodes, delta: float) -> None:
    """Pretend another engine sampled: its log-probs are `delta` above the trainer's on every token."""
    for m in episodes.messages:
        m.logprobs = m.logprobs + delta


@pytest.mark.parametrize("mode", ["truncate", "mask"])
@pytest.mark.slow  # about 10 s or more on 2 cores
def test_a_sampler_that_differs_from_the_trainer_is_measured_and_corrected(tiny_model_dir, tmp_path, mode):
    from neuromas.config import OffPolicySettings

    trainer = make_trainer(tiny_model_dir, tmp_path / "run", "train.max_grad_norm=1e9")
    for param in trainer.agents.parameters():
        param.data.normal_(0, 0.1)
    episodes = trainer.engine.run(trainer.system, trainer.task.train_batch(0, 2), 3)
    advantages = torch.tensor([1.0, -0.5, -0.5, 0.3, 0.0, -0.3])
    exact = capture_update_grads(trainer, episodes, advantages)
    def corrected_by(**settings):
        return capture_update_grads(trainer, episodes, advantages, off_policy=OffPolicySettings(mode, **settings))

    same = corrected_by()  # equal: weights of 1
    for name in exact:
        assert torch.allclose(same[name], exact[name], atol=1e-7, rtol=1e-5), name

    _shift_sampler(episodes, 0.1)  # p_train / p_sample = exp(-0.1) on every token
    corrected = corrected_by(cap=2.0)
    for name in exact:  # truncate and mask both keep a ratio of 0.905 inside [1/2, 2]
        assert torch.allclose(corrected[name], math.exp(-0.1) * exact[name], atol=1e-7, rtol=1e-4), name
    if mode == "mask":  # a cap of 1.05 masks every token: nothing left to train
        masked = corrected_by(cap=1.05)
        assert all(float(g.abs().max()) == 0 for g in masked.values())

    _, stats = one_update(trainer, episodes, advantages)
    for node in trainer.topology.node_ids:
        assert stats[f"node/{node}/sampler_gap_mean"] == pytest.approx(0.1, abs=1e-4)
        assert stats[f"node/{node}/sampler_gap_max"] == pytest.approx(0.1, abs=1e-4)
        # k3 of KL(sampler || trainer) with d = log p_train - log p_sample = -0.1 on every token
        assert stats[f"node/{node}/sampler_kl"] == pytest.approx(math.exp(-0.1) + 0.1 - 1, rel=1e-3)
    assert stats["train/logprob_gap"] == pytest.approx(0.1, abs=1e-4)
