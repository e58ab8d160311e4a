"""One table per extension point. The schema (config.py) is read before torch loads, so the names
of choices whose owners need torch are listed there; these tests hold each owner's own table to
those names, so that a choice cannot be offered without an implementation, or the reverse."""

import argparse

from neuromas import algorithms, config
from neuromas.cli import _parser
from neuromas.tasks import KINDS, REWARDS


def test_the_schema_offers_what_the_algorithms_implement():
    assert set(config.ADVANTAGES) == {*algorithms.ADVANTAGES, "reinforce"}
    assert set(config.KL_ESTIMATORS) == set(algorithms.KL_ESTIMATORS)


def test_every_task_kind_has_a_source_and_a_known_reward():
    for name, kind in KINDS.items():
        assert kind.generated != (kind.convert is not None), f"{name}: a source or a row converter, not both"
        assert kind.reward in REWARDS, f"{name}: unknown reward {kind.reward}"
    assert config.TaskConfig(name="navigate").name == "navigate"  # the schema reads the same table


def test_the_command_line_offers_the_schemas_choices():
    parser = _parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    def choices(verb: str, option: str) -> tuple:
        return tuple(next(a for a in verbs[verb]._actions if option in a.option_strings).choices)

    assert choices("grow", "--init") == config.INITS
    assert set(choices("grow", "--connectivity")) == set(config.CONNECTIVITIES) - {"edges"}
    assert choices("attribute", "--agg") == config.ATTRIBUTION_AGGS
    assert choices("attribute", "--objective") == config.ATTRIBUTION_OBJECTIVES
