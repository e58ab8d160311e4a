"""One optimizer step over every adapter: plain torch in one process, DeepSpeed in many.

Both backends take the micro-batch losses of a step (`accumulate`) and make one update
(`step`); both keep their state by parameter name, so it survives growth and checkpoints.

Why the DeepSpeed backend does not call ``engine.backward`` on each micro-batch: ZeRO-1/2
reduce gradients in buckets filled in the order backward hooks fire, so every rank's backward
must produce gradients for the same parameters in the same order. A mixed-adapter micro-batch
touches only the adapters of its rows, which differ between ranks, and ranks run different
numbers of micro-batches (zero-advantage rows are skipped). So each rank sums its micro-batch
gradients with ``torch.autograd.grad`` (no DeepSpeed hook fires), then runs exactly one
``engine.backward`` per step on the surrogate ``sum(p * g)``, whose gradient is ``g`` for every
trainable parameter, in one fixed order on every rank. DeepSpeed then reduces, clips and steps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from neuromas.agents import Agents, rename_adapter
from neuromas.config import TrainConfig
from neuromas.distributed import World
from neuromas.errors import ConfigError

# Named DeepSpeed configs: a user's own in ./configs/deepspeed/ first, then those shipped in the package.
CONFIG_DIRS = (Path("configs") / "deepspeed", Path(__file__).resolve().parent / "configs" / "deepspeed")


def build_optimizer(agents: Agents, train: TrainConfig, world: World, deepspeed: dict | None):
    """The backend for this run: DeepSpeed when a (resolved) DeepSpeed config is given."""
    if deepspeed is None:
        return TorchOptimizer(agents, train)
    return DeepSpeedOptimizer(agents, train, world, deepspeed)


class TorchOptimizer:
    """AdamW over every adapter in this process; gradients accumulate in ``p.grad``."""

    def __init__(self, agents: Agents, train: TrainConfig):
        self.agents, self.train = agents, train
        self.optimizer = torch.optim.AdamW(agents.parameters(), lr=train.lr, weight_decay=train.weight_decay)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def accumulate(self, loss: torch.Tensor) -> None:
        loss.backward()

    def node_grad_norms(self, node_ids: list[str]) -> dict[str, float]:
        return {n: _norm([p.grad for p in self.agents.parameters(n) if p.grad is not None]) for n in node_ids}

    def step(self) -> float:
        """Clip the global norm over all adapters, step; returns the norm before clipping."""
        norm = torch.nn.utils.clip_grad_norm_(self.agents.parameters(), self.train.max_grad_norm)
        self.optimizer.step()
        return float(norm)

    def named_state(self) -> dict[str, dict]:
        """Parameter name -> its optimizer state (CPU tensors)."""
        return _state_by_name(self.agents, self.optimizer)

    def load_named_state(self, named: dict[str, dict], rename: dict[str, str]) -> int:
        """Give surviving parameters (old node id -> new, by `rename`) their saved state; returns how many."""
        return _load_by_param(self.optimizer, _survivors(self.agents, named, rename))


class DeepSpeedOptimizer:
    """A DeepSpeed engine over every adapter (ZeRO-0/1/2); see the module docstring."""

    def __init__(self, agents: Agents, train: TrainConfig, world: World, config: dict):
        import deepspeed

        self.agents, self.world = agents, world
        self.params = agents.parameters()
        # A config without an "optimizer" section trains with torch's AdamW; one with it (e.g. the
        # offload config) lets DeepSpeed build its own (DeepSpeedCPUAdam for ZeRO-Offload).
        client = None if "optimizer" in config else torch.optim.AdamW(self.params, lr=train.lr,
                                                                       weight_decay=train.weight_decay)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=agents.model, optimizer=client,
                                                                  model_parameters=self.params, config=config)
        agents.model.eval()  # mixed-adapter forwards need eval mode (LoRA dropout is 0 anyway)
        self.stage = self.engine.zero_optimization_stage()
        if self.stage == 3:
            raise ConfigError("distributed.deepspeed: ZeRO-3 is not supported yet (use zero2; see configs/README.md)")
        self.grads: list[torch.Tensor] = []

    def zero_grad(self) -> None:
        self.grads = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]

    def accumulate(self, loss: torch.Tensor) -> None:
        # DeepSpeed averages gradients over ranks; the loss is normalised by whole-batch totals,
        # so scaling by the world size makes that average the gradient of the global loss.
        grads = torch.autograd.grad(loss * self.world.size, self.params, allow_unused=True)
        for buffer, grad in zip(self.grads, grads):
            if grad is not None:
                buffer += grad

    def node_grad_norms(self, node_ids: list[str]) -> dict[str, float]:
        """Norms of each node's gradient after the reduction (one collective over all adapters)."""
        flat = self.world.sum(torch.cat([g.flatten() for g in self.grads])) / self.world.size
        reduced = {id(p): piece for p, piece in zip(self.params, flat.split([g.numel() for g in self.grads]))}
        return {n: _norm([reduced[id(p)] for p in self.agents.parameters(n)]) for n in node_ids}

    def step(self) -> float:
        surrogate = sum((p * g.to(p.dtype)).sum() for p, g in zip(self.params, self.grads))
        self.engine.backward(surrogate)
        self.engine.step()
        self.grads = []
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    def _inner(self) -> torch.optim.Optimizer:
        """The torch optimizer that holds the state (over flat partitions under ZeRO-1/2)."""
        return self.optimizer.optimizer if self.stage > 0 else self.optimizer

    def named_state(self) -> dict[str, dict]:
        """Full (unpartitioned) state by parameter name: a collective, call it on every rank."""
        from deepspeed.utils import safe_get_full_optimizer_state

        inner = self._inner()
        if self.stage == 0:
            return _state_by_name(self.agents, inner)
        names = {p: n for n, p in self.agents.model.named_parameters()}
        states = [s for s in inner.state.values() if s]
        if not states:
            return {}
        keys = [k for k, v in states[0].items() if torch.is_tensor(v) and v.dim() > 0]
        step = states[0].get("step", 0)
        return {names[p]: {"step": step, **{k: safe_get_full_optimizer_state(p, k).detach().cpu() for k in keys}}
                for p in self.params}

    def load_named_state(self, named: dict[str, dict], rename: dict[str, str]) -> int:
        """Survivors get their saved moments; new parameters start at zero (all share one step count)."""
        from deepspeed.utils import safe_set_full_optimizer_state

        targets = _survivors(self.agents, named, rename)
        inner = self._inner()
        if not targets or self.stage == 0:
            return _load_by_param(inner, targets)
        keys = [k for k, v in targets[0][1].items() if torch.is_tensor(v) and v.dim() > 0]
        step = targets[0][1].get("step", 0)
        for group in inner.param_groups:  # create the (lazy) state, then link DeepSpeed's views into it
            for flat in group["params"]:
                inner.state[flat] = {"step": step.clone() if torch.is_tensor(step) else step,
                                     **{k: torch.zeros_like(flat) for k in keys}}
        self.optimizer._lazy_init_hp_params_optimizer_state()
        for param, state in targets:
            for key in keys:
                safe_set_full_optimizer_state(param, state[key].to(param.device), key)
        return len(targets)


