"""Dynamic batching with isolation and fairness: concurrent requests share scorer calls, but one
request's failure or size never costs another request its answer.

A scheduling round is one scorer call on the worker thread (so rounds never overlap and
ZeRO-3 ranks stay in step). A round holds at most ``max_batch_size`` conversations and
``max_batch_chars`` characters (the server's proxy for tokens, about 4 per token; a single
conversation over it rides alone), of one kind, taken round-robin from the waiting requests,
oldest first: one conversation from each in turn. A request too big for one round is spread
over several, so a small request that arrives behind it waits at most one round, never for
the whole of it. A round starts when it is full, or ``max_wait_s`` after the oldest waiting
request arrived (company to batch with).

- **Isolation.** With ``score_requests`` (the served model's), a round is checked per request:
  rows a template or tokenizer refuses are found before the forward and a NaN score after it,
  and only their request fails; the others are not scored again. A round that fails in a way no
  request can be blamed for (or any failure without ``score_requests``) is split by request and
  each part scored again (halves, recursively), so only the request whose rows raise gets the error.
- **Abandoned requests.** A request whose client went away (the route's task is cancelled,
  which cancels its future) is dropped before its next round; the rows already being scored
  finish, the rest are never scored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import torch

from ..scorers.base import Scores

DEFAULT_MAX_BATCH_CHARS = 256 * 1024

logger = logging.getLogger("rewardbridge.server")


def slice_scores(scores: Scores, start: int, stop: int) -> Scores:
    return Scores(
        values=scores.values[start:stop] if scores.values is not None else None,
        attributes={name: column[start:stop] for name, column in scores.attributes.items()},
    )


def concat_scores(parts: Sequence[Scores]) -> Scores:
    """Row slices of one request, in order, as one ``Scores``."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return Scores(
        values=torch.cat([p.values for p in parts]) if first.values is not None else None,
        attributes={name: torch.cat([p.attributes[name] for p in parts]) for name in first.attributes},
        num_truncated=sum(p.num_truncated for p in parts),
    )


def _from_row(error: BaseException, start: int) -> BaseException:
    """A later round's error of a request spread over several: its sample numbers count from ``start``."""
    from ..errors import RewardBridgeError

    if isinstance(error, RewardBridgeError):
        return type(error)(f"{error} (sample numbers count from row {start} of the request)")
    return error


class _Pending:
    """One request in the queue: its rows, how far it got, and its slices of scores so far."""

    __slots__ = ("kind", "items", "sizes", "future", "arrived", "next", "parts")

    def __init__(self, kind: str, items: list, sizes: Sequence[int], future: asyncio.Future):
        self.kind, self.items, self.sizes, self.future = kind, items, sizes, future
        self.arrived = time.monotonic()
        self.next = 0  # the first row not yet handed to a round
        self.parts: list[Scores] = []


