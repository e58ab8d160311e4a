"""Checkpoints: directories written atomically (staged as ``.tmp-*``, then renamed).

A checkpoint holds one standard peft adapter directory per node (``adapters/<node_id>/``,
loadable by plain peft, with the node's instruction text beside it in ``node_text.txt`` when it
has one), the optimizer state by parameter name (so it survives growth),
RNG states and ``trainer_state.json`` (step, stage, topology, gated nodes). A crash while
writing leaves only a ``.tmp-*`` directory, never a checkpoint that looks complete.
``step_N/`` are periodic (the last `keep_last` kept); ``stage_K/`` close each growth stage.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from neuromas.agents import Agents, load_adapter_states
from neuromas.config import Config
from neuromas.errors import NeuromasError
from neuromas.models import load_base_model
from neuromas.recipe import load_config
from neuromas.system import System, recipe_texts
from neuromas.topology import Topology

STATE_FILE = "trainer_state.json"
TEXT_FILE = "node_text.txt"  # a node's instruction text, beside its adapter


def write_atomically(target: Path, fill) -> Path:
    """Call `fill(staging_dir)`, then rename the staging directory to `target`."""
    staging = target.parent / f".tmp-{target.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        fill(staging)
    except (OSError, RuntimeError) as e:  # a full disk: torch.save's writer raises RuntimeError, files OSError
        shutil.rmtree(staging, ignore_errors=True)  # the previous checkpoint stays as it was
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0]
        raise NeuromasError(f"could not write {target} ({reason}); the last checkpoint is intact: resume with "
                            "--resume RUN_DIR once there is room") from None
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def rng_state(sampler: torch.Generator | None = None) -> dict:
    """This process's random number generator states, and a rollout backend's own `sampler`."""
    rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if sampler is not None:
        rng["sampler"] = sampler.get_state()
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def save_run(target: Path, agents: Agents, texts: dict[str, str], state: dict, world, optimizer=None,
             sampler: torch.Generator | None = None) -> Path:
    """A training run's checkpoint at `target`, from every rank of `world`: the adapters, node
    texts and `state`, and unless `optimizer` is None (the final system: peft adapters at the top
    level) the optimizer state and every rank's RNG states (with the rollout backend's `sampler`).
    Every rank takes part in gathering; rank 0 writes; nobody goes on before it is complete."""
    if optimizer is None:
        if world.main:
            save_adapters(target, agents, state, texts)
    else:
        world.check_same(agents.parameters(), state["step"])
        named, rng = {"state": optimizer.named_state()}, world.gather(rng_state(sampler))
        if world.main:
            save_checkpoint(target, agents, named, state, rng, texts)
    world.barrier()
    return target


def save_checkpoint(target: Path, agents: Agents, optimizer_state: dict, trainer_state: dict,
                    rng_states: list[dict] | None = None, texts: dict[str, str] | None = None) -> Path:
    """rng_states: every rank's RNG state, in rank order (default: this process's). texts: node
    id -> its instruction text (`System.texts`)."""
    def fill(staging: Path) -> None:
        _save_system(staging / "adapters", agents, texts or {})
        torch.save(optimizer_state, staging / "optimizer.pt")
        states = rng_states or [rng_state()]
        torch.save({**states[0], "ranks": states}, staging / "rng.pt")
        (staging / STATE_FILE).write_text(json.dumps(trainer_state, indent=2))

    return write_atomically(target, fill)


def save_adapters(target: Path, agents: Agents, trainer_state: dict, texts: dict[str, str] | None = None) -> Path:
    """Just the system: ``target/<node_id>/`` peft adapters (and node texts) and ``trainer_state.json``."""
    def fill(staging: Path) -> None:
        _save_system(staging, agents, texts or {})
        (staging / STATE_FILE).write_text(json.dumps(trainer_state, indent=2))

    return write_atomically(target, fill)


def _save_system(directory: Path, agents: Agents, texts: dict[str, str]) -> None:
    agents.save(directory)
    for node_id, text in texts.items():
        (directory / node_id / TEXT_FILE).write_text(text)


def texts_from(checkpoint: Path, node_ids: list[str]) -> dict[str, str]:
    """Node id -> instruction text, for the nodes of a saved system that have one."""
    root = checkpoint / "adapters" if (checkpoint / "adapters").is_dir() else checkpoint
    return {n: (root / n / TEXT_FILE).read_text() for n in node_ids if (root / n / TEXT_FILE).is_file()}


def prune(directory: Path, keep_last: int) -> None:
    steps = sorted(directory.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    for old in steps[:-keep_last]:
        shutil.rmtree(old)


def system_dir(source: Path) -> Path:
    """The directory holding a saved system: a run's final ``adapters/``, or a checkpoint."""
    system = source / "adapters" if (source / "adapters" / STATE_FILE).is_file() else source
    if not (system / STATE_FILE).is_file():
        raise NeuromasError(f"{source} is neither a finished run directory nor a checkpoint")
    return system


