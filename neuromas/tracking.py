"""What a run writes besides checkpoints, all on rank 0 (`Tracker`; `NullTracker` on every other
rank): metrics (``metrics.jsonl`` always, wandb when asked for), transcripts, evaluations, textual
steps, growth events, the topology picture, and their rewind when a run resumes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from neuromas.config import TrackingConfig
from neuromas.errors import ConfigError, NeuromasError
from neuromas.stats import Accuracy, PairedDifference, paired_difference


class Tracker:
    def __init__(self, cfg: TrackingConfig, run_dir: Path, run_name: str, config: dict):
        self.path = run_dir / "metrics.jsonl"
        self._file = self.path.open("a")
        self._wandb = None
        if cfg.backend == "wandb":
            try:
                import wandb
            except ImportError:
                raise ConfigError("tracking.backend: wandb is not installed (pip install 'neuromas[wandb]')") from None
            # WANDB_MODE=offline works without an account; WANDB_PROJECT overrides the recipe.
            self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", cfg.project), name=run_name,
                                     dir=str(run_dir), config=config)

    def log(self, metrics: dict[str, float | str], step: int) -> None:
        append_line(self._file, json.dumps({"step": step, **metrics}))
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def image(self, key: str, path: Path, step: int) -> None:
        if self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Image(str(path))}, step=step)

    def transcripts(self, rows: list[dict], step: int) -> None:
        """Full transcripts (task, every node's message, answer, reward, the node texts) to
        transcripts.jsonl and wandb."""
        with (self.path.parent / "transcripts.jsonl").open("a") as f:
            for row in rows:
                f.write(json.dumps({"step": step, **row}) + "\n")
        if self._wandb is not None and rows:
            import wandb

            columns = ["question", "answer", "reward", "messages", "node_texts"]
            table = wandb.Table(columns=columns, data=[[r["question"], r["answer"], r["reward"],
                                                        json.dumps(r["messages"], indent=1),
                                                        json.dumps(r.get("node_texts", {}), indent=1)] for r in rows])
            self._wandb.log({"transcripts": table}, step=step)

    def textual(self, record: dict, step: int) -> None:
        """One textual step (`TextualOptimizer.step`'s record) to textual.jsonl, and its proposals
        as a wandb table (node, old text, new text or why it failed the check, the decision)."""
        with (self.path.parent / "textual.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, **record}) + "\n")
        if self._wandb is not None:
            import wandb

            columns = ["node", "old_text", "new_text", "problem", "validation_before", "validation_after", "decision"]
            rows = [[p["node_id"], p["old_text"], p["new_text"] or "", p["problem"], record["validation_before"],
                     record["validation_after"], record["decision"]] for p in record["proposals"]]
            self._wandb.log({"textual/proposals": wandb.Table(columns=columns, data=rows)}, step=step)

    def topology(self, topology, step: int) -> None:
        """The system's graph as text (topology.txt) and as a picture (topology.png, and wandb)."""
        from neuromas.pictures import draw_topology

        (self.path.parent / "topology.txt").write_text(topology.describe() + "\n")
        self.image("topology", draw_topology(topology, self.path.parent / "topology.png"), step)

    def evaluation(self, step: int, question_ids: list[str], accuracy: Accuracy, ablated: dict[str, Accuracy],
                   transcripts: list[dict]) -> PairedDifference | None:
        """One evaluation: its per-question results to evals.jsonl (`record_eval`), its full
        transcripts to eval_transcripts.jsonl; returns its paired change since step 0, if any."""
        with (self.path.parent / "eval_transcripts.jsonl").open("a") as f:
            for row in transcripts:
                f.write(json.dumps({"step": step, "messages_read": "real", **row}) + "\n")
        return record_eval(self.path.parent / "evals.jsonl", step, question_ids, accuracy, ablated)

    def growth(self, step: int, stage: int, widths: list[int], init: str, plan) -> None:
        """One growth event (a `growth.GrowthPlan` carried out) to growth.jsonl."""
        with (self.path.parent / "growth.jsonl").open("a") as f:
            append_line(f, json.dumps({"step": step, "stage": stage, "widths": widths, "init": init,
                                       "old_to_new": plan.old_to_new, "new_nodes": plan.new_nodes,
                                       "parents": plan.parents}))

    def truncate_after(self, step: int) -> None:
        """Forget lines logged after `step` (a resumed run logs those steps again)."""
        self._file.close()
        truncate_jsonl(self.path, step)
        truncate_jsonl(self.path.parent / "transcripts.jsonl", step)
        self._file = self.path.open("a")

    def rewind(self, step: int, stage_closed: bool) -> None:
        """Forget what a run resumed at `step` will write again: metrics and transcripts after it,
        and the growth events, evaluations and textual steps (`rewind`)."""
        self.truncate_after(step)
        rewind(self.path.parent, step, stage_closed)

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()


class NullTracker:
    """What every rank but rank 0 logs to: nothing."""

    def log(self, metrics: dict, step: int) -> None: ...

    def image(self, key: str, path: Path, step: int) -> None: ...

    def transcripts(self, rows: list[dict], step: int) -> None: ...

    def textual(self, record: dict, step: int) -> None: ...

    def topology(self, topology, step: int) -> None: ...

    def evaluation(self, step: int, question_ids: list[str], accuracy: Accuracy, ablated: dict[str, Accuracy],
                   transcripts: list[dict]) -> None: ...

    def growth(self, step: int, stage: int, widths: list[int], init: str, plan) -> None: ...

    def truncate_after(self, step: int) -> None: ...

    def rewind(self, step: int, stage_closed: bool) -> None: ...

    def close(self) -> None: ...


def append_line(file, line: str) -> None:
    """Write one whole line and flush it; a write that fails (a full disk) is cut back to where the
    line started, so the file never ends in half a line."""
    start = file.tell()
    try:
        file.write(line + "\n")
        file.flush()
    except OSError:
        file.seek(start)
        file.truncate()
        raise


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL file the trainer appends to. A torn last line (a process killed, or
    a disk that filled, mid-write) is dropped with a note; a bad line before it is an error."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise NeuromasError(f"{path}: line {number} is not JSON (the file was changed by hand?)") from None
            print(f"neuromas: {path}: dropping a half-written last line", file=sys.stderr)
    return rows


def truncate_jsonl(path: Path, step: int, inclusive: bool = False) -> None:
    """Keep the lines of a step-keyed JSONL file up to `step` (before it, if `inclusive`)."""
    if not path.exists():
        return
    keep = [row for row in read_jsonl(path) if row["step"] < step or (row["step"] == step and not inclusive)]
    path.write_text("".join(json.dumps(row) + "\n" for row in keep))


def rewind(run_dir: Path, step: int, stage_closed: bool) -> None:
    """Forget the growth events and evaluations a resumed run will make again: those after `step`
    (and a growth at `step` itself when the checkpoint was saved as its stage closed)."""
    truncate_jsonl(run_dir / "growth.jsonl", step, inclusive=stage_closed)
    truncate_jsonl(run_dir / "evals.jsonl", step)
    truncate_jsonl(run_dir / "eval_transcripts.jsonl", step)
    truncate_jsonl(run_dir / "textual.jsonl", step)


def record_eval(path: Path, step: int, question_ids: list[str], accuracy: Accuracy,
                ablated: dict[str, Accuracy] | None = None) -> PairedDifference | None:
    """Append one evaluation's per-question results (and those with messages ablated, by mode) to
    `path` (step 0 starts the file anew), and return its paired change since step 0 when step 0
    was evaluated on the same questions."""
    first = json.loads(path.read_text().splitlines()[0]) if path.is_file() and step > 0 else None
    record = {"step": step, "ids": question_ids, "correct": [int(c) for c in accuracy.correct]}
    if ablated:
        record["ablated"] = {mode: [int(c) for c in a.correct] for mode, a in ablated.items()}
    with path.open("a" if step > 0 else "w") as f:
        f.write(json.dumps(record) + "\n")
    if first is None or first["step"] != 0 or first["ids"] != question_ids:
        return None
    return paired_difference(Accuracy.of(first["correct"]), accuracy)
