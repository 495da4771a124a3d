"""Rule-based rewards to put beside a reward model (``rewards: [{function: ..., weight: ...}]``).

Small picklable classes with a ``__name__``, like TRL's own reward helpers: TRL calls them
``f(prompts=, completions=, **kw)`` and logs them as ``rewards/<__name__>/mean``.
"""

from __future__ import annotations

from typing import Any, Sequence


class WordLimit:
    """1.0 when a completion is non-empty and has at most ``max_words`` words, else 0.0.

    A format check in the spirit of the length control the Nemotron reward models need
    (they reward verbosity; HelpSteer2 labels it as its own attribute).

    >>> WordLimit(3)(prompts=["q", "q", "q"], completions=["a b", "a b c d", ""])
    [1.0, 0.0, 0.0]
    """

    def __init__(self, max_words: int = 200):
        if max_words < 1:
            raise ValueError(f"max_words must be at least 1, got {max_words}")
        self.max_words = max_words
        self.__name__ = f"word_limit_{max_words}"

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs: Any) -> list[float]:
        rewards = []
        for completion in completions:
            text = completion if isinstance(completion, str) else "".join(str(m.get("content") or "") for m in completion)
            words = len(text.split())
            rewards.append(1.0 if 0 < words <= self.max_words else 0.0)
        return rewards
