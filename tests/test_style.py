"""House style that a tool can check: ruff (pyproject.toml: line length 120, pycodestyle and
pyflakes rules) over the package, tests, benchmarks and recipe scripts."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_ruff_passes():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: it is a test dependency (pip install -e '.[test]')")
    done = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
