"""How a system is scored on questions: the one definition of "correct" (a reward of at least 1),
greedy accuracy over the ranks of a launch, majority vote, pass@k, and how many answers change
between two evaluations. The trainer's evaluations and `neuromas eval` both use these."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from neuromas.aggregation import combine
from neuromas.errors import NeuromasError
from neuromas.metrics import transcripts
from neuromas.rollout import Ablation, RolloutEngine
from neuromas.stats import Accuracy
from neuromas.system import System


@dataclass
class Graded:
    """What an evaluation of some questions gave: which rollouts were right, the answer each one
    holds (the task's vote key: what changes when the messages do), and a few full transcripts."""

    correct: torch.Tensor  # [Q, k] bool: a reward of at least 1
    answers: list  # [Q * k] the answer each rollout holds (None: none)
    transcripts: list[dict]

    @classmethod
    def join(cls, parts: list["Graded"]) -> "Graded":
        return cls(torch.cat([p.correct for p in parts]), [a for p in parts for a in p.answers],
                   [t for p in parts for t in p.transcripts])


@torch.no_grad()
def graded(engine: RolloutEngine, system: System, task, questions, k: int = 1, greedy: bool = True,
           ablation: Ablation | None = None, keep: int = 0) -> Graded:
    """k rollouts per question, scored: the one definition of "correct" (a reward of at least 1)
    for the trainer's evaluations and `neuromas eval`, with the full transcripts of the first
    `keep` episodes."""
    episodes = engine.run(system, questions, samples_per_question=k, greedy=greedy, ablation=ablation)
    answers = episodes.answers()
    rewards = task.rewards(episodes)
    keys = [None if (held := task.vote(a)) is None else held[0] for a in answers]
    return Graded((rewards >= 1.0).view(-1, k), keys, transcripts(episodes, rewards, keep))


def evaluate_over_ranks(engine: RolloutEngine, system: System, task, questions, world, keep: int = 0,
                        ablation: Ablation | None = None) -> tuple[Accuracy, list, list[dict]]:
    """Greedy accuracy on `questions`, shared out over the ranks of `world` (every rank gets the
    result), every question's answer (in question order), and the transcripts of this rank's
    first `keep` questions."""
    mine = questions[world.rank::world.size]
    result = graded(engine, system, task, mine, ablation=ablation, keep=keep) if mine else \
        Graded(torch.zeros(0, 1, dtype=torch.bool), [], [])
    per_rank = world.gather((result.correct.view(-1).tolist(), result.answers))
    in_order = [(per_rank[i % world.size][0][i // world.size], per_rank[i % world.size][1][i // world.size])
                for i in range(len(questions))]
    return Accuracy.of(c for c, _ in in_order), [a for _, a in in_order], result.transcripts


def accuracy_over_ranks(engine: RolloutEngine, system: System, task, questions, world) -> Accuracy:
    return evaluate_over_ranks(engine, system, task, questions, world)[0]


def answers_changed(real: list, ablated: list) -> float:
    """The share of questions whose answer differs between two evaluations: how much the answers
    depend on what the nodes read, whether or not they are right (0: the messages are ignored)."""
    return sum(a != b for a, b in zip(real, ablated, strict=True)) / len(real) if real else 0.0


def graded_in_chunks(engine: RolloutEngine, system: System, task, questions, k: int, greedy: bool, desc: str,
                      ablation: Ablation | None = None, keep: int = 0) -> Graded:
    """`graded` in chunks of the rollout micro-batch (at least 2 questions, so that a shuffled
    message comes from another question), with a progress bar on a terminal."""
    chunk, parts = max(2, engine.cfg.micro_batch_size // k), []
    for start in tqdm(range(0, len(questions), chunk), desc=desc, unit="chunk", dynamic_ncols=True, disable=None):
        kept = sum(len(p.transcripts) for p in parts)
        parts.append(graded(engine, system, task, questions[start:start + chunk], k, greedy, ablation, keep - kept))
    return Graded.join(parts)


def greedy(engine: RolloutEngine, system: System, task, questions, ablation: Ablation | None = None,
            name: str = "real", keep: int = 0) -> Graded:
    return graded_in_chunks(engine, system, task, questions, 1, True, f"eval greedy ({name} messages)", ablation,
                             keep)


@torch.no_grad()
def majority_vote(engine: RolloutEngine, system: System, task, questions, k: int, seed: int) -> Accuracy:
    """vote@k: per question, k sampled rollouts and their majority answer (self-consistency; the
    answer the task's vote function reads, as a voting layer does)."""
    if engine.environment is not None:
        raise NeuromasError("--vote: a multi-turn episode's return is not one answer to vote on (use --samples)")
    torch.manual_seed(seed)
    correct, chunk = [], max(1, engine.cfg.micro_batch_size // k)
    for start in tqdm(range(0, len(questions), chunk), desc=f"eval vote@{k}", unit="chunk", dynamic_ncols=True,
                      disable=None):
        batch = questions[start:start + chunk]
        answers = engine.run(system, batch, samples_per_question=k).answers()
        voted = [combine("vote", [(str(i), a) for i, a in enumerate(answers[q * k:(q + 1) * k])], task.vote).text
                 for q in range(len(batch))]
        correct += (task.score(voted, batch) >= 1.0).tolist()
    return Accuracy.of(correct)


def pass_at_k(engine: RolloutEngine, system: System, task, questions, k: int, seed: int) -> Accuracy:
    torch.manual_seed(seed)
    graded_k = graded_in_chunks(engine, system, task, questions, k, False, f"eval pass@{k}")
    return Accuracy.of(graded_k.correct.any(dim=1).tolist())
