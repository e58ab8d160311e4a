"""`neuromas train RECIPE`: checks what can be checked before torch is imported (recipe, data,
run directory, model), then runs the trainer."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from pathlib import Path

import argparse

from neuromas import rundir
from neuromas.recipe import load_config
from neuromas.errors import NeuromasError
from neuromas.tasks import build_task


def add_parser(commands) -> None:
    """The `train` verb's arguments, on the subparsers `commands`."""
    train = commands.add_parser("train", help="train a system from a recipe",
                                description="Train a system from a recipe YAML, with dotted key=value overrides.")
    train.add_argument("recipe", help="recipe YAML, e.g. recipes/quickstart.yaml")
    train.add_argument("overrides", nargs="*", help="e.g. train.steps=5 topology.widths=[3,1]")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its latest checkpoint")
    train.add_argument("--dry-run", action="store_true",
                       help="check the recipe, its data and the run directory, then exit (the launch/ scripts do "
                            "this before starting N processes)")
    train.add_argument("--processes", type=int, default=1, metavar="N",
                       help="with --dry-run: how many processes the run will have, so that the batch split is "
                            "checked too (the launch/ scripts pass it)")
    train.add_argument("--deepspeed", metavar="CONFIG",
                       help="DeepSpeed config: a shipped name (zero2, zero2-offload, zero0) or a "
                            "JSON path; same as distributed.deepspeed=CONFIG (default zero2 with N > 1 processes)")


def run(args: argparse.Namespace) -> None:
    overrides = [*args.overrides, *([f"distributed.deepspeed={args.deepspeed}"] if args.deepspeed else [])]
    # Recipe, data and run-directory mistakes are answered before torch is imported.
    resuming = False
    if args.resume:
        run_dir, resuming = rundir.resumed_run_dir(args.resume)
        cfg = rundir.resume_config(args.recipe, overrides, run_dir)
    else:
        cfg = load_config(args.recipe, overrides)
        run_dir = rundir.new_run_dir(cfg.name, cfg.tracking.run_dir)
    check_topologies(cfg)
    check_local_model(cfg.model.name)
    task = build_task(cfg.task)
    task.check_batch(cfg.train.questions_per_step)
    if args.dry_run:
        rundir.check_writable(run_dir)
        return check_recipe(cfg, args.processes)
    check_hub_model(cfg.model.name)  # not in a dry run: a GPU recipe is checked where its hub is out of reach
    lock = rundir.lock_run_dir(run_dir)  # noqa: F841 - held until the process ends
    from neuromas.trainer import Trainer  # heavy imports (torch, transformers) only when needed

    trainer = Trainer(cfg, run_dir, task, resume=resuming)
    try:
        run_dir, main = trainer.run_dir, trainer.world.main
        if main:
            processes = f" ({trainer.world.size} processes)" if trainer.world.size > 1 else ""
            print(f"neuromas: run directory {run_dir}{processes}", file=sys.stderr)
            print(trainer.topology.describe(), file=sys.stderr)
        trainer.fit()
    finally:
        trainer.close()
    if main:
        print(f"neuromas: done; adapters in {run_dir / 'adapters'}, metrics in {run_dir / 'metrics.jsonl'}",
              file=sys.stderr)


def check_local_model(name: str) -> None:
    """A model given as a local directory is checked before torch is imported; built-in names
    and hub ids are checked when they load."""
    path = Path(name).expanduser()
    if not path.exists():
        if path.is_absolute() or name.startswith((".", "~")):
            raise NeuromasError(f"model.name: {name} does not exist")
        return
    config = path / "config.json"
    if not config.is_file():
        raise NeuromasError(f"model.name: {name} is a path but holds no config.json")
    try:
        json.loads(config.read_text())
    except json.JSONDecodeError as e:
        raise NeuromasError(f"model.name: {config} is not valid JSON (line {e.lineno})") from None


def check_hub_model(name: str, timeout_s: float = 3.0) -> None:
    """A hub id (owner/name) that is neither in the local hub cache nor reachable is answered in
    one line, within `timeout_s` and before torch is imported, instead of a minute of download
    retries. Local directories, built-in names and bare ids are left to the loader."""
    if Path(name).expanduser().exists() or name.count("/") != 1:
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return  # in the local hub cache: the loader finds it offline
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        raise NeuromasError(f"model.name: {name!r} is not in the local hub cache, and HF_HUB_OFFLINE is set; give a "
                            "local model directory, or unset HF_HUB_OFFLINE where the hub can be reached")
    endpoint = os.environ.get("HF_ENDPOINT", constants.ENDPOINT)
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    address = (host.rsplit(":", 1)[0], int(host.rsplit(":", 1)[1])) if ":" in host else \
        (host, 80 if endpoint.startswith("http:") else 443)
    reached: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout_s).close()
            reached.append(True)
        except OSError:
            pass
    probe = threading.Thread(target=connect, daemon=True)  # name resolution ignores socket timeouts
    probe.start()
    probe.join(timeout_s)
    if not reached:
        raise NeuromasError(f"model.name: {name!r} is not in the local hub cache and the hub ({host}) cannot be "
                            "reached; give a local model directory, or the built-in smollm2-135m-instruct")


def check_topologies(cfg) -> None:
    """Every stage's graph is valid (a light check: no model, no torch)."""
    from neuromas.topology import Topology

    for stage in cfg.stages():
        Topology.from_config(stage.topology)


def check_recipe(cfg, processes: int = 1) -> None:
    """What can fail before any model loads: stage topologies, task data, the DeepSpeed config,
    and, for a launch of `processes` processes, the batch split and what one process must do."""
    from neuromas.distributed import World
    from neuromas.optim import resolve_deepspeed_config

    if processes < 1:
        raise NeuromasError(f"--processes: must be at least 1, got {processes}")
    World(0, processes).shard(list(range(cfg.train.questions_per_step)))
    if processes > 1 and (cfg.textual.every or cfg.textual.only):
        raise NeuromasError("textual: textual steps run in one process (launch without torchrun/deepspeed)")
    if cfg.distributed.deepspeed:
        resolve_deepspeed_config(cfg.distributed.deepspeed, World(), cfg.train)
    if cfg.tools.use:  # each tool imports and has a schema
        from neuromas.tools import ToolBox

        ToolBox(cfg.tools).close()
    print(f"neuromas: recipe {cfg.name!r} is valid ({len(cfg.stages())} stage(s), {cfg.total_steps} steps)",
          file=sys.stderr)
