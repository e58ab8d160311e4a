"""Code tasks (HumanEval / MBPP style): the reply's program runs against the sample's tests in
the sandbox (tasks/sandbox.py). A sandbox failure of any kind scores 0, never raises."""

from __future__ import annotations

import re
from dataclasses import dataclass

from neuromas.tasks.sample import Sample
from neuromas.tasks.sandbox import Limits, run_tests

_BLOCK = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(completion: str) -> str:
    """The last fenced code block (an unclosed last block counts), else the whole reply."""
    blocks = _BLOCK.findall(completion)
    return blocks[-1] if blocks else completion


def program_for(completion: str, sample: Sample) -> str:
    """The code to run: the reply's, after the task's prompt when the reply only continues it
    (a HumanEval reply often gives just the body) or leaves out the entry point."""
    code = extract_code(completion)
    entry, prompt = sample.meta.get("entry_point"), sample.meta.get("prompt", "")
    if prompt and entry and not re.search(rf"def\s+{re.escape(entry)}\s*\(", code):
        code = prompt + code
    setup = sample.meta.get("setup", "")
    return f"{setup}\n{code}" if setup else code


@dataclass(frozen=True)
class CodeReward:
    """reward = 1 if every test passes (``score: all``) or the fraction that pass (``fraction``)."""

    score: str = "all"
    limits: Limits = Limits()

    def __call__(self, completion: str, sample: Sample) -> float:
        result = run_tests(program_for(completion, sample), list(sample.meta["tests"]), self.limits)
        if self.score == "fraction":
            return result.fraction
        return float(result.total > 0 and result.passed == result.total)


def has_code_block(completion: str) -> bool:
    return bool(_BLOCK.search(completion))
