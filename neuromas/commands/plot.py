"""`neuromas plot RUN...`: reward, accuracy and per-node curves of runs, overlaid, to a PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(commands) -> None:
    """The `plot` verb's arguments, on the subparsers `commands`."""
    plot = commands.add_parser("plot", help="training curves of one or more runs",
                               description="Reward, accuracy and per-node curves of runs, overlaid, to a PNG.")
    plot.add_argument("runs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("--out", help="PNG file (default: curves.png in the first run directory)")


def run(args: argparse.Namespace) -> None:
    from neuromas.commands.curves import plot_runs

    runs = [Path(r) for r in args.runs]
    out = Path(args.out) if args.out else runs[0] / "curves.png"
    plot_runs(runs, out)
    print(f"neuromas: curves in {out}", file=sys.stderr)
