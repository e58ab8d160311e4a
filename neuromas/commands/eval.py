"""`neuromas eval RUN`: accuracy of a saved system, its message ablations and baselines, or two
systems compared (the work is in commands/evaluation.py, imported once the arguments are checked)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuromas import rundir
from neuromas.config import ABLATIONS
from neuromas.errors import NeuromasError


def add_parser(commands) -> None:
    """The `eval` verb's arguments, on the subparsers `commands`."""
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


def run(args: argparse.Namespace) -> None:
    if args.samples < 1 or (args.questions is not None and args.questions < 1):
        raise NeuromasError("--samples and --questions must be at least 1")
    if args.vote < 0 or args.vote == 1 or (args.max_new_tokens is not None and args.max_new_tokens < 1):
        raise NeuromasError("--vote must be at least 2 and --max-new-tokens at least 1")
    if len(args.sources) > 2:
        raise NeuromasError(f"eval takes one system, or two to compare; got {len(args.sources)}")
    sources = [Path(s) for s in args.sources]
    if args.against and len(sources) > 1:
        raise NeuromasError("--against compares one system with its baseline; give one RUN_OR_CHECKPOINT")
    messages = tuple(m.strip() for m in args.messages.split(",")) if args.messages else ()
    unknown = [m for m in messages if m not in ABLATIONS]
    if unknown or (args.per_node and not messages):
        raise NeuromasError(f"--messages: expected empty and/or shuffled, got {args.messages!r}" if unknown else
                            "--per-node: give the ablations with --messages empty|shuffled")
    if args.baseline and args.against not in ("vote", "tokens"):
        raise NeuromasError("--baseline: only with --against vote or --against tokens")
    for source in [*sources, *([args.baseline] if args.baseline else [])]:
        rundir.saved_system(source)  # before torch is imported: a mistake is answered at once
    from neuromas.commands.evaluation import (EvalRequest, compare, evaluate, format_comparison, format_table,
                                              write_result)

    requests = [EvalRequest(s, args.split, args.samples, args.questions, args.system, args.single_agent, messages,
                            args.per_node, vote=args.vote, max_new_tokens=args.max_new_tokens) for s in sources]
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
    from neuromas.commands.evaluation import EvalRequest

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
