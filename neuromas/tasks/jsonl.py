"""Task data from rows: JSONL files (a malformed line is an error naming file and line) or a
Hugging Face dataset; each task kind turns a row into a Sample with its own converter."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Callable

from neuromas.errors import NeuromasError
from neuromas.tasks.choice import answer_letter, render_choices
from neuromas.tasks.math_answers import reference_answer
from neuromas.tasks.sample import Sample

Convert = Callable[[dict, str], Sample]  # (row, default id) -> Sample; KeyError/ValueError on a bad row


def _field(row: dict, *names: str):
    for name in names:
        if name in row:
            return row[name]
    raise KeyError(f"needs a {' or '.join(repr(n) for n in names)} field")


def qa_row(row: dict, default_id: str) -> Sample:
    """``{"question", "answer"}`` (custom tasks: the reward decides what the answer means)."""
    return Sample(id=str(row.get("id", default_id)), question=str(_field(row, "question")),
                  answer=str(_field(row, "answer")))


def math_row(row: dict, default_id: str) -> Sample:
    """GSM8K (``answer`` ends ``#### 72``) or MATH (``problem``, ``solution`` with ``\\boxed{}``)."""
    return Sample(id=str(row.get("id", default_id)), question=str(_field(row, "question", "problem")),
                  answer=reference_answer(str(_field(row, "answer", "solution"))))


def choice_row(row: dict, default_id: str) -> Sample:
    """MMLU style: ``question``, ``choices`` (a list, or a mapping letter -> text), ``answer``
    (a letter or a 0-based index); or ARC style: ``choices`` as ``{"text": [...], "label": [...]}``
    and ``answerKey``, one of the labels (ARC labels some questions 1-4 instead of A-D)."""
    choices = _field(row, "choices", "options")
    answer = _field(row, "answer", "label", "answerKey")
    if isinstance(choices, dict) and "text" in choices:
        labels = [str(label) for label in choices.get("label", [])]
        answer = labels.index(str(answer)) if str(answer) in labels else answer
        choices = list(choices["text"])
    elif isinstance(choices, dict):
        choices = [choices[k] for k in sorted(choices)]
    if not isinstance(choices, list) or len(choices) < 2:
        raise ValueError("\"choices\" must list at least 2 options")
    choices = [str(c) for c in choices]
    letter = answer_letter(answer, len(choices))
    return Sample(id=str(row.get("id", default_id)), question=render_choices(str(_field(row, "question")), choices),
                  answer=letter, meta={"choices": choices})


def code_row(row: dict, default_id: str) -> Sample:
    """HumanEval (``prompt``, ``test`` defining ``check``, ``entry_point``) or MBPP (``text`` or
    ``prompt``, ``test_list`` of asserts, optional ``test_setup_code``)."""
    sample_id = str(row.get("task_id", row.get("id", default_id)))
    if "test_list" in row:
        tests = [str(t) for t in row["test_list"]]
        if not tests:
            raise ValueError("\"test_list\" is empty")
        entry = re.search(r"assert\s+(?:not\s+)?\(?\s*(\w+)\s*\(", tests[0])
        task = str(_field(row, "text", "prompt"))
        question = f"{task}\nYour function must pass this test:\n{tests[0]}"
        meta = {"tests": tests, "entry_point": entry[1] if entry else None, "setup": row.get("test_setup_code", "")}
        return Sample(id=sample_id, question=question, answer="", meta=meta)
    prompt, test, entry = str(_field(row, "prompt")), str(_field(row, "test")), str(_field(row, "entry_point"))
    question = f"Complete this Python function:\n```python\n{prompt}```"
    return Sample(id=sample_id, question=question, answer="",
                  meta={"tests": [f"{test}\ncheck({entry})"], "entry_point": entry, "prompt": prompt})


def _reason(e: Exception) -> str:
    """A converter's error as text (a KeyError's message comes quoted)."""
    return str(e).strip("\"'")


def read_jsonl(path: str | Path, convert: Convert = qa_row) -> list[Sample]:
    """Read samples; a malformed line is an error naming the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise NeuromasError(f"dataset not found: {path}")
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise NeuromasError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise NeuromasError(f"{path}:{number}: each line must be a JSON object")
        try:
            samples.append(convert(row, f"{path.stem}-{number}"))
        except (KeyError, ValueError, TypeError) as e:
            raise NeuromasError(f"{path}:{number}: {_reason(e)}") from None
    if not samples:
        raise NeuromasError(f"{path}: no samples")
    return samples


def read_hf_dataset(name: str, config: str | None, split: str, convert: Convert) -> list[Sample]:
    """Rows of a Hugging Face dataset split (needs `datasets` and a reachable hub or its cache)."""
    try:
        import datasets
    except ImportError:
        raise NeuromasError("task.dataset: needs the datasets package (pip install datasets), "
                            "or give the data as JSONL with task.path") from None
    try:
        rows = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # noqa: BLE001 - network, auth, unknown names: all one line for the user
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise NeuromasError(f"task.dataset: cannot load {name!r} split {split!r} ({first}); is the hub "
                            "reachable? Without it, export the data to JSONL and use task.path") from None
    samples = []
    for index, row in enumerate(rows):
        try:
            samples.append(convert(dict(row), f"{name}-{split}-{index}"))
        except (KeyError, ValueError, TypeError) as e:
            raise NeuromasError(f"task.dataset {name} {split} row {index}: {_reason(e)}") from None
    return samples


class RowSource:
    """Fixed train/test/validation rows; the train stream walks them in a fresh seeded order each epoch."""

    stream_seed: int | None = None  # task.stream_seed; None: `seed`

    def __init__(self, train: list[Sample], test: list[Sample], validation: list[Sample], seed: int):
        if not train:
            raise NeuromasError("task: the training data has no samples")
        self.train, self.test, self.validation, self.seed = train, test, validation, seed

    def train_sample(self, index: int) -> Sample:
        epoch, position = divmod(index, len(self.train))
        order = list(range(len(self.train)))
        seed = self.seed if self.stream_seed is None else self.stream_seed
        random.Random(f"jsonl-{seed}-{epoch}").shuffle(order)
        return self.train[order[position]]

    def test_samples(self) -> list[Sample]:
        return self.test

    def validation_samples(self) -> list[Sample]:
        return self.validation
