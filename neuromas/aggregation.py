"""Per-layer aggregation (ANN): how a layer's messages are combined before later layers read them.

- concat: every message is read on its own (the default; nothing is combined).
- vote: the majority over the answers the task parses from the messages (`Vote`); the
  combined message is that answer in the task's answer form (``\\boxed{7}``). Ties go to the
  answer given first in node order; messages without an answer do not vote.
- select:<rule>: one whole message, chosen by `majority` (the first message holding the
  majority answer), `shortest`, `longest`, or `judge`: the frozen base model (adapters off)
  reads the task and the candidates and names one; an unreadable reply falls back to majority.

A combined layer may end the system: its combination is then the system's answer, and its
nodes are all answering nodes. A reader of a combined layer reads one block for the layer,
whose token span is credited to the node the combination came from (`Combined.source`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable

# The answer a message holds, as (key compared between messages, text that states it); None: no answer.
Vote = Callable[[str], "tuple[str, str] | None"]

AGGREGATIONS = ("concat", "vote", "select:majority", "select:shortest", "select:longest", "select:judge")


@dataclass(frozen=True)
class Combined:
    """A combined layer's message in one episode."""

    text: str  # what the layer's readers read; for the last layer, the system's answer
    source: str | None  # the node it came from (vote: the first node holding the majority); None: no answer


def combine(how: str, messages: list[tuple[str, str]], vote: Vote, judge_choice: int | None = None) -> Combined:
    """Combine one episode's (node id, text) messages of a layer, in node order, by `how`
    (one of AGGREGATIONS other than concat). `judge_choice`: the 0-based candidate the judge
    named (select:judge), None when it named none."""
    assert how in AGGREGATIONS and how != "concat" and messages, (how, len(messages))
    if how == "vote":
        winner = _majority(messages, vote)
        return Combined("", None) if winner is None else Combined(vote(messages[winner][1])[1], messages[winner][0])
    rule = how.split(":", 1)[1]
    if rule == "judge" and judge_choice is not None and 0 <= judge_choice < len(messages):
        chosen = judge_choice
    elif rule in ("majority", "judge"):
        chosen = _majority(messages, vote)
        chosen = 0 if chosen is None else chosen
    else:  # shortest / longest by characters; ties: the first in node order
        sign = 1 if rule == "shortest" else -1
        chosen = min(range(len(messages)), key=lambda i: (sign * len(messages[i][1].strip()), i))
    return Combined(messages[chosen][1], messages[chosen][0])


def _majority(messages: list[tuple[str, str]], vote: Vote) -> int | None:
    """Index of the first message holding the most common answer; None when none holds one."""
    keys = [None if (v := vote(text)) is None else v[0] for _, text in messages]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    most = max(counts.values())
    return next(i for i, k in enumerate(keys) if k is not None and counts[k] == most)


_NUMBER = re.compile(r"\d+")


def parse_judge(reply: str, num_candidates: int) -> int | None:
    """The 0-based candidate a judge's reply names: its first number in 1..num_candidates."""
    for match in _NUMBER.findall(reply):
        if 1 <= int(match) <= num_candidates:
            return int(match) - 1
    return None
