"""Tokenizing and micro-batch planning for a colocated reward model.

A batch of rollouts is skewed: many short responses, a few long ones. One right-padded
forward (TRL's own reward-model path) pays for ``B x max_len`` tokens. Here inputs are
sorted by length and cut into micro-batches whose padded size stays under a token budget,
so a forward pays for little more than the real tokens, and the peak memory is bounded.
Right padding keeps every real position's computation identical to scoring it alone
(causal attention never looks right), so scores match unbatched scoring.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import ConfigError, InputError
from ..options import TRUNCATION_MODES

DEFAULT_MAX_TOKENS_PER_BATCH = 16384  # a GPU's default: a bigger forward fills the device better
# A CPU's default, measured by benchmarks/token_budget.py at 1 and 2 threads (docs/benchmarks.md): past a few
# thousand padded tokens a forward's activations leave the cache and per-row cost rises.
CPU_MAX_TOKENS_PER_BATCH = 4096
# What one extra forward call costs, in padded-token equivalents: it keeps the planner from
# splitting a batch into many tiny forwards to save a little padding.
FORWARD_OVERHEAD_TOKENS = 256


def encode(
    texts: Sequence[str],
    tokenizer: Any,
    *,
    add_special_tokens: bool | Sequence[bool],
    max_length: int,
    truncation: str = "left",
) -> tuple[list[list[int]], int]:
    """Tokenize texts, fitting each into ``max_length`` tokens; ``add_special_tokens`` for all, or one per text.

    ``truncation="left"`` drops the oldest tokens and keeps the end of the response, where
    the score is read; a leading BOS is kept. ``"error"`` raises on the first over-long text.

    Returns:
        (token id lists, number truncated)
    """
    if truncation not in TRUNCATION_MODES:
        raise ConfigError(f"truncation={truncation!r} is not one of {TRUNCATION_MODES}")
    flags = [add_special_tokens] * len(texts) if isinstance(add_special_tokens, bool) else list(add_special_tokens)
    ids: list = [None] * len(texts)
    for flag in sorted(set(flags)):  # one tokenizer call per flag (usually one)
        rows = [i for i, f in enumerate(flags) if f == flag]
        for i, row in zip(rows, tokenizer([texts[i] for i in rows], add_special_tokens=flag)["input_ids"]):
            ids[i] = row
    bos = getattr(tokenizer, "bos_token_id", None)
    num_truncated = 0
    for i, seq in enumerate(ids):
        if len(seq) <= max_length:
            continue
        if truncation == "error":
            raise InputError(
                f"conversation {i} has {len(seq)} tokens > max_length {max_length}; "
                "set truncation='left' or raise max_length"
            )
        keep_bos = bos is not None and seq[0] == bos
        ids[i] = ([bos] if keep_bos else []) + seq[len(seq) - max_length + int(keep_bos):]
        num_truncated += 1
    return ids, num_truncated


def encode_pairs(
    questions: Sequence[str],
    answers: Sequence[str],
    tokenizer: Any,
    *,
    max_length: int,
    truncation: str = "left",
    with_segments: bool = False,
):
    """Tokenize (question, answer) pairs as the BERT RewardModel card does, fitting ``max_length``.

    ``tokenizer(question, answer)``: the tokenizer adds its own special tokens (``[CLS] q [SEP] a
    [SEP]``) and, with ``with_segments``, says which segment each token is in (``token_type_ids``,
    from the pair itself: a literal ``[SEP]`` inside the question does not move them). An over-long
    pair loses the question's oldest tokens first, then the answer's first tokens, never the answer's
    end nor a special token.

    Returns:
        (token id lists, number truncated), and the segment id lists with ``with_segments``
    """
    if truncation not in TRUNCATION_MODES:
        raise ConfigError(f"truncation={truncation!r} is not one of {TRUNCATION_MODES}")
    encoded = tokenizer(list(questions), list(answers), return_token_type_ids=with_segments)
    ids = encoded["input_ids"]
    segments = [list(row) for row in encoded["token_type_ids"]] if with_segments else None
    num_truncated = 0
    for i, seq in enumerate(ids):
        if len(seq) <= max_length:
            continue
        if truncation == "error":
            raise InputError(
                f"(question, answer) pair {i} has {len(seq)} tokens > max_length {max_length}; "
                "set truncation='left' or raise max_length"
            )
        owner = encoded.sequence_ids(i)  # per token: 0 question, 1 answer, None special
        excess, drop = len(seq) - max_length, set()
        for part in (0, 1):  # question first (oldest tokens first), then the answer's start
            for position, who in enumerate(owner):
                if excess and who == part:
                    drop.add(position)
                    excess -= 1
        if excess:
            raise ConfigError(f"max_length {max_length} is smaller than the tokenizer's special tokens; raise max_length")
        ids[i] = [token for position, token in enumerate(seq) if position not in drop]
        if segments is not None:
            segments[i] = [segment for position, segment in enumerate(segments[i]) if position not in drop]
        num_truncated += 1
    return (ids, num_truncated, segments) if with_segments else (ids, num_truncated)


def default_max_tokens_per_batch(device: Any) -> int:
    """``max_tokens_per_batch`` when the user set none: by the device the model runs on.

    >>> default_max_tokens_per_batch("cpu"), default_max_tokens_per_batch("cuda:0")
    (4096, 16384)
    """
    kind = getattr(device, "type", None) or str(device).partition(":")[0]
    return CPU_MAX_TOKENS_PER_BATCH if kind == "cpu" else DEFAULT_MAX_TOKENS_PER_BATCH


def plan_micro_batches(
    lengths: Sequence[int], max_tokens_per_batch: int, overhead_tokens: int = FORWARD_OVERHEAD_TOKENS
) -> list[list[int]]:
    """Split indices into micro-batches that cost the fewest padded tokens.

    Indices are sorted longest first and cut into contiguous runs; a run costs
    ``rows x longest`` padded tokens plus ``overhead_tokens`` for the forward call itself, and
    must fit ``max_tokens_per_batch`` (a sequence longer than that rides alone). The best cut
    is found exactly by dynamic programming over the sorted lengths, O(n x rows per batch).

    >>> plan_micro_batches([5, 100, 6, 90], max_tokens_per_batch=200)
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    sorted_lengths = [lengths[i] for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest cost of the first j sequences
    cut = [0] * (n + 1)  # cut[j]: where the last run of that cheapest plan starts
    for end in range(1, n + 1):
        # The run start..end-1 has rows = end - start; its longest member is sorted_lengths[start].
        for start in range(end - 1, -1, -1):
            padded = (end - start) * sorted_lengths[start]
            if padded > max_tokens_per_batch and start < end - 1:
                break  # going further back only adds rows and length
            cost = best[start] + padded + overhead_tokens
            if cost < best[end]:
                best[end], cut[end] = cost, start
    batches = []
    end = n
    while end > 0:
        batches.append(order[cut[end]:end])
        end = cut[end]
    return batches[::-1]


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns input_ids and attention_mask, both shape (b, longest)."""
    longest = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for row, seq in enumerate(seqs):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask
