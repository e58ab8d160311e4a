"""`neuromas attribute RUN`: connection weights on a saved system's failures, as a picture and a
JSON file (the work is in commands/attribution_report.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neuromas import rundir
from neuromas.config import ATTRIBUTION_AGGS, ATTRIBUTION_OBJECTIVES
from neuromas.errors import NeuromasError


def add_parser(commands) -> None:
    """The `attribute` verb's arguments, on the subparsers `commands`."""
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


def run(args: argparse.Namespace) -> None:
    source = Path(args.source)
    out = Path(args.out) if args.out else rundir.result_path(source, "attribution.png")
    if out.suffix not in (".png", ".svg"):
        raise NeuromasError(f"--out: {out} must end in .png or .svg")
    if args.questions < 1:
        raise NeuromasError("--questions must be at least 1")
    rundir.saved_system(source)
    from neuromas.commands.attribution_report import attribute as run_report, draw_report, format_report

    report = run_report(source, args.questions, args.split, args.agg, args.objective)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    draw_report(report, out)
    print(format_report(report))
    print(f"neuromas: picture in {out}, data in {out.with_suffix('.json')}", file=sys.stderr)