def stage_dir(run_dir: Path, index: int) -> Path:
    """Where stage `index` is saved as it closes: the rollback point of the stage after it."""
    return run_dir / "checkpoints" / f"stage_{index}"


def find_system(source: Path) -> tuple[Path, Path]:
    """(directory with trainer_state.json and the adapters, the run's config.yaml) for a run
    directory (its final adapters) or a checkpoint inside one."""
    system = system_dir(source)
    for parent in (system, *system.parents[:3]):
        if (parent / "config.yaml").is_file():
            return system, parent / "config.yaml"
    raise NeuromasError(f"no config.yaml found above {system}")


def check_start(source: Path, topology: dict) -> Path:
    """The saved system `train.init_from` names, checked against the run's first topology."""
    from neuromas.topology import Topology

    path = system_dir(source)
    saved = Topology.from_dict(read_state(path)["topology"]).to_dict()  # older saves hold no aggregation
    if saved != topology:
        raise NeuromasError(f"train.init_from: {source} holds topology {saved['widths']}, "
                            f"but this run starts with {topology['widths']}")
    return path


def read_state(checkpoint: Path) -> dict:
    path = checkpoint / STATE_FILE
    if not path.is_file():
        raise NeuromasError(f"{checkpoint} is not a neuromas checkpoint (no {STATE_FILE})")
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NeuromasError(f"{path} is damaged (not JSON: {e}); a checkpoint before it may be intact") from None
    if not isinstance(state, dict) or "step" not in state:
        raise NeuromasError(f"{path} is damaged (no step)")
    return state


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest readable checkpoint under `run_dir/checkpoints`; a damaged newer one (a file
    truncated or lost after it was written) is skipped with a warning that says which."""
    found = [p for p in (run_dir / "checkpoints").glob("*")  # not a write cut short: .tmp-*
             if not p.name.startswith(".tmp-") and (p / STATE_FILE).is_file()]
    if not found:
        raise NeuromasError(f"{run_dir} has no checkpoint to resume from (set checkpoint.every to save them)")
    # At equal steps a stage checkpoint is the later one: it was written after validation. A state
    # file that does not parse sorts as a damaged checkpoint of its own step (from its name).
    found.sort(key=lambda p: (_step_of(p), p.name.startswith("stage_")), reverse=True)
    for checkpoint in found:
        problem = damage(checkpoint)
        if problem is None:
            return checkpoint
        print(f"neuromas: skipping damaged checkpoint {checkpoint}: {problem}", file=sys.stderr)
    raise NeuromasError(f"every checkpoint of {run_dir} is damaged (the newest, {found[0]}: {damage(found[0])})")


def _step_of(checkpoint: Path) -> int:
    try:
        return int(read_state(checkpoint)["step"])
    except (NeuromasError, ValueError, TypeError):  # a damaged state file
        digits = checkpoint.name.rpartition("_")[2]
        return int(digits) if digits.isdigit() and checkpoint.name.startswith("step_") else -1


def damage(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None: every file there and readable."""
    try:
        read_state(checkpoint)
    except NeuromasError:
        return f"{STATE_FILE} is unreadable"
    adapters = sorted((checkpoint / "adapters").glob("*/adapter_model.safetensors"))
    if not adapters:
        return "no adapters"
    for path in [*adapters, checkpoint / "optimizer.pt", checkpoint / "rng.pt"]:
        try:
            load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=False)
        except Exception as e:  # noqa: BLE001 - any failure to read means: not this one
            return f"{path.relative_to(checkpoint)} is unreadable ({type(e).__name__})"
    return None


