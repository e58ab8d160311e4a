"""The one entry point: ``neuromas train RECIPE [key=value ...]`` (also ``python -m neuromas``).

User mistakes end with one line on stderr and exit code 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
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
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its latest checkpoint")
    grow = commands.add_parser("grow", help="grow a saved system into a bigger one",
                               description="Grow a trained system (a run directory or a checkpoint) by hand; "
                                           "train the result with `neuromas train OUT/config.yaml`.")
    grow.add_argument("source", metavar="RUN_OR_CHECKPOINT")
    grow.add_argument("--widths", required=True, help="new layer widths, e.g. 4,2,1")
    grow.add_argument("--init", default="copy", choices=["copy", "zero", "fresh"], help="how new nodes start")
    grow.add_argument("--connectivity", choices=["full", "sparse", "skip"], help="default: the run's")
    grow.add_argument("--noise", type=float, default=0.0, help="copy init: std of noise added to copied weights")
    grow.add_argument("--gate-steps", type=int, default=0, help="new nodes' gate ramps open over this many steps")
    grow.add_argument("--out", help="output directory (default: SOURCE/grown-<widths>)")
    return parser


def run_dir_for(name: str, configured: str | None, resume: str | None = None) -> Path:
    """The run directory: the one resumed, the configured one, or runs/<name>-<time>.
    A new run never reuses a directory that holds a run."""
    if resume:
        if not (Path(resume) / "metrics.jsonl").exists():
            raise NeuromasError(f"--resume: {resume} is not a run directory")
        return Path(resume)
    path = Path(configured) if configured else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (path / "metrics.jsonl").exists():
        raise NeuromasError(f"{path} already holds a run; resume it with --resume {path}, "
                            "or set tracking.run_dir=<new dir>")
    return path


def train(args: argparse.Namespace) -> None:
    from neuromas.trainer import Trainer  # heavy imports (torch, transformers) only when needed

    cfg = load_config(args.recipe, args.overrides)
    run_dir = run_dir_for(cfg.name, cfg.tracking.run_dir, args.resume)
    trainer = Trainer(cfg, run_dir)
    if args.resume:
        trainer.resume()
    print(f"neuromas: run directory {run_dir}", file=sys.stderr)
    print(trainer.topology.describe(), file=sys.stderr)
    trainer.fit()
    print(f"neuromas: done; adapters in {run_dir / 'adapters'}, metrics in {run_dir / 'metrics.jsonl'}",
          file=sys.stderr)


def grow(args: argparse.Namespace) -> None:
    from neuromas.surgery import grow_saved_system  # heavy imports only when needed

    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        raise NeuromasError(f"--widths: expected numbers like 4,2,1, got {args.widths!r}") from None
    out = grow_saved_system(Path(args.source), widths, args.init, args.connectivity, args.noise, args.gate_steps,
                            Path(args.out) if args.out else None)
    print(f"neuromas: grown system in {out}; train it with: neuromas train {out / 'config.yaml'}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Raised inside peft on every adapter; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        {"train": train, "grow": grow}[args.command](args)
    except NeuromasError as e:
        print(f"neuromas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neuromas: interrupted", file=sys.stderr)
        return 130
    return 0
