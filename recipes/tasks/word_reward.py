"""A custom reward for recipes/tasks/custom.yaml: any function (completion, sample) -> float.

Named in a recipe as task.reward: recipes/tasks/word_reward.py:says_the_word (a file path,
relative to where you run neuromas) or as a dotted path when it lives in an installed package.
"""

import re


def says_the_word(completion: str, sample) -> float:
    """1.0 if the reply's last word is the reference word, 0.5 if the word appears anywhere."""
    words = re.findall(r"[a-z]+", completion.lower())
    if words and words[-1] == sample.answer:
        return 1.0
    return 0.5 if sample.answer in words else 0.0
