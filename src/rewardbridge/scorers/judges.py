"""What the generative judges share over the transport: the principle of each row, asking a
judge again when its answer holds nothing to read, and the pointwise principle scorer.

The pairwise judge (``protocol="genrm"``) is in ``pairwise.py``; both send their requests
through ``transport.py`` (retries, failover, concurrency, keys) and never make a score up: an
answer that still cannot be read after ``parse_retries`` is a failure (``RemoteError``, or
NaN / None under ``on_error="skip"``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from ..errors import InputError, RemoteError
from .base import Scores
from .remote import RemoteScorer


def row_principles(options: Any, columns: dict | None, n: int) -> list[str | None]:
    """The principle for each of n rows: ``principle``, or the dataset column ``principle_column``."""
    if options.principle_column is None:
        return [options.principle] * n
    column = options.principle_column
    available = sorted(k for k in (columns or {}) if k != "trainer_state")
    if not columns or column not in columns:
        raise InputError(f"principle_column {column!r} is not among the dataset columns TRL passed ({available}); "
                         "set principle_column to one of them, or give principle= for every row")
    values = list(columns[column])
    if len(values) != n:
        raise InputError(f"principle_column {column!r} has {len(values)} values for {n} completions; TRL repeats a column per completion")
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"principle_column {column!r} value {i} is {value!r}; each row needs its principle as text")
    return values


async def exchange_parsed(transport, request, parse, indices: list[int], retries: int) -> tuple[Any, int, str | None]:
    """Send ``request`` (the transport retries and fails over) and ``parse`` the answer, asking
    again up to ``retries`` times while the answer is unreadable (``protocols.genrm.Unparsed``).

    Returns (result, times asked again, why the last answer was unreadable or None); a result
    that is still Unparsed is the caller's to fail or replace. RemoteError propagates.
    """
    from ..protocols.genrm import Unparsed

    result = None
    for attempt in range(retries + 1):
        result = await transport.exchange(request, parse, indices)
        if not isinstance(result, Unparsed):
            return result, attempt, None
    return result, retries, result.reason


class PrincipleScorer(RemoteScorer):
    """``protocol="principle"``: one request per response and its row's principle (RemoteScorer,
    with the principle read from the row and unreadable answers asked again)."""

    reads_columns = True

    def __init__(self, urls: Sequence[str], codec: Any, options: Any):
        super().__init__(urls, codec, options)
        self.options = options

    def score(self, conversations, columns: dict | None = None) -> Scores:
        """Rewards (B,); ``Scores.groups`` is each row's (prompt, principle): a reward is judged
        against its principle, so ``normalize=`` compares rows of one prompt and one principle."""
        conversations = list(conversations)
        principles = row_principles(self.options, columns, len(conversations))
        scores = super().score(list(zip(conversations, principles)))
        scores.groups = [(c.prompt_key(), p) for c, p in zip(conversations, principles)]
        return scores

    async def _score_chunks(self, conversations, chunks) -> tuple[list, list]:
        """-> (chunks, results), as RemoteScorer's: one request per row, asked again when unreadable."""
        async def one(chunk):
            request = self.codec.request([conversations[i] for i in chunk])
            try:
                result, _, why = await exchange_parsed(
                    self.transport, request, lambda response: self.codec.parse(response, len(chunk)), chunk, self.options.parse_retries
                )
            except RemoteError as error:
                return error
            if why is not None:
                tried = self.options.parse_retries + 1
                return RemoteError(f"principle judge's answer for sample {chunk[0]} could not be read after {tried} "
                                   f"attempt{'s' if tried > 1 else ''}: {why}; raise parse_retries or pass on_error='skip'")
            return result

        return list(chunks), list(await asyncio.gather(*(one(chunk) for chunk in chunks)))
