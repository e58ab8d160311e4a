"""`neuromas grow RUN --widths W`: a saved system grown into a bigger topology, ready to train."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuromas import rundir
from neuromas.config import CONNECTIVITIES, INITS
from neuromas.errors import NeuromasError


def add_parser(commands) -> None:
    """The `grow` verb's arguments, on the subparsers `commands`."""
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


def run(args: argparse.Namespace) -> None:
    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        raise NeuromasError(f"--widths: expected numbers like 4,2,1, got {args.widths!r}") from None
    rundir.saved_system(args.source)
    from neuromas.surgery import grow_saved_system  # heavy imports only when needed

    out = grow_saved_system(Path(args.source), widths, args.init, args.connectivity, args.noise, args.gate_steps,
                            Path(args.out) if args.out else None)
    print(f"neuromas: grown system in {out}; train it with: neuromas train {out / 'config.yaml'}", file=sys.stderr)
