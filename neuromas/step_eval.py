"""The trainer's evaluation at a step: greedy test accuracy with its standard error, the paired
change since step 0, message ablations (`eval.ablations`) and a few full transcripts."""

from __future__ import annotations

from typing import Callable

from neuromas.config import EvalConfig
from neuromas.accuracy import answers_changed, evaluate_over_ranks
from neuromas.rollout import Ablation, RolloutEngine
from neuromas.stats import paired_difference
from neuromas.system import System
from neuromas.tasks import Task


class StepEvaluator:
    """Evaluates a system at a training step; every rank evaluates its share, the tracker (rank 0's)
    keeps the results."""

    def __init__(self, cfg: EvalConfig, engine: RolloutEngine, task: Task, world, tracker,
                 say: Callable[[str], None]):
        self.cfg, self.engine, self.task, self.world = cfg, engine, task, world
        self.tracker, self.say = tracker, say

    def __call__(self, system: System, step: int) -> None:
        questions = self.task.test[:self.cfg.num_questions]
        if not questions:
            return
        accuracy, answers, rows = evaluate_over_ranks(self.engine, system, self.task, questions, self.world,
                                                      self.cfg.transcripts)
        metrics = {"eval/accuracy": accuracy.mean, "eval/accuracy_se": accuracy.se,
                   "eval/num_questions": float(accuracy.n)}
        self.say(f"eval  step {step:>4} | accuracy {accuracy} on the test split (greedy)")
        read = [n for n in system.topology.node_ids if n not in system.topology.answer_ids]
        ablated: dict = {}
        for mode in self.cfg.ablations if read else ():
            ablated[mode], ablated_answers, ablated_rows = evaluate_over_ranks(
                self.engine, system, self.task, questions, self.world, self.cfg.transcripts, Ablation(mode))
            real_minus, changed = paired_difference(ablated[mode], accuracy), answers_changed(answers, ablated_answers)
            metrics.update({f"eval/accuracy_{mode}": ablated[mode].mean,
                            f"eval/real_minus_{mode}": real_minus.difference,
                            f"eval/real_minus_{mode}_se": real_minus.se, f"eval/changed_{mode}": changed})
            rows += [{**row, "messages_read": mode} for row in ablated_rows]
            self.say(f"eval  step {step:>4} | {mode} messages: accuracy {ablated[mode]}; real - {mode}: {real_minus}; "
                     f"answers changed: {changed:.3f}")
        self.tracker.log(metrics, step)
        change = self.tracker.evaluation(step, [q.id for q in questions], accuracy, ablated, rows)
        if change is not None:
            self.tracker.log({"eval/change": change.difference, "eval/change_se": change.se}, step)
            self.say(f"eval  step {step:>4} | change since step 0: {change}")
