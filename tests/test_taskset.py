"""A verifiers taskset as the task source: its prompts are the questions, its own rewards score the
graph's answer, and its tasks split into test, validation and a train stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tiny_overrides
from neuromas.config import TaskConfig
from neuromas.errors import ConfigError
from neuromas.recipe import load_config
from neuromas.tasks import build_task
from neuromas.trainer import Trainer
from test_trainer import RECIPE

TASKSET = f"{Path(__file__).parent.parent / 'recipes' / 'tasks' / 'add_taskset.py'}:AddTaskset"


def taskset_task(**kw):
    return build_task(TaskConfig(name="verifiers", taskset=TASKSET, num_test=4, **kw))


def test_a_tasksets_prompts_become_questions_and_its_rewards_score_answers():
    task = taskset_task()
    test, validation = task.test, task.validation
    assert len(test) == len(validation) == 4
    assert not {s.meta["key"] for s in test} & {s.meta["key"] for s in validation}
    train = task.train_batch(0, 12)
    assert not {s.meta["key"] for s in train} & {s.meta["key"] for s in test + validation}  # the rest, cycled
    assert task.train_batch(1, 12)[0].meta["key"] == train[0].meta["key"]  # 12 tasks: the stream cycles
    sample = test[0]
    a = int(sample.question.split()[2])
    assert sample.question == f"What is {a} + {a + 1}?" and sample.answer == str(2 * a + 1)
    rewards = task.score([f"It is {2 * a + 1}", "It is 0"], [sample, sample])
    assert rewards.tolist() == [1.0, 0.0]
    assert taskset_task(taskset_config={"num_tasks": 9}).test  # the config reaches the taskset
    other = build_task(TaskConfig(name="verifiers", taskset=TASKSET, num_test=4, seed=1)).test
    assert [s.meta["key"] for s in other] != [s.meta["key"] for s in test]  # task.seed reorders


@pytest.mark.parametrize("settings, expected", [
    ({"taskset_config": {"num_tasks": 8}}, "holds 8 tasks"),
    ({"taskset_config": {"nope": 1}}, "task.taskset_config"),
    ({"taskset": "os.path:join"}, "not a verifiers Taskset"),
    ({"taskset": None}, "task.taskset: name the verifiers Taskset"),
])
def test_a_bad_taskset_is_a_one_line_config_error(settings, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        build_task(TaskConfig(**{"name": "verifiers", "taskset": TASKSET, "num_test": 4, **settings}))
    assert "\n" not in str(info.value)


@pytest.mark.slow  # about 10 s or more on 2 cores
def test_a_training_run_on_a_taskset(tiny_model_dir, tmp_path):
    cfg = load_config(RECIPE, tiny_overrides(tiny_model_dir, tmp_path / "run", **{
        "task.name": "verifiers", "task.taskset": TASKSET, "task.num_test": 4, "task.reward": "auto"}))
    trainer = Trainer(cfg, tmp_path / "run")
    assert len(trainer.fit()) == 2
    trainer.close()
