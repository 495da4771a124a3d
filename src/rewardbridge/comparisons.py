"""Pairwise judgements folded into one reward per response: the maths of a generative reward
model that compares two responses at a time (NeMo-Gym's ``genrm_compare``, ``utils.py``).

Pure functions over lists; the scorer (``scorers/pairwise.py``) sends the comparisons and
calls these. The judge answers ``(score_1, score_2, ranking)`` for a pair (i, j): scores
1-5 for each response, ranking 1 (response 1 far better) to 6 (response 2 far better).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

RANKING_MIDPOINT = 3.5  # rankings run 1-6; below 3.5 favours response 1 (genrm_compare utils.py)
NEUTRAL_SCORE, NEUTRAL_RANKING = 3.0, 3.5  # genrm_compare's default_score / default_ranking
REASONING_END = "</think>"
EMPTY_ANSWER = "None"  # genrm_compare sends this for an empty answer (EMPTY_OUTPUT_PLACEHOLDER)


class Judgement(NamedTuple):
    """One judge's answer about (response_1, response_2)."""

    score_1: float
    score_2: float
    ranking: float


class Comparison(NamedTuple):
    """Responses ``first`` and ``second`` (indices within their group) sent as response_1, response_2."""

    group: int
    first: int
    second: int
    judge: int


def comparison_pairs(strategy: str, n: int, judges: int = 1, both_orders: bool = False) -> list[tuple[int, int, int]]:
    """The (first, second, judge) triples compared among n responses.

    ``circular``: (0,1), (1,2), ..., (n-1,0): n comparisons (for n = 2, the one pair once).
    ``all_pairs``: every i < j: n(n-1)/2. ``both_orders`` adds (j, i) for each (i, j), to
    cancel a judge's position bias. Each pair is judged ``judges`` times.

    >>> comparison_pairs("circular", 3)
    [(0, 1, 0), (1, 2, 0), (2, 0, 0)]
    >>> comparison_pairs("all_pairs", 3, both_orders=True)
    [(0, 1, 0), (1, 0, 0), (0, 2, 0), (2, 0, 0), (1, 2, 0), (2, 1, 0)]
    """
    if n < 2:
        raise ValueError(f"comparing needs 2 or more responses, got {n}")
    if strategy == "all_pairs":
        pairs = list(itertools.combinations(range(n), 2))
    elif strategy == "circular":
        # n = 2 gives (0,1) and (1,0): the one pair in both orders, as genrm_compare does.
        pairs = [(i, (i + 1) % n) for i in range(n)]
    else:
        raise ValueError(f"pairs={strategy!r} is not 'circular' or 'all_pairs'")
    if both_orders:
        pairs = [p for i, j in pairs for p in ((i, j), (j, i))]
    return [(i, j, k) for k in range(judges) for i, j in pairs]


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, answer): everything up to the last ``</think>`` is reasoning.

    >>> split_reasoning("<think>2+2 is 4</think> 4")
    ('<think>2+2 is 4</think>', ' 4')
    >>> split_reasoning("4")
    ('', '4')
    """
    head, sep, tail = text.rpartition(REASONING_END)
    return (head + sep, tail) if sep else ("", text)


def answer_text(text: str) -> str:
    """What the judge reads of a response: its answer after any reasoning, or "None" when empty."""
    answer = split_reasoning(text)[1]
    return answer if answer.strip() else EMPTY_ANSWER


def length_weights(lengths: Sequence[float]) -> list[float]:
    """Zero-mean weights, shortest highest: ``w = 1 - (L - min) / (max - min)``, minus the mean.

    >>> length_weights([10, 20, 30])
    [0.5, 0.0, -0.5]
    >>> length_weights([5, 5])
    [0.0, 0.0]
    """
    low, high = min(lengths), max(lengths)
    if high == low:
        return [0.0] * len(lengths)
    raw = [1.0 - (length - low) / (high - low) for length in lengths]
    mean = sum(raw) / len(raw)
    return [w - mean for w in raw]


@dataclass
class Folded:
    """One group's rewards and what the judge said, for metrics.

    Attributes:
        rewards: one per response; NaN for a response in a comparison that failed.
        individual: every score_1 and score_2 the judge gave, before tie-breaking.
        tiebreaks: comparisons whose two scores were equal (broken by the ranking).
        judged: comparisons with an answer.
    """

    rewards: list[float]
    individual: list[float] = field(default_factory=list)
    tiebreaks: int = 0
    judged: int = 0


def fold(
    n: int,
    judged: Sequence[tuple[int, int, Judgement | None]],
    texts: Sequence[str] | None = None,
    length_penalty: float = 0.0,
    reasoning_length_penalty: float = 0.0,
) -> Folded:
    """``simple_tiebreaker``: rewards for n responses from their comparisons (first, second, judgement).

    For each comparison with (s1, s2, rank): if s1 == s2, add 3.5 - rank to s1 and subtract it
    from s2; s1 counts for ``first``, s2 for ``second``. A response's reward is its mean over
    its comparisons, plus ``length_penalty * w`` (:func:`length_weights` of its answer's
    characters, stripped) and ``reasoning_length_penalty * w`` (the same over its reasoning).
    A judgement of None (a failed comparison) makes both of its responses NaN.

    >>> fold(2, [(0, 1, Judgement(4, 4, 2))]).rewards  # a tie, ranking 2: response 1 is better
    [5.5, 2.5]
    """
    totals, counts = [0.0] * n, [0] * n
    failed: set[int] = set()
    out = Folded(rewards=[])
    for first, second, judgement in judged:
        if judgement is None:
            failed |= {first, second}
            continue
        s1, s2, ranking = judgement
        out.individual += [s1, s2]
        out.judged += 1
        if s1 == s2:
            out.tiebreaks += 1
            s1, s2 = s1 + (RANKING_MIDPOINT - ranking), s2 - (RANKING_MIDPOINT - ranking)
        totals[first] += s1
        totals[second] += s2
        counts[first] += 1
        counts[second] += 1
    rewards = [totals[i] / counts[i] if counts[i] and i not in failed else math.nan for i in range(n)]
    if texts is not None and (length_penalty or reasoning_length_penalty):
        parts = [split_reasoning(t) for t in texts]
        answers = length_weights([len(answer.strip()) for _, answer in parts])
        reasonings = length_weights([len(reasoning.replace("<think>", "").replace(REASONING_END, "").strip()) for reasoning, _ in parts])
        rewards = [r + length_penalty * a + reasoning_length_penalty * b for r, a, b in zip(rewards, answers, reasonings)]
    out.rewards = rewards
    return out
