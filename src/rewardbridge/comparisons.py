"""Pairwise judgements folded into one reward per response: the maths of a generative reward
model that compares two responses at a time (NeMo-Gym's ``genrm_compare``, ``utils.py``).

Pure functions over lists; the scorer (``scorers/pairwise.py``) sends the comparisons and
calls these. The judge answers ``(score_1, score_2, ranking)`` for a pair (i, j): scores
1-5 for each response, ranking 1 (response 1 far better) to 6 (response 2 far better).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

RANKING_MIDPOINT = 3.5  # rankings run 1-6; below 3.5 favours response 1 (genrm_compare utils.py)
NEUTRAL_SCORE, NEUTRAL_RANKING = 3.0, 3.5  # genrm_compare's default_score / default_ranking
REASONING_START, REASONING_END = "<think>", "</think>"
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

    ``circular``: (0,1), (1,2), ..., (n-1,0): n comparisons; for n = 2 that is (0,1) and
    (1,0), the one pair in both orders (genrm_compare's ``generate_comparison_pairs`` does the
    same). ``all_pairs``: every i < j: n(n-1)/2. ``both_orders`` adds (j, i) for each (i, j),
    to cancel a judge's position bias. Each pair is judged ``judges`` times.

    >>> comparison_pairs("circular", 3)
    [(0, 1, 0), (1, 2, 0), (2, 0, 0)]
    >>> comparison_pairs("circular", 2)
    [(0, 1, 0), (1, 0, 0)]
    >>> comparison_pairs("all_pairs", 3, both_orders=True)
    [(0, 1, 0), (1, 0, 0), (0, 2, 0), (2, 0, 0), (1, 2, 0), (2, 1, 0)]
    """
    if n < 2:
        raise ValueError(f"comparing needs 2 or more responses, got {n}")
    if strategy == "all_pairs":
        pairs = list(itertools.combinations(range(n), 2))
    elif strategy == "circular":
        pairs = [(i, (i + 1) % n) for i in range(n)]
    else:
        raise ValueError(f"pairs={strategy!r} is not 'circular' or 'all_pairs'")
    if both_orders:
        pairs = [p for i, j in pairs for p in ((i, j), (j, i))]
    return [(i, j, k) for k in range(judges) for i, j in pairs]


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, answer): everything up to the last ``</think>`` is reasoning. A ``<think>``
    opened after it (or with no ``</think>`` at all) and never closed makes the whole text
    reasoning and the answer empty: the text stopped while still thinking, so none of it is
    an answer.

    >>> split_reasoning("<think>2+2 is 4</think> 4")
    ('<think>2+2 is 4</think>', ' 4')
    >>> split_reasoning("4")
    ('', '4')
    >>> split_reasoning("<think>still thinking")
    ('<think>still thinking', '')
    """
    head, sep, tail = text.rpartition(REASONING_END)
    if REASONING_START in tail:
        return text, ""
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
    *,
    answer_bonus: float = 0.0,
    reasoning_bonus: float = 0.0,
    top_percentile: float = 0.2,
    style_penalty: float = 0.0,
) -> Folded:
    """``simple_tiebreaker``: rewards for n responses from their comparisons (first, second, judgement).

    For each comparison with (s1, s2, rank): if s1 == s2, add 3.5 - rank to s1 and subtract it
    from s2; s1 counts for ``first``, s2 for ``second``. A response's reward is its mean over
    its comparisons. A judgement of None (a failed comparison) makes both of its responses NaN.
    Then, given ``texts``, the group adjustments of genrm_compare, each 0 (off) by default:

    - ``reasoning_bonus`` / ``answer_bonus``: the response with the shortest non-empty
      reasoning (answer) earns the bonus if its reward is among the top ``top_percentile``
      of the group (:func:`top_bonuses`).
    - ``length_penalty * w`` and ``reasoning_length_penalty * w``: :func:`length_weights`
      of each answer's (reasoning's) characters, stripped.
    - ``style_penalty * w``: :func:`length_weights` of each answer's :func:`style_density`,
      so the least formatted answer gains the most.

    A response whose comparison failed stays NaN, and the adjustments are computed over the
    scored responses only (their weights, the bar and its k; the reference has no failures).

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
    scored = [i for i in range(n) if not math.isnan(rewards[i])]
    if texts is not None and len(scored) >= 2:
        # Over the scored responses only: a failed one (NaN, None to TRL) neither shifts the
        # others' weights nor counts toward the bar.
        parts = [split_reasoning(texts[i]) for i in scored]
        base = [rewards[i] for i in scored]
        answers = [answer.strip() for _, answer in parts]
        reasonings = [reasoning.replace(REASONING_START, "").replace(REASONING_END, "").strip() for reasoning, _ in parts]
        adjustment = top_bonuses(base, [len(r) for r in reasonings], reasoning_bonus, top_percentile)
        adjustment = [a + b for a, b in zip(adjustment, top_bonuses(base, [len(a) for a in answers], answer_bonus, top_percentile))]
        if length_penalty or reasoning_length_penalty:
            weights = zip(length_weights([len(a) for a in answers]), length_weights([len(r) for r in reasonings]))
            adjustment = [x + length_penalty * a + reasoning_length_penalty * r for x, (a, r) in zip(adjustment, weights)]
        if style_penalty:
            adjustment = [x + style_penalty * w for x, w in zip(adjustment, length_weights([style_density(answer) for _, answer in parts]))]
        for i, x in zip(scored, adjustment):
            rewards[i] += x
    out.rewards = rewards
    return out


