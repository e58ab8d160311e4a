"""The stage machine's decisions, without a model: gates, when a stage ends, roll back or give up,
and the run state a checkpoint round-trips."""

from neuromas.config import GrowthConfig, StageConfig, TopologyConfig
from neuromas.schedule import RunState, StageSchedule

STAGES = [StageConfig(TopologyConfig(widths=[1]), steps=3),
          StageConfig(TopologyConfig(widths=[2, 1]), steps=4, gate_steps=2, patience=2)]


def schedule(margin=None, retry_inits=()) -> StageSchedule:
    return StageSchedule(STAGES, GrowthConfig(margin=margin, retry_inits=list(retry_inits)))


def test_a_stage_trains_for_its_steps_then_the_run_is_done():
    s, state = schedule(), RunState()
    steps = 0
    while s.stage(state) is not None:
        while s.keep_training(state):
            state, steps = state.stepped(), steps + 1
        assert s.end_stage(state, None, None).action == "next"
        state = state.next_stage()
    assert steps == s.total_steps == 7 and state.step == 7 and state.stage_index == 2


def test_the_gate_ramps_over_the_stages_gate_steps():
    s = schedule()
    assert [s.gate(RunState(stage_index=1, stage_step=k)) for k in (1, 2, 3)] == [0.5, 1.0, 1.0]
    assert s.gate(RunState(stage_index=0, stage_step=1)) == 1.0  # no gate steps: open
    assert s.gate(RunState(stage_index=2)) == 1.0  # past the last stage


def test_patience_ends_a_stage_after_that_many_stale_validations():
    s, state = schedule(), RunState(stage_index=1, stage_step=1)
    state = state.validated(0.5).validated(0.4)
    assert s.keep_training(state) and state.best_validation == 0.5 and state.stale_validations == 1
    state = state.validated(0.5)  # equal is not better
    assert not s.keep_training(state)
    assert state.validated(0.6).stale_validations == 0


def test_a_stage_that_loses_more_than_the_margin_rolls_back_with_the_next_init():
    s = schedule(margin=0.1, retry_inits=["zero", "fresh"])
    grown = RunState(stage_index=1, stage_step=4)
    assert s.end_stage(grown, 0.45, 0.5).action == "next"  # within the margin
    end = s.end_stage(grown, 0.3, 0.5)
    assert (end.action, end.tried, end.init) == ("roll_back", "copy", "zero")
    retried = grown.retried()
    assert (retried.attempt, retried.stage_step, retried.stage_index) == (1, 0, 1)
    assert s.end_stage(retried, 0.3, 0.5).init == "fresh"
    end = s.end_stage(retried.retried(), 0.3, 0.5)
    assert (end.action, end.tried, end.inits) == ("give_up", "fresh", ("copy", "zero", "fresh"))
    assert s.end_stage(RunState(stage_index=0), 0.0, 0.5).action == "next"  # the first stage has no parent


def test_next_stage_resets_the_per_stage_counters():
    state = RunState(step=5, stage_index=0, stage_step=5, attempt=1, best_validation=0.3, stale_validations=1,
                     baseline=0.2).next_stage()
    assert state == RunState(step=5, stage_index=1, baseline=0.2)


def test_the_run_state_round_trips_through_a_checkpoint_dict():
    state = RunState(step=9, stage_index=1, stage_step=2, attempt=1, best_validation=0.25, stale_validations=1,
                     baseline=0.5)
    saved = {**state.to_dict(), "topology": {"widths": [2, 1]}, "gate": 1.0}
    assert RunState.from_dict(saved) == state
    del saved["baseline"]  # checkpoints from before the baseline was saved
    assert RunState.from_dict(saved).baseline is None


def test_no_gated_nodes_means_an_open_gate():
    assert schedule().gate(RunState(stage_index=1, stage_step=1), gated=False) == 1.0
