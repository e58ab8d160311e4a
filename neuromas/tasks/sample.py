"""One question of a task, the unit every task source yields."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    id: str
    question: str  # what the nodes are given (multiple choice: with its choices)
    answer: str  # the reference: a number, a letter, a name; "" for code (tests decide)
    meta: dict = field(default_factory=dict, compare=False)  # kind-specific: choices, tests, numbers
