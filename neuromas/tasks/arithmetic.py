"""Nested arithmetic: a seeded generator of expressions that need several steps.

``depth`` is the number of operators; ``(7 - 3) * (2 + 5)`` has depth 3. The test split is a
fixed set drawn from its own seed, as is a validation split; the train stream never yields
an expression of either.
"""

from __future__ import annotations

import random

from neuromas.tasks.generated import GeneratedSource

OPERATORS = ("+", "-", "*")


def make_expression(rng: random.Random, depth: int, max_value: int) -> tuple[str, int]:
    """A random expression with exactly `depth` operators and its integer value."""
    if depth == 0:
        value = rng.randint(1, max_value)
        return str(value), value
    left_ops = rng.randint(0, depth - 1)
    left, lv = make_expression(rng, left_ops, max_value)
    right, rv = make_expression(rng, depth - 1 - left_ops, max_value)
    op = rng.choice(OPERATORS)
    value = {"+": lv + rv, "-": lv - rv, "*": lv * rv}[op]
    wrap = lambda text, ops: f"({text})" if ops else text  # noqa: E731 - parenthesise sub-expressions
    return f"{wrap(left, left_ops)} {op} {wrap(right, depth - 1 - left_ops)}", value


class ArithmeticSource(GeneratedSource):
    kind = "arithmetic"

    def __init__(self, depth: int, max_value: int, seed: int, num_test: int):
        super().__init__(seed, num_test)
        self.depth, self.max_value = depth, max_value

    def make(self, rng: random.Random) -> tuple[str, str, dict]:
        text, value = make_expression(rng, self.depth, self.max_value)
        return f"Compute {text}.", str(value), {}
