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


@dataclass(frozen=True)
class OverSeeds:
    """A method's effect over training seeds, the headline for any claim about a method: each
    seed's difference between the arms, their mean ± standard error, and a one-sample t-test on
    n - 1 degrees of freedom. (A pooled question-level test asks only whether these trained
    systems differ on these questions; it leaves the seed-to-seed spread out.)"""

    differences: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def mean(self) -> float:
        return sum(self.differences) / self.n

    @property
    def se(self) -> float:
        if self.n < 2:
            return float("nan")
        var = sum((d - self.mean) ** 2 for d in self.differences) / (self.n - 1)
        return math.sqrt(var / self.n)

    @property
    def p(self) -> float:
        """Two-sided p of the t-test (nan with one seed; 0 when every seed agrees exactly and differs from 0)."""
        if self.n < 2:
            return float("nan")
        if self.se == 0:
            return 1.0 if self.mean == 0 else 0.0
        return t_two_sided_p(self.mean / self.se, self.n - 1)

    @property
    def detectable(self) -> float:
        """The true difference this many seeds detect with 80% power at p < 0.05 (two-sided), at
        this spread: (t_0.975 + t_0.80) s.e. on n - 1 df; about 2.8 s.e. for many seeds."""
        df = self.n - 1
        return (t_quantile(0.975, df) + t_quantile(0.80, df)) * self.se if df else float("nan")

    def __str__(self) -> str:
        seeds = ", ".join(f"{d:+.3f}" for d in self.differences)
        if self.n < 2:
            return f"{self.mean:+.3f} (1 seed: no spread, no test)"
        return (f"{self.mean:+.3f} ± {self.se:.3f} over {self.n} seeds ({seeds}); t-test p = {self.p:.3g} on "
                f"{self.n - 1} df; detectable at 80% power: {self.detectable:.3f}")


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    return _betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(q: float, df: int) -> float:
    """The q-quantile (q > 0.5) of Student's t with `df` degrees of freedom, by bisection."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 1 - t_two_sided_p(mid, df) / 2 < q else (lo, mid)
    return (lo + hi) / 2


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (Lentz)."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast on this side
        return 1 - _betainc(b, a, 1 - x)
    front = math.exp(a * math.log(x) + b * math.log(1 - x) - math.lgamma(a) - math.lgamma(b) + math.lgamma(a + b)) / a
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            numerator = 1.0
        elif i % 2 == 0:
            numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 + numerator * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + numerator / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(c * d - 1) < 1e-14:
            break
    return front * (f - 1)