def top_bonuses(rewards: Sequence[float], lengths: Sequence[int], bonus: float, top_percentile: float) -> list[float]:
    """``bonus`` for the response with the shortest non-empty text (the first, on a tie), if its
    reward is at least the k-th highest, k = max(1, int(len(rewards) * top_percentile)); 0 for
    the others (genrm_compare's top-performer bonus: the shortest is chosen first, then its
    reward is checked against the bar).

    >>> top_bonuses([4.0, 3.0, 2.0, 1.0], [30, 20, 10, 40], 0.5, 0.5)  # the shortest (2) is 3rd: no bonus
    [0.0, 0.0, 0.0, 0.0]
    >>> top_bonuses([4.0, 3.0, 2.0, 1.0], [30, 20, 0, 40], 0.5, 0.5)  # empty texts do not count
    [0.0, 0.5, 0.0, 0.0]
    """
    out = [0.0] * len(rewards)
    candidates = [(length, i) for i, length in enumerate(lengths) if length > 0]
    if bonus <= 0 or not candidates:
        return out
    threshold = sorted(rewards, reverse=True)[max(1, int(len(rewards) * top_percentile)) - 1]
    shortest = min(candidates)[1]
    if rewards[shortest] >= threshold:
        out[shortest] = bonus
    return out


# Style elements as genrm_compare counts them (Arena-Hard's markdown counts, plus emoji), outside code blocks.
_CODE_BLOCK = re.compile(r"```[\s\S]*?```")
_STYLE = [
    re.compile(r"^#{1,6}\s", re.MULTILINE),  # headers
    re.compile(r"^\s*\d+\.\s", re.MULTILINE),  # ordered list items
    re.compile(r"^\s*[-*+]\s", re.MULTILINE),  # unordered list items
    re.compile(r"\*\*[^*\n]+\*\*"),  # bold
    re.compile(r"__[^_\n]+__"),
    # Emoji: code points in genrm_compare's ranges, as it counts them. Its range U+24C2-U+1F251
    # also spans CJK, Hangul and other scripts, so their characters count as style there too;
    # kept, so that rewards match the reference's.
    re.compile("[\U0001F600-\U0001F64F\U0001F300-\U0001F5FF\U0001F680-\U0001F6FF\U0001F1E0-\U0001F1FF"
               "\u2702-\u27B0\u24C2-\U0001F251\U0001F900-\U0001F9FF\U0001FA00-\U0001FA6F\U0001FA70-\U0001FAFF"
               "\u2600-\u26FF\u2700-\u27BF]"),
]


def style_density(text: str) -> float:
    r"""Formatting elements (headers, list items, bold, emoji) per character, code blocks left out.

    >>> round(style_density("## Legs\n- eight\n- **eight**"), 3)  # 4 elements in 27 characters
    0.148
    >>> style_density("Eight.")
    0.0
    """
    prose = _CODE_BLOCK.sub("", text)
    length = len(prose.strip())
    return sum(len(pattern.findall(prose)) for pattern in _STYLE) / length if length else 0.0
