"""BBH Navigate, generated: "If you follow these instructions, do you return to the starting
point?" with Yes/No answers, balanced. Two variants as in BIG-Bench Hard: turns ("Take 3 steps.
Turn left. ...") and "Always face forward." with steps forward/backward/left/right. Half the
"No" questions are near misses (a returning path with one step count off by one), so that the
answer cannot be read off the question's length or shape.
"""

from __future__ import annotations

import random
import re

from neuromas.tasks.generated import GeneratedSource
from neuromas.tasks.rewards import last_boxed
from neuromas.tasks.sample import Sample

HEADINGS = [(0, 1), (1, 0), (0, -1), (-1, 0)]  # north, east, south, west: turning right adds 1
SIDEWAYS = {"forward": (0, 1), "backward": (0, -1), "right": (1, 0), "left": (-1, 0)}


class NavigateSource(GeneratedSource):
    """`depth` step instructions before the path is closed (or not); even-numbered samples return
    (Yes), odd ones do not (No), so every split and the train stream are balanced."""

    kind = "navigate"

    def __init__(self, depth: int, seed: int, num_test: int):
        super().__init__(seed, num_test)
        self.depth = depth

    def _sample(self, rng: random.Random, sample_id: str) -> Sample:
        forward = rng.random() < 0.5
        returns = int(sample_id.rsplit("-", 1)[1]) % 2 == 0  # by index: every split is balanced Yes/No
        moves = _face_forward_path(rng, self.depth) if forward else _turning_path(rng, self.depth)
        if not returns:
            moves = _miss(rng, moves, forward)
        text = (["Always face forward."] if forward else []) + [_say(m) for m in moves]
        question = ("If you follow these instructions, do you return to the starting point? " + " ".join(text)
                    + "\nOptions:\n- Yes\n- No")
        assert (_end(moves, forward) == (0, 0)) == returns, text
        return Sample(id=sample_id, question=question, answer="Yes" if returns else "No",
                      meta={"variant": "always face forward" if forward else "turns"})


def _turning_path(rng: random.Random, depth: int) -> list[tuple[str, int]]:
    """`depth` steps with random turns between them, then turns and steps back to the start."""
    moves, heading, x, y = [], 0, 0, 0
    for i in range(depth):
        if i and rng.random() < 0.6:
            turn = rng.choice(["left", "right", "around"])
            moves.append(("turn", turn))
            heading = (heading + {"left": -1, "right": 1, "around": 2}[turn]) % 4
        n = rng.randint(1, 10)
        moves.append(("step", n))
        x, y = x + n * HEADINGS[heading][0], y + n * HEADINGS[heading][1]
    for axis_value, positive, negative in ((x, 3, 1), (y, 2, 0)):  # undo east-west, then north-south
        if axis_value:
            target = positive if axis_value > 0 else negative
            turn = {1: "right", 2: "around", 3: "left"}.get((target - heading) % 4)
            if turn:
                moves.append(("turn", turn))
            heading = target
            moves.append(("step", abs(axis_value)))
    return moves


def _face_forward_path(rng: random.Random, depth: int) -> list[tuple[str, int]]:
    """`depth` steps in the four directions, then the steps that undo them."""
    moves = [(rng.choice(list(SIDEWAYS)), rng.randint(1, 10)) for _ in range(depth)]
    x = sum(n * SIDEWAYS[d][0] for d, n in moves)
    y = sum(n * SIDEWAYS[d][1] for d, n in moves)
    if x:
        moves.append(("left" if x > 0 else "right", abs(x)))
    if y:
        moves.append(("backward" if y > 0 else "forward", abs(y)))
    return moves


def _miss(rng: random.Random, moves: list, forward: bool) -> list:
    """The path made not to return: half the time one step count off by one, else a new count."""
    steps = [i for i, (kind, _) in enumerate(moves) if kind != "turn"]
    while True:
        i = rng.choice(steps)
        kind, n = moves[i]
        changed = n + rng.choice([-1, 1]) if rng.random() < 0.5 else rng.randint(1, 10)
        candidate = moves[:i] + [(kind, max(1, changed))] + moves[i + 1:]
        if _end(candidate, forward) != (0, 0):
            return candidate


def _end(moves: list, forward: bool) -> tuple[int, int]:
    x = y = heading = 0
    for kind, value in moves:
        if kind == "turn":
            heading = (heading + {"left": -1, "right": 1, "around": 2}[value]) % 4
            continue
        dx, dy = SIDEWAYS[kind] if forward else HEADINGS[heading]
        x, y = x + value * dx, y + value * dy
    return x, y


def _say(move: tuple[str, int]) -> str:
    kind, value = move
    if kind == "turn":
        return "Turn around." if value == "around" else f"Turn {value}."
    plural = "step" if value == 1 else "steps"
    return f"Take {value} {plural}." if kind == "step" else f"Take {value} {plural} {kind}."


def yes_no_match(completion: str, sample: Sample) -> float:
    """1.0 when the boxed answer, else the last Yes or No in the reply, is the reference."""
    boxed = last_boxed(completion)
    said = boxed if boxed is not None else (re.findall(r"\b(yes|no)\b", completion.lower()) or [""])[-1]
    return float(said.strip().strip(".").lower() == sample.answer.lower())


def yes_no_boxed(completion: str, sample: Sample) -> float:
    """1.0 only when the last \\boxed{} of the reply is the reference (`task.extract: boxed`)."""
    boxed = last_boxed(completion)
    return float(boxed is not None and boxed.strip().strip(".").lower() == sample.answer.lower())


def yes_no_vote(text: str) -> tuple[str, str] | None:
    boxed = last_boxed(text)
    said = boxed if boxed is not None else (re.findall(r"\b(yes|no)\b", text.lower()) or [None])[-1]
    if said is None or said.strip().strip(".").lower() not in ("yes", "no"):
        return None
    word = said.strip().strip(".").capitalize()
    return word.lower(), f"\\boxed{{{word}}}"
