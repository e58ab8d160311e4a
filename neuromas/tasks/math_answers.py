"""Math answers (GSM8K / MATH style): extraction and normalisation, so that ``1,000``,
``1000.0``, ``$1000``, ``1000 dollars``, ``\\frac{1}{2}`` / ``1/2`` / ``0.5`` compare equal."""

from __future__ import annotations

import re
from fractions import Fraction

from neuromas.tasks.rewards import last_boxed
from neuromas.tasks.sample import Sample

_ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\[dt]?frac(\d)(\d)")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_UNITS = re.compile(r"(?<=\d)\s*(?:[a-zA-Z%°]+\.?\s*)+$")


def reference_answer(answer: str) -> str:
    """The answer part of a dataset's answer field: after GSM8K's ``####``, or MATH's last ``\\boxed{}``."""
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip()
    boxed = last_boxed(answer)
    return boxed.strip() if boxed is not None else answer.strip()


def extract_math_answer(text: str) -> str | None:
    """The last ``\\boxed{}``, else what follows "the answer is", else the last number."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    said = _ANSWER_IS.findall(text)
    if said:
        numbers = _NUMBER.findall(said[-1])
        return numbers[0] if numbers else said[-1].strip().rstrip(".")
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def normalize_math(answer: str) -> str:
    """A canonical string: exact rational numbers as ``p/q`` (or integers), other answers as
    compact LaTeX-free text."""
    text = answer.strip()
    text = _TEXT.sub(r" \1", text)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", ""),
                     ("^\\circ", ""), ("^{\\circ}", ""), ("\\%", ""), ("%", ""), ("\\$", ""), ("$", ""),
                     ("\\cdot", "*"), ("\\times", "*")):
        text = text.replace(old, new)
    text = _FRAC.sub(r"(\1)/(\2)", text)
    text = _FRAC_SHORT.sub(r"\1/\2", text)
    text = text.strip().rstrip(".").strip()
    text = _UNITS.sub("", text) if re.search(r"\d", text) else text
    text = text.replace(",", "").replace(" ", "")
    if "=" in text:  # "x = 5" -> "5"
        text = text.rsplit("=", 1)[1]
    value = _as_fraction(text)
    if value is not None:
        return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    return text.strip("{}()").lower()


def _as_fraction(text: str) -> Fraction | None:
    text = text.replace("(", "").replace(")", "").replace("{", "").replace("}", "")
    try:
        if "/" in text:
            num, den = text.split("/")
            return Fraction(num) / Fraction(den)
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def math_match(completion: str, sample: Sample) -> float:
    """1.0 when the completion's answer equals the reference after `normalize_math`."""
    answer = extract_math_answer(completion)
    return float(answer is not None and normalize_math(answer) == normalize_math(sample.answer))


def has_boxed(completion: str) -> bool:
    """The format the math kinds ask for: a closed ``\\boxed{...}``."""
    return last_boxed(completion) is not None
