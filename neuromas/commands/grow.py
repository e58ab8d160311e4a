"""`neuromas grow RUN --widths W`: a saved system grown into a bigger topology, ready to train."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neuromas import rundir
from neuromas.errors import NeuromasError


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
