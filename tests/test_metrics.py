"""The one reduction rule for statistics, over micro-batches and over ranks."""

import pytest

from neuromas.metrics import Stats


def test_each_statistic_reduces_by_the_kind_it_was_recorded_with():
    a, b = Stats(), Stats()
    for part, tokens, gap in ((a, 3, 0.1), (b, 5, 0.4)):
        part.add("node/L0N0/tokens", tokens)
        part.add("node/L0N0/tokens", 1)  # a second micro-batch
        part.peak("train/logprob_gap", gap)
        part.set("train/grad_norm", 2.0)  # of the reduced gradient: the same everywhere
        part.set("reward/mean", tokens / 10, "mean")
        part.set("time/step", tokens * 1.0, "max")
    a.set("credit/mode", "shared")
    b.add("node/L1N0/rows", 2)  # only one rank saw this node
    both = Stats.combine([a, b])
    assert both.values == {"node/L0N0/tokens": 10, "train/logprob_gap": 0.4, "train/grad_norm": 2.0,
                           "reward/mean": pytest.approx(0.4), "time/step": 5.0, "credit/mode": "shared",
                           "node/L1N0/rows": 2}
    assert Stats.combine([a]).values == a.values  # one process: unchanged


def test_a_statistic_cannot_change_its_kind():
    stats = Stats()
    stats.add("train/loss", 1.0)
    with pytest.raises(ValueError, match="train/loss"):
        stats.peak("train/loss", 2.0)
