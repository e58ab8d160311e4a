"""One question of a task, the unit every task source yields."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    id: str
    question: str  # what the nodes are given (multiple choice: with its choices)
    answer: str  # the reference: a number, a letter, a name; "" for code (tests decide)
    meta: dict = field(default_factory=dict, compare=False)  # kind-specific: choices, tests, numbers
    # Per-node views (distributed context): "first" lists what each first-layer node is given in
    # place of the question (node i reads first[i % len]), "sink" what the answering node is given.
    # A node that is both (a one-node system) is given the whole question.
    views: dict = field(default_factory=dict, compare=False)

    def view(self, layer: int, index: int, depth: int) -> str:
        """The task text the node at (layer, index) of a `depth`-layer graph is given."""
        first, sink = layer == 0, layer == depth - 1
        if first and not sink and self.views.get("first"):
            parts = self.views["first"]
            return parts[index % len(parts)]
        if sink and not first and "sink" in self.views:
            return self.views["sink"]
        return self.question

    def __getitem__(self, key: str):
        """A mapping view (`sample["answer"]`), as users of datasets expect in a reward function."""
        if key in ("id", "question", "answer", "meta", "views"):
            return getattr(self, key)
        return self.meta[key]

    def get(self, key: str, default=None):
        try:
            return self[key]
        except KeyError:
            return default
