"""`neuromas show RUN --transcripts`: the full transcripts a run kept, printed to be read.

Evaluations keep theirs in eval_transcripts.jsonl (`eval.transcripts` questions each, with every
message ablation the run measured), training steps in transcripts.jsonl
(`tracking.transcripts_every`). Reads plain JSON lines: no torch, no model.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from neuromas.errors import NeuromasError
from neuromas.tracking import read_jsonl


def read_transcripts(run_dir: Path, step: int | None = None, question: str | None = None,
                     training: bool = False) -> list[dict]:
    """The kept transcripts of `step` (default: the last step that has any), of one question id
    if given; evaluation transcripts unless `training`."""
    path = run_dir / ("transcripts.jsonl" if training else "eval_transcripts.jsonl")
    if not path.is_file():
        knob = "tracking.transcripts_every" if training else "eval.transcripts"
        raise NeuromasError(f"{run_dir} keeps no {'training' if training else 'evaluation'} transcripts "
                            f"({path.name} is missing; see {knob})")
    rows = read_jsonl(path)
    steps = sorted({r["step"] for r in rows})
    if not steps:
        raise NeuromasError(f"{path} is empty")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise NeuromasError(f"--step: {step} has no transcripts; steps with some: {', '.join(map(str, steps))}")
    rows = [r for r in rows if r["step"] == step and (question is None or r.get("id") == question)]
    if not rows:
        raise NeuromasError(f"--question: {question} has no transcript at step {step}")
    return rows


def format_transcript(row: dict, width: int = 100) -> str:
    """One episode: its question and reference, every node's message in graph order, the answer and its score."""
    read = row.get("messages_read", "real")
    head = f"step {row['step']} | {row.get('id', '?')} | messages read: {read} | reward {row['reward']:g}"
    lines = [head, f"question: {row['question']}", f"reference: {row['reference']}"]
    for node, text in row["messages"].items():
        body = textwrap.indent("\n".join(textwrap.fill(p, width) for p in text.splitlines()) or "(no text)", "    ")
        lines += [f"  {node}:", body]
    return "\n".join(lines)