def _state_by_name(agents: Agents, optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    """A torch optimizer's per-parameter state keyed by parameter name, on CPU."""
    by_param = {p: n for n, p in agents.model.named_parameters()}
    return {by_param[p]: {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in state.items()}
            for p, state in optimizer.state.items() if p in by_param}


def _survivors(agents: Agents, named: dict[str, dict], rename: dict[str, str]) -> list[tuple[torch.nn.Parameter, dict]]:
    """(parameter, saved state) for every saved name whose node survives under `rename`."""
    params = dict(agents.model.named_parameters())
    renamed = ((rename_adapter(name, rename), state) for name, state in named.items())
    return [(params[new], state) for new, state in renamed if new is not None and new in params]


def _load_by_param(optimizer: torch.optim.Optimizer, targets: list[tuple[torch.nn.Parameter, dict]]) -> int:
    for param, state in targets:
        optimizer.state[param] = {k: v.clone().to(param.device) if torch.is_tensor(v) and v.dim() else v
                                  for k, v in state.items()}
    return len(targets)


def _norm(tensors: list[torch.Tensor]) -> float:
    return float(torch.norm(torch.stack([t.norm() for t in tensors]))) if tensors else 0.0


def resolve_deepspeed_config(name: str | None, world: World, train: TrainConfig,
                             gpu: bool | None = None) -> dict | None:
    """The DeepSpeed config dict to use, with "auto" values filled from the recipe; None for
    plain torch (one process, no config named). N > 1 processes default to zero2; under
    `accelerate launch`, its DeepSpeed config file is the default. `gpu`: whether the model is
    on a GPU (default: whether this machine has one); bf16 "auto" is on only there."""
    # `accelerate launch` with a DeepSpeed config file says so in the environment.
    name = name or os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE") or None
    if name is None and world.size == 1:
        return None
    name = name or "zero2"
    path = Path(name)
    if path.suffix != ".json":
        found = [d / f"{name}.json" for d in CONFIG_DIRS if (d / f"{name}.json").is_file()]
        if not found:
            known = sorted({p.stem for d in CONFIG_DIRS if d.is_dir() for p in d.glob("*.json")})
            raise ConfigError(f"distributed.deepspeed: no config named {name!r} (known: {', '.join(known) or 'none'})")
        path = found[0]
    if not path.is_file():
        raise ConfigError(f"distributed.deepspeed: {path} does not exist")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"distributed.deepspeed: {path} is not valid JSON (line {e.lineno})") from None
    gpu = torch.cuda.is_available() if gpu is None else gpu
    fill = {"train_micro_batch_size_per_gpu": train.micro_batch_size, "gradient_accumulation_steps": 1,
            "train_batch_size": train.micro_batch_size * world.size, "gradient_clipping": train.max_grad_norm}
    for key, value in fill.items():
        if config.get(key, "auto") == "auto":
            config[key] = value
        elif key == "gradient_accumulation_steps" and config[key] != 1:
            raise ConfigError(f"{path}: gradient_accumulation_steps must be 1 or auto: neuromas accumulates "
                              "every micro-batch of a step itself (train.micro_batch_size sets their size)")
    for precision in ("bf16", "fp16"):
        section = config.get(precision)
        if isinstance(section, dict) and section.get("enabled") == "auto":
            section["enabled"] = gpu and precision == "bf16" and torch.cuda.is_bf16_supported()
    if config.get("fp16", {}).get("enabled") is True:
        raise ConfigError(f"{path}: fp16 is not supported (its loss scaling needs engine-driven backward); use bf16")
    optimizer = config.get("optimizer")
    if isinstance(optimizer, dict):
        params = optimizer.setdefault("params", {})
        for key, value in (("lr", train.lr), ("weight_decay", train.weight_decay)):
            if params.get(key, "auto") == "auto":
                params[key] = value
    config.setdefault("zero_allow_untested_optimizer", True)  # torch's AdamW under ZeRO
    config.setdefault("steps_per_print", 10 ** 9)  # neuromas prints its own step lines
    offload_cfg = config.get("zero_optimization", {}).get("offload_optimizer", {})
    if offload_cfg.get("pin_memory") == "auto":
        offload_cfg["pin_memory"] = gpu
    offload = offload_cfg.get("device", "none")
    if offload != "none" and "optimizer" not in config:
        raise ConfigError(f"{path}: optimizer offload needs an optimizer section (DeepSpeed then builds its CPU Adam)")
    return config
