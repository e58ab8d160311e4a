"""`neuromas show SOURCE`: the topology of a recipe, run or checkpoint (text and a picture), or with
`--transcripts` the full transcripts a run kept, printed to be read.

Evaluations keep theirs in eval_transcripts.jsonl (`eval.transcripts` questions each, with every
message ablation the run measured), training steps in transcripts.jsonl
(`tracking.transcripts_every`). Reads plain JSON lines: no torch, no model."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from neuromas.errors import NeuromasError
from neuromas.topology import Topology
from neuromas.tracking import read_jsonl


def add_parser(commands) -> None:
    """The `show` verb's arguments, on the subparsers `commands`."""
    show = commands.add_parser("show", help="draw a topology, or print a run's transcripts",
                               description="Print a topology and draw it (PNG/SVG); with --transcripts, print the full "
                                           "transcripts a run kept instead.")
    show.add_argument("source", metavar="RECIPE_OR_RUN_OR_CHECKPOINT")
    show.add_argument("--transcripts", action="store_true",
                      help="print the run's kept evaluation transcripts (every node's message, the answer, the score)")
    show.add_argument("--training", action="store_true", help="with --transcripts: the training steps' transcripts")
    show.add_argument("--step", type=int, help="with --transcripts: this step's (default: the last kept)")
    show.add_argument("--question", metavar="ID", help="with --transcripts: only this question id (e.g. test-3)")
    show.add_argument("--out", help="picture file, .png or .svg (default: topology.png in the working directory "
                                   "for a recipe, in the run directory for a run or checkpoint)")


def run(args: argparse.Namespace) -> None:
    source = Path(args.source)
    if not source.exists():
        raise NeuromasError(f"{source} does not exist")
    if args.transcripts:
        print("\n\n".join(map(format_transcript, read_transcripts(source, args.step, args.question, args.training))))
        return
    from neuromas.pictures import draw_topology

    topology, texts = topology_of(source)
    # Never into the source tree: a recipe's picture goes to the working directory, a run's into the run.
    out = Path(args.out) if args.out else Path("topology.png") if source.is_file() else source / "topology.png"
    if out.suffix not in (".png", ".svg"):
        raise NeuromasError(f"--out: {out} must end in .png or .svg")
    print(topology.describe())
    for node_id, text in texts.items():
        print(f"{node_id} text: {text}")
    draw_topology(topology, out)
    print(f"neuromas: picture in {out}", file=sys.stderr)


def topology_of(source: Path) -> tuple[Topology, dict[str, str]]:
    """The topology and node texts of a recipe (the system it ends with: its last growth stage's;
    the texts it seeds), a run directory or a checkpoint."""
    from neuromas import checkpoint as ckpt
    from neuromas.recipe import load_config
    from neuromas.system import recipe_texts

    if source.is_file():
        cfg = load_config(source)
        topology = Topology.from_config(cfg.stages()[-1].topology)
        return topology, recipe_texts(cfg.agents.texts, topology.node_ids)
    system, _ = ckpt.find_system(source)
    topology = Topology.from_dict(ckpt.read_state(system)["topology"])
    return topology, ckpt.texts_from(system, topology.node_ids)


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
