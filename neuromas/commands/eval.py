"""`neuromas eval RUN`: accuracy of a saved system, its message ablations and baselines, or two
systems compared (the work is in commands/evaluation.py, imported once the arguments are checked)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuromas import rundir
from neuromas.config import ABLATIONS
from neuromas.errors import NeuromasError


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