def readable_adapter_states(checkpoint: Path, node_ids: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """`adapter_states_from`, with a damaged file as a one-line error (`neuromas eval`, `grow`, ...)."""
    try:
        return adapter_states_from(checkpoint, node_ids)
    except NeuromasError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise NeuromasError(f"{checkpoint}: an adapter file is damaged ({type(e).__name__}: "
                            f"{str(e).strip().splitlines()[0] if str(e).strip() else 'unreadable'})") from None


def adapter_states_from(checkpoint: Path, node_ids: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Node id -> LoRA state dict, from a checkpoint or a run's final ``adapters/``."""
    root = checkpoint / "adapters" if (checkpoint / "adapters").is_dir() else checkpoint
    states = {}
    for node_id in node_ids:
        path = root / node_id / "adapter_model.safetensors"
        if not path.is_file():
            raise NeuromasError(f"{checkpoint} has no adapter for node {node_id}: it was saved by another topology")
        states[node_id] = load_file(str(path))
    return states


def restore_rng(checkpoint: Path, rank: int = 0, sampler: torch.Generator | None = None) -> None:
    """Restore the RNG states rank `rank` saved (rank 0's when the run had fewer ranks), and the
    rollout backend's `sampler` where the checkpoint holds one."""
    rng = torch.load(checkpoint / "rng.pt", weights_only=False)
    ranks = rng.get("ranks", [rng])
    rng = ranks[rank] if rank < len(ranks) else ranks[0]
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if sampler is not None and "sampler" in rng:
        sampler.set_state(rng["sampler"])


def optimizer_state_from(checkpoint: Path) -> dict:
    return torch.load(checkpoint / "optimizer.pt", weights_only=False)


# ---- systems from disk --------------------------------------------------------------------


def with_weights_from(system: System, path: Path) -> System:
    """`system` with the adapter weights and texts saved at `path` loaded into it (the same
    topology), and the saved system's gated nodes (a hand-grown system's new nodes stay gated)."""
    load_adapter_states(system.agents, adapter_states_from(path, system.node_ids))
    return replace(system, new_nodes=frozenset(read_state(path).get("new_nodes", [])),
                   texts=texts_from(path, system.node_ids))


def with_saved(system: System, path: Path) -> System:
    """The system saved at `path` (its topology, adapters and gated nodes) on `system`'s frozen base."""
    state = read_state(path)
    topology = Topology.from_dict(state["topology"])
    agents = Agents(system.agents.model.unload(), system.agents.tokenizer, system.agents.cfg, topology.node_ids,
                    all_node_ids=system.agents.all_node_ids)
    load_adapter_states(agents, adapter_states_from(path, topology.node_ids))
    return System(agents, topology, frozenset(state.get("new_nodes", [])), texts_from(path, topology.node_ids))


def load_system(source: Path, trained: bool = True,
                all_node_ids: list[str] | None = None) -> tuple[System, Config, Path]:
    """A saved system (a run directory's final adapters, or a checkpoint), its run's config
    and the directory it was read from. `trained=False`: the same topology with fresh adapters."""
    directory, config_path = find_system(source)
    cfg = load_config(config_path)
    state = read_state(directory)
    topology = Topology.from_dict(state["topology"])
    base, tokenizer = load_base_model(cfg.model)
    agents = Agents(base, tokenizer, cfg.agents, topology.node_ids, all_node_ids)
    texts = recipe_texts(cfg.agents.texts, topology.node_ids)  # as the run started
    if trained:
        load_adapter_states(agents, readable_adapter_states(directory, topology.node_ids))
        texts = texts_from(directory, topology.node_ids)
    return System(agents, topology, frozenset(state.get("new_nodes", [])), texts), cfg, directory
