"""What a recipe names by import path: a reward, a tool, an environment, a taskset. One loader, one
set of one-line errors, each naming the recipe key."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from neuromas.errors import ConfigError


def load_named(spec: str, key: str, noun: str | None = "function"):
    """The object `spec` names: ``pkg.module:Name`` or ``path/to/file.py:Name`` (relative to the
    working directory). Every failure is a `ConfigError` starting with `key`; `noun` says what
    was looked for when the module lacks it ("has no function 'x'"; None: "has no 'x'")."""
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise ConfigError(f"{key}: {spec!r} is not pkg.module:Name or path/to/file.py:Name")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ConfigError(f"{key}: {path} does not exist")
        loaded = importlib.util.spec_from_file_location(f"neuromas_user_{path.stem}", path)
        module = importlib.util.module_from_spec(loaded)
        try:
            loaded.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - the user's file: report it in one line
            raise ConfigError(f"{key}: cannot load {path} ({type(e).__name__}: {e})") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ConfigError(f"{key}: cannot import {spec!r} ({e})") from None
    found = getattr(module, name, None)
    if found is None:
        raise ConfigError(f"{key}: {where} has no {noun + ' ' if noun else ''}{name!r}")
    return found
