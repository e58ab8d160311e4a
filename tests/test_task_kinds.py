"""The task library: each kind's reward on hand-written replies (right, wrong, malformed), its
loader's errors, the generated kinds' correctness, and each recipe in recipes/tasks/ training
from the command line on the tiny model."""

from __future__ import annotations

import json
import re
from itertools import permutations, product
from pathlib import Path

import pytest
from conftest import tiny_overrides

from neuromas.cli import main
from neuromas.config import ConfigError, SandboxSettings, TaskConfig
from neuromas.errors import NeuromasError
from neuromas.tasks import build_task
from neuromas.tasks.choice import extract_letter
from neuromas.tasks.code import CodeReward, extract_code
from neuromas.tasks.jsonl import choice_row, code_row, read_jsonl
from neuromas.tasks.math_answers import normalize_math, reference_answer
from neuromas.tasks.sample import Sample
from neuromas.tasks.sandbox import Limits
from neuromas.tasks.synthetic import NAMES, UnsafeExpression, evaluate_expression

ROOT = Path(__file__).parents[1]
DATA = ROOT / "recipes" / "tasks" / "data"


def task(name: str, **kw) -> object:
    return build_task(TaskConfig(name=name, **kw))


def scores(t, replies: list[str], sample: Sample) -> list[float]:
    return t.score(replies, [sample] * len(replies)).tolist()


# ---- math --------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b", [("1,000", "1000"), ("$1000", "1000"), ("1000 dollars", "1000"), ("1000.0", "1000"),
                                  ("\\frac{1}{2}", "0.5"), ("\\dfrac{1}{2}", "1/2"), ("\\frac12", "0.5"),
                                  ("50\\%", "50"), ("x = 5", "5"), ("5 \\text{cm}", "5"), ("90^\\circ", "90")])
def test_math_answers_normalise_to_the_same_form(a, b):
    assert normalize_math(a) == normalize_math(b)


def test_math_reward_on_right_wrong_and_malformed_replies():
    t = task("math", path=str(DATA / "math-train.jsonl"))
    sample = t.source.train[0]
    assert sample.answer == "27"  # GSM8K reference: what follows ####
    replies = ["36 - 9 leaves \\boxed{27}.", "So the answer is 27 pencils.", "The total is 27.",
               "\\boxed{26}", "The answer is 36, then 9 given away: 25", "", "\\boxed{27", "no numbers here"]
    assert scores(t, replies, sample) == [1, 1, 1, 0, 0, 0, 1, 0]  # an unclosed box falls back to the last number
    assert reference_answer("so \\boxed{\\frac{3}{4}} it is") == "\\frac{3}{4}"


def test_format_weight_adds_for_the_required_form():
    t = task("math", path=str(DATA / "math-train.jsonl"), format_weight=0.25)
    sample = t.source.train[0]
    assert scores(t, ["\\boxed{27}", "27", "\\boxed{5}", "5"], sample) == [1.25, 1.0, 0.25, 0.0]


# ---- multiple choice -----------------------------------------------------------------------

@pytest.mark.parametrize("reply, letter", [
    ("The answer is (B).", "B"), ("Answer: C", "C"), ("**D**", "D"), ("B) because it is", "B"),
    ("I pick \\boxed{A}", "A"), ("The answer is a tricky one. Final: (C)", "C"), ("Option D is right", "D"),
    ("\\boxed{\\text{B}}", "B"), ("it is about 9.8 m/s^2 downward", "B"), ("no idea", None), ("", None)])
def test_letter_extraction_tolerates_the_usual_phrasings(reply, letter):
    choices = ["zero", "about 9.8 m/s^2 downward", "it increases as it falls", "about 9.8 m/s upward"]
    assert extract_letter(reply, choices) == letter


