"""Many processes, one system: who this process is, and the few collectives the trainer needs.

torchrun, the deepspeed launcher and the SLURM script in launch/ all set RANK, WORLD_SIZE and
LOCAL_RANK. A process started without them is rank 0 of 1 and never touches torch.distributed,
unless a DeepSpeed config is asked for (DeepSpeed needs a process group even for one process).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from neuromas.errors import ConfigError, NeuromasError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that logs, prints and writes files."""
        return self.rank == 0

    def shard(self, items: list, what: str = "train.questions_per_step") -> list:
        """This rank's contiguous block of a global batch; the batch must split evenly."""
        if len(items) % self.size:
            raise ConfigError(f"{what}: {len(items)} does not split evenly over {self.size} processes")
        size = len(items) // self.size
        return items[self.rank * size:(self.rank + 1) * size]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of `tensor` over ranks (a new tensor, same device)."""
        if self.size == 1:
            return tensor.clone()
        import torch.distributed as dist

        out = tensor.detach().to(_comm_device(), copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(tensor.device)

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank (picklable objects)."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def check_same(self, params: list[torch.Tensor], step: int) -> None:
        """Data parallelism keeps every rank's adapters identical; stop loudly if they are not."""
        if self.size == 1:
            return
        digest = torch.stack([torch.stack([p.detach().double().sum(), p.detach().double().abs().sum()])
                              for p in params]).cpu()
        differ = [r for r, d in enumerate(self.gather(digest)) if not torch.equal(d, digest)]
        if differ:
            raise NeuromasError(f"step {step}: rank {self.rank} and rank(s) {differ} hold different "
                                "adapters; data-parallel training went out of step (please report this)")

    def close(self) -> None:
        """Leave the process group, if this process joined one. Called once, as the run ends (also
        after an error): without it, gloo's worker threads can still hold tensors while the
        interpreter shuts down, and the process dies with SIGABRT after a finished run."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (e.g. preparing a model cache), then the others."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()


class StopRequests:
    """While active, SIGINT (Ctrl-C) and SIGTERM (e.g. SLURM preemption) ask the run to stop
    after the step in progress, instead of killing it mid-step; a second signal stops at once.
    `requested` is collective: every rank stops after the same step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.flag, self._old = False, {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        print(f"\nneuromas: {signal.Signals(signum).name}: stopping after the step or evaluation in progress, "
              "with a checkpoint (send it again to stop at once)", file=sys.stderr, flush=True)

    def requested(self, world: World) -> bool:
        return bool(world.sum(torch.tensor(float(self.flag))) > 0) if world.size > 1 else self.flag


def _comm_device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def launched_world() -> World:
    """The world the launcher describes in the environment (no process group is started)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise NeuromasError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun or deepspeed)") from None
    return World(rank, size, local)


def init_world(deepspeed_requested: bool, on_gpu: bool | None = None) -> World:
    """Join the launcher's process group (nccl when the model is on a GPU, else gloo) when there is
    more than one process, or when DeepSpeed is asked for in a single process. Each process takes
    the GPU of its local rank. `on_gpu` defaults to whether this machine has a CUDA GPU."""
    world = launched_world()
    if world.size == 1 and not deepspeed_requested:
        return world
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return world
    if world.size == 1:  # a single process started by hand: DeepSpeed still wants a group
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    if not on_gpu:  # a CPU model on a GPU machine: keep DeepSpeed's engine off the GPU too
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed
    except ImportError:
        raise NeuromasError("multi-process training needs DeepSpeed (pip install 'neuromas[deepspeed]')") from None
    if on_gpu:
        gpus = torch.cuda.device_count()
        if world.local_rank >= gpus:
            raise NeuromasError(f"process {world.local_rank} of this node has no GPU: the node has {gpus}; start at "
                                f"most {gpus} process(es) per node (torchrun --nproc_per_node={gpus}), "
                                "or train on CPU with model.device=cpu")
        torch.cuda.set_device(world.local_rank)
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False)
    return world


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
