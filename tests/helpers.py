"""Reward functions for tests, importable by dotted path (pytest puts tests/ on sys.path)."""

import zlib


def text_parity_reward(completion: str, sample) -> float:
    """A reward that varies from sample to sample on a random model's gibberish."""
    return float(zlib.crc32(completion.encode()) % 2)


def raising_reward(completion: str, sample) -> float:
    raise RuntimeError("broken reward")


def last_digit_parity(completion: str, sample) -> float:
    """1 when the answer's last character is an even digit (depends on nothing else)."""
    return float(bool(completion) and completion[-1].isdigit() and int(completion[-1]) % 2 == 0)


def first_char_even(completion: str, sample) -> float:
    """1 when the reply's first character has an even code point: about half of a random
    model's first tokens, and learnable by moving probability onto those tokens."""
    return float(bool(completion) and ord(completion[0]) % 2 == 0)


def coin(seed: int) -> str:
    """Toss a coin.

    Args:
        seed: any number
    """
    import random

    return random.choice(["0", "1"])


def even_after_the_tool(completion: str, sample) -> float:
    """1 when the first character after the last tool result has an even code point."""
    head, found, after = completion.rpartition("</tool_response>\n")
    return float(bool(found and after) and ord(after[0]) % 2 == 0)
