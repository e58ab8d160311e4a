"""How fast each user error of the fault matrix is answered (docs/reliability.md): every row of
tests/test_reliability.py that needs no training, run as a user would, with its wall time.

    python benchmarks/errors.py

Rows before the model loads should answer in under a second (no torch import); the hub row runs
without HF_HUB_OFFLINE, as a user's shell would, against a hub that cannot be reached (imports
torch, then one connection attempt of at most 3 s). Times vary with machine load.
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

from test_reliability import ERRORS_BEFORE_TORCH, MODEL, NO_MODEL, RECIPE, make_bad_files  # noqa: E402

UNREACHABLE_HUB = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on port 9


def timed(args: list[str], env: dict | None = None) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "neuromas", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    last = (done.stderr.strip().splitlines() or [""])[-1]
    return time.perf_counter() - start, done.returncode, last


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_bad_files(d)
        run = d / "trained-without-checkpoints"
        run.mkdir()
        (run / "config.yaml").write_text(RECIPE.read_text())
        (run / "metrics.jsonl").write_text('{"step": 1, "reward/mean": 0.5}\n')
        rows = [(row, ["train", *[a.format(d=d, r=RECIPE) for a in args]], None) for row, (args, _) in NO_MODEL.items()]
        rows += [(row, [a.format(d=d, r=RECIPE, run=run) for a in args], None)
                 for row, (args, _) in ERRORS_BEFORE_TORCH.items()]
        rows += [(f"{row} (HF_HUB_OFFLINE=1)", ["train", str(RECIPE), f"model.name={name.format(d=d)}",
                                                f"tracking.run_dir={d / 'run'}"], None)
                 for row, (name, _) in MODEL.items()]
        rows.append(("a hub id with no hub reachable (no HF_HUB_OFFLINE)", ["train", str(RECIPE),
                     "model.name=someone/not-a-model", f"tracking.run_dir={d / 'run2'}"], UNREACHABLE_HUB))
        print(f"load average {os.getloadavg()[0]:.1f}\n\n| case | exit | seconds | answer |\n| --- | --- | --- | --- |")
        for row, args, env in rows:
            seconds, code, last = timed(args, env)
            answer = last.replace(str(d), "DIR").replace(str(ROOT) + "/", "").replace("|", "\\|")
            print(f"| {row} | {code} | {seconds:.1f} | `{answer[:160]}` |")
    print("\nCommand: python benchmarks/errors.py")


if __name__ == "__main__":
    main()
