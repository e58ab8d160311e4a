"""The answer a reply holds, for a voting layer (`neuromas.aggregation`): a key compared
between replies (normalised as the task's reward compares answers) and the text that states
it in the task's answer form. None: the reply holds no answer and does not vote."""

from __future__ import annotations

from neuromas.tasks.choice import extract_letter
from neuromas.tasks.code import extract_code
from neuromas.tasks.math_answers import extract_math_answer, normalize_math
from neuromas.tasks.rewards import extract_answer, last_boxed, normalize


def boxed_vote(text: str) -> tuple[str, str] | None:
    """Arithmetic, countdown and Q&A data: the boxed answer, else the last number."""
    answer = extract_answer(text)
    return None if answer is None else (normalize(answer), f"\\boxed{{{answer}}}")


def lookup_vote(text: str) -> tuple[str, str] | None:
    boxed = last_boxed(text)
    return None if boxed is None or not boxed.strip() else (boxed.strip().strip(".").lower(), f"\\boxed{{{boxed}}}")


def math_vote(text: str) -> tuple[str, str] | None:
    answer = extract_math_answer(text)
    return None if answer is None else (normalize_math(answer), f"\\boxed{{{answer}}}")


def choice_vote(text: str) -> tuple[str, str] | None:
    letter = extract_letter(text)
    return None if letter is None else (letter, f"\\boxed{{{letter}}}")


def code_vote(text: str) -> tuple[str, str] | None:
    """Identical programs (after stripping) vote together; a reply with no code holds none."""
    code = extract_code(text).strip()
    return (code, f"```python\n{code}\n```") if code and "```" in text else None