class Batcher:
    """``await submit(kind, items) -> Scores``: the request's own rows, scored in shared rounds.

    Args:
        score: ``score(kind, items) -> Scores``, called on one worker thread.
        max_batch_size: conversations per round.
        max_wait_s: how long the oldest waiting request waits for company.
        max_batch_chars: characters per round (a conversation bigger than that rides alone).
        on_batch: called with each round's conversation count (the batch-size histogram).
        on_abandoned: called with the rows of a dropped request that were never scored.
        score_requests: ``score_requests(kind, groups) -> [Scores or exception per group]`` (one
            group per request in the round), called on the worker thread instead of ``score``.
    """

    def __init__(self, score: Callable, max_batch_size: int, max_wait_s: float, max_batch_chars: int = DEFAULT_MAX_BATCH_CHARS,
                 on_batch: Callable[[int], None] | None = None, on_abandoned: Callable[[int], None] | None = None,
                 score_requests: Callable | None = None):
        self.score, self.max_batch_size, self.max_wait_s = score, max_batch_size, max_wait_s
        self.score_requests = score_requests
        self.max_batch_chars = max_batch_chars
        self.on_batch = on_batch or (lambda n: None)
        self.on_abandoned = on_abandoned or (lambda n: None)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewardbridge-score")
        # Waiting requests: arrival order, except that a request which had rows in a round goes
        # to the back (its turn came), so the next round starts with the others.
        self.queue: list[_Pending] = []
        self.waiting: dict[str, int] = {}  # kind -> rows queued and not yet handed to a round
        self._cancelled = False  # a queued request's client left: drop it before the next round
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, kind: str, items: list, sizes: Sequence[int] | None = None) -> Scores:
        """Queue ``items`` (their ``sizes`` in characters, for the round budget) and wait for their scores."""
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._arrived = asyncio.Event()
            self._worker = loop.create_task(self._work())
        if not items:  # nothing to share a round with; still the scorer's own answer shape
            return await loop.run_in_executor(self.executor, self.score, kind, [])
        pending = _Pending(kind, items, sizes if sizes is not None else [1] * len(items), loop.create_future())
        pending.future.add_done_callback(self._on_done)
        self.queue.append(pending)
        self.waiting[kind] = self.waiting.get(kind, 0) + len(items)
        self._arrived.set()
        return await pending.future

    def _on_done(self, future: asyncio.Future) -> None:
        if future.cancelled():
            self._cancelled = True

    async def _work(self) -> None:
        while True:
            self._drop_abandoned()
            if not self.queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            head = self.queue[0]
            # Wait for company until the round would be full or the head request has waited enough
            # (one that already had a round arrived long ago: no wait).
            deadline = head.arrived + self.max_wait_s
            while self.waiting.get(head.kind, 0) < self.max_batch_size and (remaining := deadline - time.monotonic()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            self._drop_abandoned()
            if not self.queue:
                continue
            kind = self.queue[0].kind
            members = self._take_round(kind)
            try:
                items = [item for pending, start, stop in members for item in pending.items[start:stop]]
                self.on_batch(len(items))
                await self._score_round(members, kind, items)
            except Exception as error:  # noqa: BLE001: a bug here must fail these requests, not stop the worker
                logger.exception("a scoring round failed outside the scorer")
                for pending, _, _ in members:
                    self._fail(pending, error)

    def _drop_abandoned(self) -> None:
        if not self._cancelled:
            return
        self._cancelled = False
        kept = []
        for pending in self.queue:
            if not pending.future.done():
                kept.append(pending)
                continue
            unscored = len(pending.items) - pending.next
            self.waiting[pending.kind] -= unscored
            if pending.future.cancelled() and unscored:
                self.on_abandoned(unscored)
        self.queue = kept

    def _take_round(self, kind: str) -> list[tuple[_Pending, int, int]]:
        """Round-robin over the waiting requests of ``kind`` in queue order, one row each in turn,
        until the round is full; -> (request, first row, end row) per member, rows contiguous."""
        taken: dict[_Pending, int] = {}
        rows = chars = 0
        full = False
        while not full:
            progress = False
            for pending in self.queue:
                if pending.kind != kind:
                    continue
                position = pending.next + taken.get(pending, 0)
                if position >= len(pending.items):
                    continue
                size = pending.sizes[position]
                if rows and chars + size > self.max_batch_chars:
                    full = True  # the round's character budget is spent (its first row always fits)
                    break
                taken[pending] = taken.get(pending, 0) + 1
                rows, chars, progress = rows + 1, chars + size, True
                if rows >= self.max_batch_size:
                    full = True
                    break
            full = full or not progress
        members = []
        for pending, count in taken.items():
            members.append((pending, pending.next, pending.next + count))
            pending.next += count
        self.waiting[kind] -= rows
        # Members with rows left go to the back: the next round starts with the others.
        self.queue = [p for p in self.queue if p not in taken] + [p for p in taken if p.next < len(p.items)]
        return members

    async def _score_round(self, members: list, kind: str, items: list) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self.score_requests is not None:
                groups = [pending.items[start:stop] for pending, start, stop in members]
                outcomes = await loop.run_in_executor(self.executor, self.score_requests, kind, groups)
                for (pending, start, stop), outcome in zip(members, outcomes):
                    if isinstance(outcome, BaseException):
                        self._fail(pending, outcome if not start else _from_row(outcome, start))
                    elif not pending.future.done():
                        pending.parts.append(outcome)
                        if stop == len(pending.items):
                            pending.future.set_result(concat_scores(pending.parts))
                return
            scores = await loop.run_in_executor(self.executor, self.score, kind, items)
        except Exception as error:  # noqa: BLE001: isolated below, then handed to its own request
            if len(members) == 1:
                self._fail(members[0][0], error)
            else:  # split by request: halves, scored apart, until the failing request stands alone
                half = len(members) // 2
                for part in (members[:half], members[half:]):
                    await self._score_round(part, kind, [item for p, a, b in part for item in p.items[a:b]])
            return
        offset = 0
        for pending, start, stop in members:
            n = stop - start
            if not pending.future.done():
                pending.parts.append(slice_scores(scores, offset, offset + n) if len(members) > 1 else scores)
                if stop == len(pending.items):
                    pending.future.set_result(concat_scores(pending.parts))
            offset += n

    def _fail(self, pending: _Pending, error: Exception) -> None:
        """The request's rows raised: it gets the error, and its rows not yet scored never are."""
        if not pending.future.done():
            pending.future.set_exception(error)
        if pending.next < len(pending.items):
            self.waiting[pending.kind] -= len(pending.items) - pending.next
            pending.next = len(pending.items)
            self.queue = [p for p in self.queue if p is not pending]

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.executor.shutdown(wait=True)
