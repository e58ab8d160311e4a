"""`neuromas attribute RUN`: connection weights on a saved system's failures, as a picture and a
JSON file (the work is in commands/attribution_report.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neuromas import rundir
from neuromas.errors import NeuromasError


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
