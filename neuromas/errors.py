"""The one exception type for mistakes a user can fix (bad recipe, missing file, ...).

The CLI prints its message on one line and exits non-zero; anything else is a bug and
keeps its traceback.
"""


class NeuromasError(Exception):
    """A user-facing error: the message must say what is wrong and, where it can, how to fix it."""


class ConfigError(NeuromasError):
    """A recipe or override that does not fit the typed config."""
