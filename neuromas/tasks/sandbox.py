"""Run model-written Python against tests, contained.

Each run is a fresh ``python -I`` process in a new session (its own process group) inside an
empty temporary directory, with limits set before it starts: CPU seconds, address space, file
size, open files; a wall-clock timeout kills the whole group. Where the kernel allows it
(root, or unprivileged user namespaces) the process also gets its own empty network namespace.
Inside, an audit hook (PEP 578, installed before the model's code runs) refuses sockets,
new processes (fork, exec, subprocess, os.system), ctypes, and file access outside the
sandbox directory except reading the Python installation.

The harness prints its verdict with a nonce the parent gave it on stdin, so code that exits
early (``os._exit(0)``) or prints a fake verdict scores 0. This contains mistakes, runaway
programs and the common reward hacks. It is not a boundary against a determined attacker:
code can still walk its own stack frames (``sys._getframe``, which the standard library
needs) to tamper with the harness, or return objects whose ``==`` is always true. Run untrusted
workloads in a container as well.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("_sandbox_runner.py")


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0  # wall-clock seconds for the whole run
    cpu_s: int = 5  # CPU seconds
    memory_mb: int = 1024  # address space
    output_kb: int = 1024  # largest file (stdout included) the program may write
    open_files: int = 64


@dataclass(frozen=True)
class Result:
    passed: int  # tests that passed
    total: int  # tests run
    status: str  # ok | timeout | killed | crashed | no_verdict
    detail: str = ""  # the end of stderr, or why it stopped

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0


def run_tests(code: str, tests: list[str], limits: Limits = Limits()) -> Result:
    """Execute `code`, then each test snippet (e.g. ``assert f(2) == 4``) in its namespace.
    Never raises for anything the code does: a failure of any kind is a Result with 0 passed."""
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="neuromas-sandbox-") as tmp:
        work = Path(tmp)
        (work / "program.json").write_text(json.dumps({"code": code, "tests": tests}))
        out, err = (work / "stdout.txt").open("wb"), (work / "stderr.txt").open("wb")
        try:
            proc = subprocess.Popen([sys.executable, "-I", str(RUNNER), str(work)], cwd=work, stdin=subprocess.PIPE,
                                    stdout=out, stderr=err, start_new_session=True, close_fds=True,
                                    env={"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work)},
                                    preexec_fn=_limit(limits))
        except OSError as e:
            return Result(0, len(tests), "crashed", f"could not start the sandbox: {e}")
        status = "ok"
        try:
            proc.stdin.write(nonce.encode() + b"\n")
            proc.stdin.close()
        except OSError:
            pass  # it died before reading: the verdict below says so
        try:
            proc.wait(timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            status = "timeout"
        finally:
            _kill_group(proc)
        out.close()
        err.close()
        stdout = _tail(work / "stdout.txt")
        stderr = _tail(work / "stderr.txt")
    if status == "timeout":
        return Result(0, len(tests), "timeout", f"over {limits.wall_s}s wall time")
    if proc.returncode is not None and proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else "?"
        return Result(0, len(tests), "killed", f"killed by {name} (a limit was hit)")
    for line in reversed(stdout.splitlines()):
        if line.startswith(nonce + " "):
            passed, total = (int(x) for x in line.split()[1:3])
            return Result(passed, total, "ok", stderr[-500:])
    return Result(0, len(tests), "no_verdict", stderr[-500:] or "the program ended before the tests finished")


def _limit(limits: Limits):
    def apply() -> None:  # runs in the child between fork and exec: no Python-level allocation heavy work
        cpu = max(1, int(limits.cpu_s))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        memory = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        size = limits.output_kb * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _isolate_network()
    return apply


_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000


def _isolate_network() -> None:
    """A private network namespace (no interfaces but a down loopback) when the kernel allows."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNET) != 0:
            libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
    except Exception:  # noqa: BLE001 - the audit hook still refuses sockets
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _tail(path: Path, size: int = 64 * 1024) -> str:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read().decode("utf-8", errors="replace")
