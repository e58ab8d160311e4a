"""The one entry point: ``neuromas train RECIPE [key=value ...]`` (also ``python -m neuromas``).

User mistakes end with one line on stderr and exit code 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from neuromas.config import load_config
from neuromas.errors import NeuromasError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuromas", description="Train role-free neural multi-agent systems.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a system from a recipe",
                                description="Train a system from a recipe YAML, with dotted key=value overrides.")
    train.add_argument("recipe", help="recipe YAML, e.g. recipes/quickstart.yaml")
    train.add_argument("overrides", nargs="*", help="e.g. train.steps=5 topology.widths=[3,1]")
    return parser


def run_dir_for(name: str, configured: str | None) -> Path:
    """The configured run directory, or runs/<name>-<time>. Never reuses a directory holding a run."""
    path = Path(configured) if configured else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (path / "metrics.jsonl").exists():
        raise NeuromasError(f"{path} already holds a run; set tracking.run_dir=<new dir> to start another")
    return path


def train(args: argparse.Namespace) -> None:
    from neuromas.trainer import Trainer  # heavy imports (torch, transformers) only when needed

    cfg = load_config(args.recipe, args.overrides)
    run_dir = run_dir_for(cfg.name, cfg.tracking.run_dir)
    trainer = Trainer(cfg, run_dir)
    print(f"neuromas: run directory {run_dir}", file=sys.stderr)
    print(trainer.topology.describe(), file=sys.stderr)
    trainer.fit()
    print(f"neuromas: done; adapters in {run_dir / 'adapters'}, metrics in {run_dir / 'metrics.jsonl'}",
          file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        {"train": train}[args.command](args)
    except NeuromasError as e:
        print(f"neuromas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neuromas: interrupted", file=sys.stderr)
        return 130
    return 0
