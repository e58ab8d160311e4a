"""Where a run stands (`RunState`) and what it does next (`StageSchedule`).

The schedule's decisions are pure functions of the recipe's stages and the run state, so they
are tested without a model; the trainer carries them out (grows, rolls back, saves).

A stage trains for its steps, or until validation accuracy has not improved for `patience`
evaluations. At its end, with `growth.margin` set, its validation accuracy is compared with
its parent stage's: a stage that lost more than the margin is rolled back to the parent and
grown again with the next init of `[stage.init, *growth.retry_inits]`; when none is left the
run stops and says where the parent system is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from neuromas.config import GrowthConfig, StageConfig


def gate_value(stage_step: int, gate_steps: int) -> float:
    """The new nodes' gate after `stage_step` steps of their stage: a linear ramp 0 -> 1."""
    return 1.0 if gate_steps == 0 else min(1.0, stage_step / gate_steps)


@dataclass(frozen=True)
class RunState:
    """Every run-progress value a checkpoint must hold to resume exactly."""

    step: int = 0  # optimizer steps taken, over all stages
    stage_index: int = 0
    stage_step: int = 0  # steps taken in the current stage (since its last rollback)
    attempt: int = 0  # which init of [stage.init, *retry_inits] the current stage was grown with
    best_validation: float | None = None  # for stage patience
    stale_validations: int = 0
    baseline: float | None = None  # reinforce's moving average of the reward

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> RunState:
        """The state a checkpoint holds (its other keys, such as the topology, belong to the system)."""
        return cls(step=saved["step"], stage_index=saved["stage_index"], stage_step=saved["stage_step"],
                   attempt=saved["attempt"], best_validation=saved["best_validation"],
                   stale_validations=saved["stale_validations"], baseline=saved.get("baseline"))

    def stepped(self) -> RunState:
        return replace(self, step=self.step + 1, stage_step=self.stage_step + 1)

    def validated(self, accuracy: float) -> RunState:
        """After a validation for patience: a new best resets the count of stale ones."""
        if self.best_validation is None or accuracy > self.best_validation:
            return replace(self, best_validation=accuracy, stale_validations=0)
        return replace(self, stale_validations=self.stale_validations + 1)

    def next_stage(self) -> RunState:
        return replace(self, stage_index=self.stage_index + 1, stage_step=0, attempt=0, best_validation=None,
                       stale_validations=0)

    def retried(self) -> RunState:
        """The current stage again from its start, with the next init."""
        return replace(self, attempt=self.attempt + 1, stage_step=0, best_validation=None, stale_validations=0)


@dataclass(frozen=True)
class StageEnd:
    """What to do when a stage stops training."""

    action: Literal["next", "roll_back", "give_up"]
    init: str | None = None  # roll_back: the init to grow the stage again with
    tried: str | None = None  # roll_back / give_up: the init that fell short
    inits: tuple[str, ...] = ()  # give_up: every init tried


@dataclass(frozen=True)
class StageSchedule:
    stages: list[StageConfig]
    growth: GrowthConfig

    def stage(self, state: RunState) -> StageConfig | None:
        """The stage the run is in, or None once every stage is done."""
        return self.stages[state.stage_index] if state.stage_index < len(self.stages) else None

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def gate(self, state: RunState, gated: bool = True) -> float:
        """The gate of the current stage's new nodes at its current step: 1 when the system has
        none (`gated` False) or once every stage is done."""
        stage = self.stage(state)
        return 1.0 if stage is None or not gated else gate_value(state.stage_step, stage.gate_steps)

    def keep_training(self, state: RunState) -> bool:
        """Steps are left in the stage and its validation accuracy has not stalled for `patience`."""
        stage = self.stage(state)
        plateaued = bool(stage.patience) and state.stale_validations >= stage.patience
        return state.stage_step < stage.steps and not plateaued

    def validates_each_eval(self, state: RunState) -> bool:
        return bool(self.stages[state.stage_index].patience)

    def validates_at_stage_end(self) -> bool:
        return self.growth.margin is not None

    def has_next(self, state: RunState) -> bool:
        return state.stage_index + 1 < len(self.stages)

    def end_stage(self, state: RunState, validation: float | None, parent_validation: float | None) -> StageEnd:
        """Go on, or roll back a grown stage whose validation fell more than the margin below its parent's."""
        if (state.stage_index == 0 or validation is None or parent_validation is None
                or validation >= parent_validation - self.growth.margin):
            return StageEnd("next")
        stage = self.stages[state.stage_index]
        inits = (stage.init, *self.growth.retry_inits)
        if state.attempt + 1 >= len(inits):
            return StageEnd("give_up", tried=inits[state.attempt], inits=inits)
        return StageEnd("roll_back", init=inits[state.attempt + 1], tried=inits[state.attempt])
