"""Tools a node may call while it writes its message.

A node is told the tools' JSON schemas (transformers' `get_json_schema`, from each function's type
hints and docstring) and calls one by writing, in the Hermes format most open models are trained on,

    <tool_call>{"name": "python", "arguments": {"code": "print(6 * 7)"}}</tool_call>

The rollout engine cuts the node's sampled tokens right after the closing tag, runs the call, appends
the result as a tool turn (`ToolBox.result_text`) and lets the node continue, up to `tools.max_calls`
calls per turn. A call that names no tool, has malformed arguments, raises or runs out of time gets
an error message back as its result; the run goes on.

Tools: `python` (runs the code in the task sandbox, with its limits, and returns what it printed)
and a user's own functions, named `pkg.module:function` or `path/to/file.py:function`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as CallTimeout
from dataclasses import dataclass
from typing import Callable

from neuromas.config import ToolsConfig
from neuromas.errors import ConfigError
from neuromas.plugins import load_named

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.DOTALL)


def python(code: str) -> str:
    """Run a Python program and return what it printed (stdout, then stderr).

    Args:
        code: the program's source; print what you want to see.
    """
    raise AssertionError("run by ToolBox in the sandbox")  # the schema's source only


@dataclass(frozen=True)
class Tool:
    name: str
    function: Callable[..., object]
    schema: dict  # {"type": "function", "function": {"name", "description", "parameters"}}


def load_tool(spec: str) -> Tool:
    """`python`, `pkg.module:function` or `path/to/file.py:function` -> a Tool with its schema."""
    from transformers.utils import get_json_schema

    if spec == "python":
        function = python
    else:
        function = load_named(spec, "tools.use")
        if not callable(function):
            raise ConfigError(f"tools.use: {spec} is not a function")
    try:
        schema = get_json_schema(function)
    except Exception as e:  # DocstringParsingException, TypeHintParsingException: what is missing, in words
        raise ConfigError(f"tools.use: {spec}: {str(e).splitlines()[0]}") from None
    return Tool(schema["function"]["name"], function, schema)


@dataclass(frozen=True)
class Call:
    """One tool call as the node wrote it, and what came of it."""

    name: str
    result: str
    error: bool


class ToolBox:
    """The tools of a run and how calls to them are read, run and answered."""

    def __init__(self, cfg: ToolsConfig):
        self.cfg = cfg
        self.tools = {tool.name: tool for tool in map(load_tool, cfg.use)}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="neuromas-tool")

    def serves(self, node_id: str) -> bool:
        return bool(self.tools) and (not self.cfg.nodes or node_id in self.cfg.nodes)

    def instructions(self) -> str:
        """What a node with tools is told (appended to its system message)."""
        schemas = "\n".join(json.dumps(tool.schema) for tool in self.tools.values())
        example = ('{"name": "python", "arguments": {"code": "print(123 * 45)"}}' if "python" in self.tools else
                   '{"name": <name>, "arguments": {...}}')
        return (f"You may call tools, at most {self.cfg.max_calls} per reply. Their signatures:\n{schemas}\n"
                f"To call one, write for example {CALL_OPEN}{example}{CALL_CLOSE} and stop; its result comes "
                "back to you, and you continue.")

    @staticmethod
    def call_end(text: str) -> int | None:
        """Where the first complete tool call of `text` ends (after its closing tag), or None."""
        found = _CALL.search(text)
        return found.end() if found else None

    def run(self, text: str) -> Call:
        """Run the first tool call in `text`; every failure is an error result, never an exception."""
        found = _CALL.search(text)
        try:
            request = json.loads(found.group(1))
            name, arguments = request["name"], request.get("arguments", {})
            if isinstance(arguments, str):
                arguments = json.loads(arguments)
            if not isinstance(arguments, dict):
                raise TypeError("arguments must be an object")
        except (AttributeError, ValueError, KeyError, TypeError) as e:
            return Call("?", f"error: the call is not {{\"name\": ..., \"arguments\": {{...}}}} JSON ({e})", True)
        if name not in self.tools:
            return Call(str(name), f"error: no tool named {name!r} (tools: {', '.join(self.tools)})", True)
        try:
            if name == "python" and self.tools[name].function is python:
                result = self._python(str(arguments.get("code", "")))
            else:
                result = self._pool.submit(self.tools[name].function, **arguments).result(self.cfg.timeout_s)
        except CallTimeout:
            return Call(name, f"error: {name} took longer than {self.cfg.timeout_s}s", True)
        except Exception as e:
            return Call(name, f"error: {type(e).__name__}: {e}", True)
        return Call(name, self._clip(str(result)), False)

    def _python(self, code: str) -> str:
        """Run `code` in a fresh isolated interpreter with the sandbox's limits (tasks.sandbox)."""
        from neuromas.tasks.sandbox import _kill_group, _limit, Limits

        # The CPU limit sits above the wall-clock one, so a long run is always the timeout the node is told of.
        limits = Limits(wall_s=self.cfg.timeout_s, cpu_s=int(self.cfg.timeout_s) + 2)
        with tempfile.TemporaryDirectory(prefix="neuromas-tool-") as work:
            proc = subprocess.Popen([sys.executable, "-I", "-c", code], cwd=work, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work},
                                    preexec_fn=_limit(limits))
            try:
                out, _ = proc.communicate(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.communicate()
                raise CallTimeout from None
            finally:
                _kill_group(proc)
        text = out.decode(errors="replace")
        if proc.returncode is not None and proc.returncode < 0:  # killed: a memory or file-size limit was hit
            raise RuntimeError(f"python was killed by signal {-proc.returncode} (a sandbox limit was hit)")
        return text if proc.returncode == 0 else f"{text}(exit status {proc.returncode})"

    def _clip(self, text: str) -> str:
        limit = self.cfg.max_result_chars
        return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
