"""Run by the multi-process tests under torchrun / the deepspeed launcher (not collected by pytest).

    dist_driver.py train RECIPE [overrides] [--resume=RUN_DIR]
                                              train like `neuromas train`, then every rank saves
                                              its adapters to RUN_DIR/ranks/rank<R>.pt
    dist_driver.py update OUT [overrides]     one update on fixed episodes (see test_distributed.py)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from neuromas.agents import adapter_states
from neuromas.recipe import load_config
from neuromas.optim import build_optimizer
from neuromas.rollout import Episodes
from neuromas.trainer import Trainer


def save_rank(trainer: Trainer, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(adapter_states(trainer.agents), directory / f"rank{trainer.world.rank}.pt")


def select_questions(episodes: Episodes, advantages: torch.Tensor, groups: range) -> tuple[Episodes, torch.Tensor]:
    """The episodes (regular ones only) of questions `groups`, renumbered from 0."""
    keep = [e for e in range(episodes.num_episodes) if int(episodes.group_ids[e]) in groups]
    new_index = {old: new for new, old in enumerate(keep)}
    messages = [m for m in episodes.messages if m.episode in new_index]
    for m in messages:
        m.episode = new_index[m.episode]
    subset = Episodes([episodes.samples[e] for e in keep], episodes.group_ids[keep] - groups.start, messages,
                      episodes.answer_ids, [episodes.full[e] for e in keep], len(keep), [])
    return subset, advantages[keep]


def update(out: Path, overrides: list[str]) -> None:
    """Every rank rolls out the same full batch (same seed, same adapters), computes advantages
    over all of it, and trains on its own block of questions: with N ranks this must equal one
    process training on the whole batch."""
    cfg = load_config(Path(__file__).parent / "recipe.yaml", overrides)
    trainer = Trainer(cfg, out / "run")
    torch.manual_seed(0)
    for param in trainer.agents.parameters():  # non-zero B: every LoRA weight gets a gradient
        param.data.normal_(0, 0.1)
    # DeepSpeed keeps its own master copy of the weights: a new optimizer sees the change
    trainer.optimizer = build_optimizer(trainer.agents, cfg.train, trainer.world, trainer.deepspeed)
    torch.manual_seed(1234)
    questions = trainer.task.train_batch(0, cfg.train.questions_per_step)
    episodes = trainer.engine.run(trainer.system, questions, cfg.rollout.samples_per_question)
    advantages = torch.linspace(-1, 1, episodes.num_episodes).unsqueeze(1).expand(-1, len(trainer.topology.node_ids))
    per_rank = len(questions) // trainer.world.size
    mine = range(trainer.world.rank * per_rank, (trainer.world.rank + 1) * per_rank)
    metrics = trainer.steps.update(trainer.system, trainer.optimizer, *select_questions(episodes, advantages, mine))
    save_rank(trainer, out / "ranks")
    if trainer.world.main:
        (out / "metrics.json").write_text(json.dumps(metrics))


def main() -> None:
    mode, target, *overrides = sys.argv[1:]
    if mode == "train":
        resume = [o for o in overrides if o.startswith("--resume=")]
        cfg = load_config(target, [o for o in overrides if o not in resume])
        trainer = Trainer(cfg, Path(cfg.tracking.run_dir), resume=bool(resume))
        trainer.fit()
        save_rank(trainer, trainer.run_dir / "ranks")
    else:
        update(Path(target), overrides)


if __name__ == "__main__":
    main()
