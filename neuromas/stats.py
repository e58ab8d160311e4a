"""Error bars for accuracies: a per-question result with its standard error, and the paired
comparison of two systems on the same questions (bootstrap interval and exact McNemar test).

An accuracy is never printed without its standard error and question count: on 48 questions
one question is 0.021, and the standard error of an accuracy near 0.5 is 0.072.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Accuracy:
    """Which of n questions were answered correctly."""

    correct: tuple[bool, ...]

    @classmethod
    def of(cls, correct: Sequence) -> "Accuracy":
        return cls(tuple(bool(c) for c in correct))

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def mean(self) -> float:
        return sum(self.correct) / self.n if self.n else 0.0

    @property
    def se(self) -> float:
        """Standard error of the mean, sqrt(p (1 - p) / n)."""
        return math.sqrt(self.mean * (1 - self.mean) / self.n) if self.n else 0.0

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.se:.3f} ({self.n} questions)"


@dataclass(frozen=True)
class PairedDifference:
    """B minus A on the same questions."""

    n: int
    difference: float  # mean(b) - mean(a)
    se: float  # standard error of the mean per-question difference
    ci: tuple[float, float]  # bootstrap percentile interval
    confidence: float
    only_a: int  # questions A got right and B got wrong
    only_b: int
    mcnemar_p: float  # exact two-sided McNemar (binomial on the discordant questions)

    def __str__(self) -> str:
        return (f"{self.difference:+.3f} ± {self.se:.3f} (paired, {self.n} questions; {self.confidence:.0%} CI "
                f"[{self.ci[0]:+.3f}, {self.ci[1]:+.3f}]; {self.only_b} gained, {self.only_a} lost, "
                f"McNemar p = {self.mcnemar_p:.3g})")

    def to_dict(self) -> dict:
        return {"n": self.n, "difference": self.difference, "se": self.se, "ci": list(self.ci),
                "confidence": self.confidence, "only_a": self.only_a, "only_b": self.only_b,
                "mcnemar_p": self.mcnemar_p}


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: P(a split at least this uneven | discordant pairs are fair coins)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_difference(a: Accuracy, b: Accuracy, confidence: float = 0.95, resamples: int = 10_000,
                      seed: int = 0) -> PairedDifference:
    """Compare B with A question by question (the same questions, in the same order)."""
    if a.n != b.n or a.n == 0:
        raise ValueError(f"paired comparison needs the same non-empty set of questions, got {a.n} and {b.n}")
    n = a.n
    diffs = [int(y) - int(x) for x, y in zip(a.correct, b.correct)]
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    ci = (means[int(tail * (resamples - 1))], means[int(math.ceil((1 - tail) * (resamples - 1)))])
    only_a, only_b = diffs.count(-1), diffs.count(1)
    return PairedDifference(n, mean, math.sqrt(var / n), ci, confidence, only_a, only_b, mcnemar_p(only_a, only_b))
