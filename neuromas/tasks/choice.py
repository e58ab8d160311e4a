"""Multiple choice (MMLU style: question, choices, answer letter): rendering and letter extraction."""

from __future__ import annotations

import re

from neuromas.tasks.rewards import last_boxed
from neuromas.tasks.sample import Sample

LETTERS = "ABCDEFGHIJ"

_PATTERNS = [  # most explicit first; within one pattern the last match wins
    re.compile(r"(?i:answer|choice|option)\s*(?i:is|:)?\s*(?:\*\*)?\(?([A-J])\b\)?"),
    re.compile(r"\*\*\(?([A-J])\)?\*\*"),
    re.compile(r"^\s*\(?([A-J])[).:]", re.MULTILINE),
    re.compile(r"\(([A-J])\)"),
    re.compile(r"^\s*([A-J])\s*$", re.MULTILINE),
]


def render_choices(question: str, choices: list[str]) -> str:
    """The question with its choices as ``A) ...`` lines (what every node sees)."""
    lines = [f"{LETTERS[i]}) {choice}" for i, choice in enumerate(choices)]
    return question.rstrip() + "\n\n" + "\n".join(lines)


def answer_letter(answer: object, num_choices: int) -> str:
    """A dataset's answer as a letter: "B", "(b)", or a 0-based index."""
    if isinstance(answer, bool):
        raise ValueError(f"answer {answer!r} is neither a letter nor a choice index")
    if isinstance(answer, int):
        index = answer
    else:
        text = str(answer).strip().strip("()").upper()
        if len(text) == 1 and text in LETTERS:
            index = LETTERS.index(text)
        elif text.isdigit():
            index = int(text)
        else:
            raise ValueError(f"answer {answer!r} is neither a letter nor a choice index")
    if not 0 <= index < num_choices:
        raise ValueError(f"answer {answer!r} is out of range for {num_choices} choices")
    return LETTERS[index]


def extract_letter(text: str, choices: list[str] | None = None) -> str | None:
    """The chosen letter: ``\\boxed{B}``, "the answer is (B)", "Answer: B", "**B**", a line
    starting with "B)" or a lone "B"; else the one choice whose text the reply quotes."""
    boxed = last_boxed(text)
    if boxed is not None:
        found = re.findall(r"\b([A-J])\b", boxed.replace("\\text", ""))
        if found:
            return found[-1].upper()
    for pattern in _PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[-1].upper()
    if choices:
        quoted = [LETTERS[i] for i, c in enumerate(choices) if c.strip() and c.strip().lower() in text.lower()]
        if len(quoted) == 1:
            return quoted[0]
    return None


def choice_match(completion: str, sample: Sample) -> float:
    """1.0 for the right letter."""
    return float(extract_letter(completion, sample.meta.get("choices")) == sample.answer)


def states_letter(completion: str) -> bool:
    """The format asked for: the letter in ``\\boxed{}``."""
    boxed = last_boxed(completion)
    return boxed is not None and re.fullmatch(r"\s*\(?[A-J]\)?\s*", boxed) is not None
