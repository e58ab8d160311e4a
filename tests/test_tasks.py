import ast
import operator
import re

import pytest
import torch

from neuromas.config import TaskConfig
from neuromas.errors import ConfigError, NeuromasError
from neuromas.tasks import REWARDS, build_task
from neuromas.tasks.arithmetic import ArithmeticSource
from neuromas.tasks.jsonl import read_jsonl
from neuromas.tasks.rewards import exact_match, extract_answer, normalize, resolve_reward
from neuromas.tasks.sample import Sample

OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def evaluate(expr: str) -> int:
    """Evaluate a generated expression by walking its AST (test oracle, independent of the generator)."""
    def walk(node):
        if isinstance(node, ast.BinOp):
            return OPS[type(node.op)](walk(node.left), walk(node.right))
        assert isinstance(node, ast.Constant)
        return node.value
    return walk(ast.parse(expr, mode="eval").body)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_arithmetic_answers_and_depth(depth):
    source = ArithmeticSource(depth=depth, max_value=9, seed=3, num_test=10)
    for sample in source.test_samples() + [source.train_sample(i) for i in range(20)]:
        expr = re.fullmatch(r"Compute (.*)\.", sample.question)[1]
        assert evaluate(expr) == int(sample.answer)
        assert sum(expr.count(op) for op in " + | - | * ".split("|")) == depth


def test_arithmetic_is_seeded_and_splits_are_disjoint():
    a = ArithmeticSource(depth=1, max_value=5, seed=0, num_test=30)
    b = ArithmeticSource(depth=1, max_value=5, seed=0, num_test=30)
    assert [s.question for s in a.test_samples()] == [s.question for s in b.test_samples()]
    assert a.train_sample(17) == b.train_sample(17)
    test = {s.question for s in a.test_samples()}
    assert len(test) == 30
    assert not test & {a.train_sample(i).question for i in range(300)}
    c = ArithmeticSource(depth=1, max_value=5, seed=1, num_test=30)
    assert [s.question for s in c.test_samples()] != [s.question for s in a.test_samples()]


def test_train_batches_follow_the_step():
    task = build_task(TaskConfig(depth=2))
    assert task.train_batch(3, 4) == task.train_batch(3, 4)
    assert task.train_batch(3, 4)[0] != task.train_batch(4, 4)[0]


@pytest.mark.parametrize("text, expected", [
    ("so \\boxed{42}.", "42"),
    ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("the answer is 1,234.", "1,234"),
    ("-7 and then 3.5", "3.5"),
    ("no digits here", None),
    ("\\boxed{12", "12"),  # unclosed box: fall back to the last number
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("raw, canonical", [("1,234", "1234"), ("4.0", "4"), (" $5$ ", "5"), ("7.", "7"),
                                            ("x+1", "x+1"), ("0.5", "0.5")])
def test_normalize(raw, canonical):
    assert normalize(raw) == canonical


def test_exact_match():
    sample = Sample("s", "Compute 2 * 3.", "6")
    assert exact_match("I think \\boxed{6}", sample) == 1.0
    assert exact_match("2 * 3 = 6", sample) == 1.0
    assert exact_match("\\boxed{6.0}", sample) == 1.0
    assert exact_match("\\boxed{7}, not 6", sample) == 0.0
    assert exact_match("", sample) == 0.0


def test_jsonl_loader_and_errors(tmp_path):
    good = tmp_path / "d.jsonl"
    good.write_text('{"question": "1+1?", "answer": 2}\n\n{"question": "2+2?", "answer": "4", "id": "b"}\n')
    samples = read_jsonl(good)
    assert [s.answer for s in samples] == ["2", "4"] and samples[1].id == "b"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "1"}\n{"question": "b", "answer"\n')
    with pytest.raises(NeuromasError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(bad)
    bad.write_text('{"question": "a"}\n')
    with pytest.raises(NeuromasError, match=r"bad.jsonl:1: .*answer"):
        read_jsonl(bad)
    with pytest.raises(NeuromasError, match="not found"):
        read_jsonl(tmp_path / "none.jsonl")


def test_jsonl_task_cycles_through_the_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(f'{{"question": "q{i}", "answer": "{i}"}}\n' for i in range(5)))
    task = build_task(TaskConfig(name="jsonl", path=str(path)))
    epoch = [task.source.train_sample(i).question for i in range(5)]
    assert sorted(epoch) == [f"q{i}" for i in range(5)]
    assert task.test == []


def test_reward_by_name_and_dotted_path():
    assert resolve_reward("exact_match", REWARDS) is exact_match
    assert resolve_reward("neuromas.tasks.rewards:exact_match", REWARDS) is exact_match
    assert resolve_reward("neuromas.tasks.rewards.exact_match", REWARDS) is exact_match
    for bad in ["no_such_reward", "nowhere.module:fn", "neuromas.tasks.rewards:missing"]:
        with pytest.raises(ConfigError, match="task.reward"):
            resolve_reward(bad, REWARDS)
    every = "exact_match, boxed_match, math_match, choice_match, lookup_match, countdown_match, yes_no_match, " \
        "yes_no_boxed, code_tests"
    with pytest.raises(ConfigError, match=every):  # the error lists every built-in
        resolve_reward("no_such_reward", REWARDS)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), None, "1.0", "high"])
def test_a_reward_that_is_not_a_finite_number_scores_zero_and_is_counted(bad):
    task = build_task(TaskConfig())
    task.reward = lambda completion, sample: 1.0 if completion == "good" else bad  # some episodes bad, some not
    with pytest.warns(UserWarning, match="not a finite number|must be a string or a real number"):
        rewards = task.score(["good", "bad", "bad"], task.train_batch(0, 3))
    assert rewards.tolist() == [1.0, 0.0, 0.0] and task.num_reward_errors == 2 and torch.isfinite(rewards).all()


def test_a_reward_that_fails_on_every_answer_of_the_first_batch_stops_with_one_line():
    task = build_task(TaskConfig(reward="helpers:raising_reward"))
    with pytest.raises(NeuromasError, match="task.reward: raising_reward failed on every answer of the first batch, "
                                            "e.g. sample 'train-0': RuntimeError: broken reward"):
        task.score(["a", "b"], task.train_batch(0, 2))
    task = build_task(TaskConfig())
    task.reward = lambda completion, sample: sample["answer"] + 1  # str + int: a user's bug
    with pytest.raises(NeuromasError, match="TypeError"):
        task.score(["a"], task.train_batch(0, 1))


def test_a_raising_reward_after_the_first_batch_scores_zero_and_is_counted():
    task = build_task(TaskConfig())

    def reward(completion, sample):
        if completion == "bad":
            raise RuntimeError("broken reward")
        return 1.0
    task.reward = reward
    with pytest.warns(UserWarning, match="broken reward"):
        assert task.score(["good", "bad"], task.train_batch(0, 2)).tolist() == [1.0, 0.0]
    with pytest.warns(UserWarning, match="reward function reward failed on 3 of 3 answers in one batch"):
        rewards = task.score(["bad", "bad", "bad"], task.train_batch(1, 3))
    assert rewards.tolist() == [0.0, 0.0, 0.0] and task.num_reward_errors == 4
