"""reasoning-gym generators as task sources: seeded, split, scored by their own checkers, offline."""

import pytest

from conftest import tiny_overrides
from neuromas.cli import main
from neuromas.config import TaskConfig
from neuromas.errors import ConfigError
from neuromas.tasks import build_task

SMALL = {"chain_sum": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1},
         "basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
         "syllogism": {}}


@pytest.mark.parametrize("generator", SMALL)
def test_a_generator_gives_disjoint_splits_a_seeded_stream_and_its_own_scores(generator):
    cfg = dict(name="reasoning_gym", dataset=generator, generator_config=SMALL[generator], num_test=12)
    task, again = build_task(TaskConfig(**cfg)), build_task(TaskConfig(**cfg))
    test, validation = [s.question for s in task.test], [s.question for s in task.validation]
    assert len(set(test)) == len(test) == 12 and not set(test) & set(validation)
    stream = [s.question for i in range(10) for s in task.train_batch(i, 3)]
    assert stream == [s.question for i in range(10) for s in again.train_batch(i, 3)] and not set(stream) & set(test)
    other = build_task(TaskConfig(**cfg, stream_seed=7))
    assert [s.question for s in other.test] == test and [s.question for s in other.train_batch(0, 3)] != stream[:3]
    for sample in task.test[:4]:  # the generator's checker, on the boxed answer (or the last line)
        assert task.reward(f"So:\n\\boxed{{{sample.answer}}}", sample) == 1.0
        assert task.reward(f"I think\n{sample.answer}", sample) == 1.0
        assert task.reward("\\boxed{certainly not this}", sample) < 1.0


def test_a_wrong_generator_or_knob_is_one_line():
    with pytest.raises(ConfigError, match="'chainsum' is not a reasoning-gym generator \\(e.g. chain_sum"):
        build_task(TaskConfig(name="reasoning_gym", dataset="chainsum"))
    with pytest.raises(ConfigError, match="task.generator_config: chain_sum: .*bogus"):
        build_task(TaskConfig(name="reasoning_gym", dataset="chain_sum", generator_config={"bogus": 1}))
    with pytest.raises(ConfigError, match="task.dataset: name a reasoning-gym generator"):
        TaskConfig(name="reasoning_gym")
    with pytest.raises(ConfigError, match="only task.name=reasoning_gym reads it"):
        TaskConfig(generator_config={"max_terms": 3})


def test_reasoning_gym_missing_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "reasoning_gym", None)
    with pytest.raises(ConfigError, match="pip install 'neuromas\\[reasoning-gym\\]'"):
        build_task(TaskConfig(name="reasoning_gym", dataset="chain_sum"))


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_the_shipped_recipe_trains_from_the_command_line(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "recipes/tasks/reasoning-gym.yaml", *tiny_overrides(tiny_model_dir, run)]) == 0
    assert (run / "adapters" / "L0N0" / "adapter_model.safetensors").is_file()