def test_choice_loader_renders_choices_and_reads_letters_or_indices(tmp_path):
    t = task("choice", path=str(DATA / "choice-train.jsonl"), test_path=str(DATA / "choice-test.jsonl"))
    sample = t.source.train[0]
    assert "\nA) zero\nB) about 9.8 m/s^2 downward" in sample.question and sample.answer == "B"
    assert t.test[0].answer == "C"  # given as index 2
    assert scores(t, ["\\boxed{B}", "\\boxed{C}", "B", "garbage"], sample) == [1, 0, 1, 0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "choices": ["a", "b"], "answer": "A"}\n'
                   '{"question": "q", "choices": ["a", "b"], "answer": "E"}\n')
    with pytest.raises(NeuromasError, match=r"bad.jsonl:2: answer 'E' is out of range for 2 choices"):
        read_jsonl(bad, choice_row)


# ---- code ------------------------------------------------------------------------------------

FAST = Limits(wall_s=3.0, cpu_s=1, memory_mb=512, output_kb=256)


def code_sample() -> Sample:
    return code_row({"text": "Write add(a, b).", "test_list": ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]},
                    "s")


def test_code_reward_all_or_fraction_on_hand_written_replies():
    sample = code_sample()
    right = "Here:\n```python\ndef add(a, b):\n    return a + b\n```"
    half = "```python\ndef add(a, b):\n    return 5\n```"
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    malformed = "```python\ndef add(a, b) return a + b\n```"
    prose = "I would add the numbers."
    all_reward, fraction = CodeReward("all", FAST), CodeReward("fraction", FAST)
    assert [all_reward(r, sample) for r in (right, half, wrong, malformed, prose)] == [1, 0, 0, 0, 0]
    assert [fraction(r, sample) for r in (right, half, wrong, malformed, prose)] == [1, 0.5, 0, 0, 0]
    assert extract_code("```py\nx = 1\n```\ntext\n```python\ny = 2\n") == "y = 2\n"  # last block, even unclosed


def test_humaneval_reply_that_only_gives_the_body_runs_after_the_prompt():
    sample = read_jsonl(DATA / "code-humaneval.jsonl", code_row)[0]
    reward = CodeReward("all", FAST)
    assert reward("    return x + 1\n", sample) == 1.0
    assert reward("```python\ndef add_one(x):\n    return x + 2\n```", sample) == 0.0


ATTACKS = {
    "read outside": "print(open('/etc/passwd').read())\ndef add(a, b): return a + b",
    "write outside": "open('/tmp/neuromas-sandbox-escape', 'w').write('x')\ndef add(a, b): return a + b",
    "list outside": "import os\nos.listdir('/')\ndef add(a, b): return a + b",
    "socket": "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\ndef add(a, b): return a + b",
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "subprocess": ("import subprocess\nsubprocess.run(['touch', '/tmp/neuromas-sandbox-escape'])\n"
                   "def add(a, b): return a + b"),
    "ctypes": "import ctypes\nctypes.CDLL(None).system(b'touch /tmp/neuromas-sandbox-escape')",
    "memory": "x = []\nwhile True:\n    x.append(bytearray(10 ** 7))",
    "loop forever": "while True:\n    pass",
    "sleep forever": "import time\ntime.sleep(60)",
    "print gigabytes": "import sys\nwhile True:\n    sys.stdout.write('x' * 10 ** 6)",
    "exit early": "import os\nos._exit(0)",
    "fake verdict": "print('0' * 32 + ' 2 2')\ndef add(a, b): return -99",
    "steal the nonce": ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    f = e.__traceback__.tb_frame.f_back\n"
                        "    print(f.f_locals['nonce'], 2, 2)\nimport os\nos._exit(0)"),
}


@pytest.mark.parametrize("name", ATTACKS)
def test_sandbox_contains_each_attack_and_scores_it_zero(name):
    escape = Path("/tmp/neuromas-sandbox-escape")
    escape.unlink(missing_ok=True)
    sample = code_sample()
    reply = f"```python\n{ATTACKS[name]}\n```"
    assert CodeReward("fraction", FAST)(reply, sample) == 0.0
    assert not escape.exists()


def test_a_batch_of_attacks_is_scored_without_stopping_the_task():
    t = task("code", path=str(DATA / "code-train.jsonl"), sandbox=SandboxSettings(wall_s=3, cpu_s=1))
    sample = code_sample()
    replies = [f"```python\n{code}\n```" for code in ATTACKS.values()] + ["```python\ndef add(a, b): return a + b\n```"]
    assert scores(t, replies, sample) == [0.0] * len(ATTACKS) + [1.0]
    assert t.num_reward_errors == 0  # contained: no exception ever reached the trainer


