"""Answer extraction and rewards. A reward is a plain function ``reward(completion, sample) -> float``."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable

from neuromas.errors import ConfigError


@dataclass(frozen=True)
class Sample:
    id: str
    question: str
    answer: str


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


BUILTIN_REWARDS: dict[str, Callable[[str, Sample], float]] = {"exact_match": exact_match}


def resolve_reward(name: str) -> Callable[[str, Sample], float]:
    """A built-in reward by name, or any function by dotted path (``pkg.module:function``)."""
    if name in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[name]
    module_name, sep, attr = name.partition(":")
    if not sep:
        module_name, _, attr = name.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"task.reward: {name!r} is neither a built-in ({', '.join(BUILTIN_REWARDS)}) "
                          "nor a dotted path like pkg.module:function")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"task.reward: cannot import {name!r} ({e})") from None
    if not callable(fn):
        raise ConfigError(f"task.reward: {name!r} is not callable")
    return fn
