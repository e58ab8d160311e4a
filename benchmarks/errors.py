"""How fast each user error of the fault matrix is answered (docs/reliability.md): every row of
tests/test_reliability.py that needs no training, run as a user would, with its wall time.

    python benchmarks/errors.py

Rows before the model loads should answer in about a second (no torch import); rows about the
model import torch and transformers first (several seconds). Times vary with machine load.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_reliability import MODEL, NO_MODEL, RECIPE, make_bad_files  # noqa: E402


def timed(args: list[str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "neuromas", "train", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    last = (done.stderr.strip().splitlines() or [""])[-1]
    return time.perf_counter() - start, done.returncode, last


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_bad_files(d)
        rows = [(row, [a.format(d=d, r=RECIPE) for a in args]) for row, (args, _) in NO_MODEL.items()]
        rows += [(row, [str(RECIPE), f"model.name={name.format(d=d)}", f"tracking.run_dir={d / 'run'}"])
                 for row, (name, _) in MODEL.items()]
        print(f"load average {os.getloadavg()[0]:.1f}\n\n| case | exit | seconds | answer |\n| --- | --- | --- | --- |")
        for row, args in rows:
            seconds, code, last = timed(args)
            answer = last.replace(str(d), "DIR").replace(str(ROOT) + "/", "").replace("|", "\\|")
            print(f"| {row} | {code} | {seconds:.1f} | `{answer[:160]}` |")
    print("\nCommand: python benchmarks/errors.py")


if __name__ == "__main__":
    main()