# ---- generated kinds -------------------------------------------------------------------------

def test_lookup_answers_follow_the_table_depth_times():
    t = task("lookup", depth=3, num_test=8)
    for sample in t.test + t.train_batch(0, 8):
        table = dict(re.findall(r"^(\w+) -> (\w+)$", sample.question, re.MULTILINE))
        current = re.search(r"Start at (\w+)", sample.question)[1]
        for _ in range(3):
            current = table[current]
        assert current == sample.answer and current in NAMES
    sample = t.test[0]
    wrong = next(n for n in NAMES if n != sample.answer)
    assert scores(t, [f"\\boxed{{{sample.answer}}}", f"so we reach {sample.answer}.", f"\\boxed{{{wrong}}}",
                      ""], sample) == [1, 1, 0, 0]


def test_countdown_targets_are_reachable_and_replies_are_checked_without_eval():
    t = task("countdown", depth=2, num_test=8)
    sample = t.test[0]
    numbers, target = sample.meta["numbers"], sample.meta["target"]
    assert len(numbers) == 3 and target > 0
    found = [e for x, y, z in permutations(numbers) for o1, o2 in product("+-*", repeat=2)
             for e in (f"({x} {o1} {y}) {o2} {z}", f"{x} {o1} ({y} {o2} {z})") if evaluate_expression(e)[0] == target]
    assert found  # the target is reachable
    assert scores(t, [f"\\boxed{{{found[0]}}}", f"We get {found[0]}: \\boxed{{{found[0]} = {target}}}"],
                  sample) == [1.0, 1.0]
    a, b = numbers[:2]
    assert scores(t, [f"\\boxed{{{target}}}", f"\\boxed{{{a} + {b}}}", "\\boxed{__import__('os').system('x')}",
                      "\\boxed{(1).__class__}", "\\boxed{9 ** 99999}", "no box"], sample) == [0] * 6
    with pytest.raises(UnsafeExpression):
        evaluate_expression("open('x')")
    assert evaluate_expression("(3 + 5) * 2 / 4")[0] == 4 and evaluate_expression("3 × 2 = 6")[1] == [3, 2]


def test_generated_splits_are_disjoint_from_the_train_stream():
    for name in ("lookup", "countdown"):
        t = task(name, depth=2, num_test=16)
        held_out = {s.question for s in t.test + t.validation}
        assert len(held_out) == 32
        assert not held_out & {s.question for s in t.train_batch(0, 64)}


# ---- custom data and rewards ---------------------------------------------------------------

def test_custom_reward_from_a_file_path_and_clear_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    t = task("jsonl", path=str(DATA / "custom-train.jsonl"), reward="recipes/tasks/word_reward.py:says_the_word")
    sample = t.source.train[0]
    assert scores(t, [sample.answer, f"{sample.answer} it is", "pass"], sample) == [1.0, 0.5, 0.0]
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        task("jsonl", path=str(DATA / "custom-train.jsonl"), reward="recipes/tasks/word_reward.py:nope")
    with pytest.raises(ConfigError, match="task.path: required when task.name is code"):
        TaskConfig(name="code")


def test_hugging_face_dataset_without_the_hub_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(NeuromasError, match="task.dataset: ") as error:
        task("math", dataset="neuromas-test/surely-not-cached-anywhere")
    assert "\n" not in str(error.value)


# ---- every recipe of recipes/tasks trains from the command line ----------------------------

@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes" / "tasks").glob("*.yaml")), ids=lambda p: p.stem)
@pytest.mark.slow  # about 10 s or more on 2 cores
def test_task_recipe_trains_from_the_cli(recipe, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name their data relative to the repository
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tiny_model_dir, run_dir, **{"train.steps": 1, "rollout.max_new_tokens": 8,
                                                           "task.sandbox.wall_s": 3, "task.sandbox.cpu_s": 1})
    assert main(["train", str(recipe), *overrides]) == 0
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("reward/mean" in m for m in steps)
