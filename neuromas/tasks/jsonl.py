"""`{"question": ..., "answer": ...}` JSONL files (GSM8K style)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from neuromas.errors import NeuromasError
from neuromas.tasks.rewards import Sample


def read_jsonl(path: str | Path) -> list[Sample]:
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
        if not isinstance(row, dict) or "question" not in row or "answer" not in row:
            raise NeuromasError(f"{path}:{number}: each line needs \"question\" and \"answer\" fields")
        samples.append(Sample(id=str(row.get("id", f"{path.stem}-{number}")), question=str(row["question"]),
                              answer=str(row["answer"])))
    if not samples:
        raise NeuromasError(f"{path}: no samples")
    return samples


class JsonlSource:
    def __init__(self, path: str, test_path: str | None, seed: int, validation_path: str | None = None):
        self.train = read_jsonl(path)
        self.test = read_jsonl(test_path) if test_path else []
        self.validation = read_jsonl(validation_path) if validation_path else []
        self.seed = seed

    def train_sample(self, index: int) -> Sample:
        """Walks the file in a fresh seeded order each epoch."""
        epoch, position = divmod(index, len(self.train))
        order = list(range(len(self.train)))
        random.Random(f"jsonl-{self.seed}-{epoch}").shuffle(order)
        return self.train[order[position]]

    def test_samples(self) -> list[Sample]:
        return self.test

    def validation_samples(self) -> list[Sample]:
        return self.validation
