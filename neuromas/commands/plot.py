"""`neuromas plot RUN...`: reward, accuracy and per-node curves of runs, overlaid, to a PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> None:
    from neuromas.commands.curves import plot_runs

    runs = [Path(r) for r in args.runs]
    out = Path(args.out) if args.out else runs[0] / "curves.png"
    plot_runs(runs, out)
    print(f"neuromas: curves in {out}", file=sys.stderr)
