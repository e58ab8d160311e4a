"""House style that a tool can check: ruff (pyproject.toml: line length 120, pycodestyle and
pyflakes rules) over the package, tests, benchmarks and recipe scripts."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def test_ruff_passes():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: it is a test dependency (pip install -e '.[test]')")
    done = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_the_library_never_imports_a_command():
    """Library below, commands above: no module outside neuromas/commands (and the CLI that
    dispatches to it) imports from neuromas.commands or neuromas.cli."""
    import ast

    offenders = []
    for path in sorted((ROOT / "neuromas").rglob("*.py")):
        relative = path.relative_to(ROOT / "neuromas")
        if relative.parts[0] == "commands" or relative.name in ("cli.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{relative}: {n}" for n in names if n.startswith(("neuromas.commands", "neuromas.cli"))]
    assert not offenders, offenders


def test_a_command_module_is_light_at_import():
    """Every verb answers a mistake before torch loads: importing its module imports no torch."""
    code = ("import sys, importlib; [importlib.import_module(f'neuromas.commands.{v}') for v in "
            "('train', 'grow', 'eval', 'show', 'plot', 'attribute')]; import neuromas.cli; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
