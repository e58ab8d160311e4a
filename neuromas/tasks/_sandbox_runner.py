"""The program the sandbox starts (``python -I _sandbox_runner.py WORKDIR``); see sandbox.py.

Reads the verdict nonce from stdin and the code and tests from WORKDIR/program.json (then
deletes it), installs the audit hook, runs the code and each test, and prints
``nonce PASSED TOTAL``. Only the standard library is used, and nothing after the hook imports.
"""

import json
import os
import sys

WORK = os.path.realpath(sys.argv[1])
with open(os.path.join(WORK, "program.json")) as f:
    PROGRAM = json.load(f)
os.remove(os.path.join(WORK, "program.json"))

READ_ROOTS = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path)
                    if p and os.path.exists(p)})
REFUSED_PREFIXES = ("socket.", "ctypes.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
                    "os.forkpty", "os.system", "os.kill", "os.killpg", "pty.", "sys._current_frames",
                    "sys.settrace", "sys.setprofile", "gc.get_", "sys.addaudithook", "os.setuid", "os.setgid",
                    "os.chroot", "webbrowser.", "urllib.", "http.", "ftplib.", "smtplib.", "telnetlib.",
                    "imaplib.", "poplib.", "nntplib.", "mmap.", "resource.setrlimit", "os.putenv", "os.unsetenv",
                    "object.__getattr__")  # tb_frame, gi_frame, ...: the way to another frame's locals
PATH_EVENTS = {"os.remove": "w", "os.rename": "w", "os.rmdir": "w", "os.mkdir": "w", "os.chmod": "w",
               "os.chown": "w", "os.symlink": "w", "os.link": "w", "os.truncate": "w", "os.utime": "w",
               "shutil.rmtree": "w", "shutil.copyfile": "w", "shutil.move": "w", "os.listdir": "r",
               "os.scandir": "r", "os.chdir": "r", "glob.glob": "r"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _inside(path, roots) -> bool:
    if isinstance(path, int):  # an already open file descriptor
        return True
    try:
        real = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return any(real == root or real.startswith(root + os.sep) for root in roots)


def _hook(event, args):
    if event.startswith(REFUSED_PREFIXES):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
        if not _inside(path, (WORK,) if writing else (WORK, *READ_ROOTS)):
            raise PermissionError(f"sandbox: may not {'write' if writing else 'read'} {path}")
    elif event in PATH_EVENTS:
        roots = (WORK,) if PATH_EVENTS[event] == "w" else (WORK, *READ_ROOTS)
        for path in args:
            if isinstance(path, (str, bytes, os.PathLike)) and not _inside(path, roots):
                raise PermissionError(f"sandbox: {event} {path} is not allowed")


def main(nonce: str) -> None:
    """`nonce` lives only in this frame, which the hook keeps the model's code from reaching."""
    code, tests = PROGRAM["code"], PROGRAM["tests"]
    namespace = {"__name__": "solution"}
    sys.addaudithook(_hook)
    try:
        exec(compile(code, "solution.py", "exec"), namespace)
    except BaseException as e:  # noqa: BLE001 - any failure of the model's code scores 0
        print(f"{nonce} 0 {len(tests)}", flush=True)
        print(f"solution failed: {type(e).__name__}: {e}", file=sys.stderr)
        return
    passed = 0
    for test in tests:
        try:
            exec(compile(test, "test.py", "exec"), namespace)
            passed += 1
        except BaseException as e:  # noqa: BLE001
            print(f"test failed: {test[:200]!r}: {type(e).__name__}: {e}", file=sys.stderr)
    print(f"{nonce} {passed} {len(tests)}", flush=True)


main(sys.stdin.readline().strip())
