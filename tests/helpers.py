"""Reward functions for tests, importable by dotted path (pytest puts tests/ on sys.path)."""

import zlib


def text_parity_reward(completion: str, sample) -> float:
    """A reward that varies from sample to sample on a random model's gibberish."""
    return float(zlib.crc32(completion.encode()) % 2)


def raising_reward(completion: str, sample) -> float:
    raise RuntimeError("broken reward")
