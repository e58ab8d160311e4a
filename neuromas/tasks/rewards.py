"""Answer extraction and rewards. A reward is a plain function ``reward(completion, sample) -> float``."""

from __future__ import annotations

import re
from typing import Callable

from neuromas.errors import ConfigError
from neuromas.plugins import load_named
from neuromas.tasks.sample import Sample

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, with nested braces; None if there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None  # unclosed


def extract_answer(text: str) -> str | None:
    """The last ``\\boxed{}`` content, else the last number in the text."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def normalize(answer: str) -> str:
    """Canonical form for comparison: no spaces, commas, $ or trailing period; 4.0 -> 4."""
    text = answer.strip().strip("$").rstrip(".").replace(",", "").replace(" ", "")
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() else repr(value)


def exact_match(completion: str, sample: Sample) -> float:
    """1.0 when the extracted answer equals the reference after normalisation."""
    answer = extract_answer(completion)
    return float(answer is not None and normalize(answer) == normalize(sample.answer))


def boxed_match(completion: str, sample: Sample) -> float:
    """1.0 when the last ``\\boxed{}`` holds the reference: no last-number fallback, so a reply
    cut off before its box, or one that echoes an operand, scores 0 (task.extract=boxed)."""
    answer = last_boxed(completion)
    return float(answer is not None and normalize(answer) == normalize(sample.answer))


def resolve_reward(name: str, builtins: dict[str, Callable[[str, Sample], float]]) -> Callable[[str, Sample], float]:
    """A built-in reward by name (`builtins`: neuromas.tasks.REWARDS, the one table), or any
    function by dotted path (``pkg.module:function``) or in a Python file
    (``path/to/rewards.py:function``, relative to the working directory)."""
    if name in builtins:
        return builtins[name]
    if ":" not in name and "." in name:  # pkg.module.function
        module_name, _, attr = name.rpartition(".")
        name = f"{module_name}:{attr}"
    if ":" not in name:
        raise ConfigError(f"task.reward: {name!r} is neither a built-in ({', '.join(builtins)}) "
                          "nor a dotted path like pkg.module:function")
    fn = load_named(name, "task.reward")
    if not callable(fn):
        raise ConfigError(f"task.reward: {name!r} is not callable")
    return fn
