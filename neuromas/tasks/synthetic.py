"""Hierarchical synthetic tasks with a depth knob, for growth and budget experiments.

- ``lookup``: multi-hop composition. A table maps names to names; follow it ``depth`` times
  from a start name. Each hop is one easy step; the chain is what is hard.
- ``countdown``: reach a target from ``depth + 1`` given numbers with + - * / and parentheses,
  each number used once. The answer is checked by evaluating the reply's expression with a
  small arithmetic evaluator over the parsed syntax tree (never ``eval``).

(Nested arithmetic, the third, is tasks/arithmetic.py.)
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from fractions import Fraction

from neuromas.tasks.arithmetic import make_expression
from neuromas.tasks.generated import GeneratedSource
from neuromas.tasks.rewards import last_boxed
from neuromas.tasks.sample import Sample

NAMES = ["ash", "birch", "cedar", "elm", "fir", "hazel", "larch", "maple", "oak", "pine", "rowan", "spruce",
         "willow", "yew", "alder", "beech"]


class LookupSource(GeneratedSource):
    """``depth`` hops through a random table of `table_size` names (each maps to another)."""

    kind = "lookup"

    def __init__(self, depth: int, seed: int, num_test: int, table_size: int = 8):
        super().__init__(seed, num_test)
        self.depth, self.table_size = depth, max(table_size, 3)

    def make(self, rng: random.Random) -> tuple[str, str, dict]:
        names = rng.sample(NAMES, min(self.table_size, len(NAMES)))
        table = {name: rng.choice([n for n in names if n != name]) for name in names}
        start = rng.choice(names)
        current = start
        for _ in range(self.depth):
            current = table[current]
        rows = "\n".join(f"{name} -> {table[name]}" for name in names)
        hops = "once" if self.depth == 1 else f"{self.depth} times"
        question = (f"A table maps each name to another name:\n{rows}\n"
                    f"Start at {start} and follow the table {hops}. Which name do you reach?")
        return question, current, {}


def lookup_match(completion: str, sample: Sample) -> float:
    """1.0 when the boxed name (else the last table name in the reply) is the reached one."""
    boxed = last_boxed(completion)
    if boxed is not None:
        return float(boxed.strip().strip(".").lower() == sample.answer)
    named = re.findall(r"\b(" + "|".join(NAMES) + r")\b", completion.lower())
    return float(bool(named) and named[-1] == sample.answer)


class CountdownSource(GeneratedSource):
    """``depth + 1`` numbers in 1..max_value and a target some expression over all of them reaches."""

    kind = "countdown"

    def __init__(self, depth: int, max_value: int, seed: int, num_test: int):
        super().__init__(seed, num_test)
        self.depth, self.max_value = depth, max_value

    def make(self, rng: random.Random) -> tuple[str, str, dict]:
        for _ in range(100):
            expression, target = make_expression(rng, self.depth, self.max_value)
            if target > 0:
                break
        numbers = sorted(int(n) for n in re.findall(r"\d+", expression))
        question = (f"Use the numbers {', '.join(map(str, numbers))}, each exactly once, with +, -, *, / and "
                    f"parentheses, to make {target}.")
        return question, str(target), {"numbers": numbers, "target": target}


class UnsafeExpression(ValueError):
    pass


def evaluate_expression(text: str) -> tuple[Fraction, list[int]]:
    """Value (exact) and the integer literals of an arithmetic expression: numbers, + - * /,
    unary minus and parentheses only. Anything else raises UnsafeExpression."""
    text = text.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/").replace("×", "*")
    text = text.replace("÷", "/").replace("−", "-").replace("\\left", "").replace("\\right", "")
    text = text.split("=")[0].strip()
    if len(text) > 200:
        raise UnsafeExpression("too long")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise UnsafeExpression(f"not an expression: {e.msg}") from None
    numbers: list[int] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            numbers.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            if right == 0:
                raise UnsafeExpression("division by zero")
            return left / right
        raise UnsafeExpression(f"{type(node).__name__} is not allowed")

    return walk(tree), numbers


def countdown_match(completion: str, sample: Sample) -> float:
    """1.0 when the boxed expression uses exactly the given numbers and equals the target."""
    boxed = last_boxed(completion)
    if boxed is None:
        return 0.0
    try:
        value, used = evaluate_expression(boxed)
    except UnsafeExpression:
        return 0.0
    return float(value == sample.meta["target"] and Counter(used) == Counter(sample.meta["numbers"]))
