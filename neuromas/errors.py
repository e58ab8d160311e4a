"""The one exception type for mistakes a user can fix (bad recipe, missing file, ...).

The CLI prints its message on one line and exits non-zero; anything else is a bug and
keeps its traceback.
"""


class NeuromasError(Exception):
    """A user-facing error: the message must say what is wrong and, where it can, how to fix it."""


class ConfigError(NeuromasError):
    """A recipe or override that does not fit the typed config."""


class Interrupted(Exception):
    """Training stopped on a signal after a complete step, leaving a checkpoint to resume from
    (not a NeuromasError: nothing was wrong; the CLI exits 130, as for Ctrl-C)."""

    def __init__(self, step: int, checkpoint):
        super().__init__(f"interrupted after step {step}; checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint
