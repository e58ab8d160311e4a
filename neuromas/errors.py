"""The one exception type for mistakes a user can fix (bad recipe, missing file, ...).

The CLI prints its message on one line and exits non-zero; anything else is a bug and
keeps its traceback.
"""


class NeuromasError(Exception):
    """A user-facing error: the message must say what is wrong and, where it can, how to fix it."""


class ConfigError(NeuromasError):
    """A recipe or override that does not fit the typed config."""


class Interrupted(Exception):
    """Training stopped on a signal after a complete step, leaving a checkpoint to resume from, or
    before its first step, leaving nothing to resume (`checkpoint` None); not a NeuromasError:
    nothing was wrong; the CLI exits 130, as for Ctrl-C."""

    def __init__(self, step: int, checkpoint, run_dir=None):
        where = f"after step {step}; checkpoint {checkpoint}" if checkpoint is not None else \
            "before the first step (during the step-0 evaluation)"
        super().__init__(f"interrupted {where}")
        self.step, self.checkpoint, self.run_dir = step, checkpoint, run_dir
