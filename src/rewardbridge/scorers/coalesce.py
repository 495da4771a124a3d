"""Concurrent calls coalesced into shared requests: one conversation from each of 64 threads
becomes one request of 64, where the protocol batches.

OpenRLHF's agent executor calls the reward once per sample from a thread each, verl once per
sample from a coroutine each; a request per call would pay the HTTP round trip and the
server's per-request cost for every sample. Here, on the transport's event loop, the
conversations of calls that overlap in time share a pool, sent as the codec's chunks
(``request_batch_size`` at a time). The pool is sent:

- at once when it holds ``request_batch_size`` conversations or more;
- on the next turn of the loop when no pooled request is in flight (a lone caller waits for
  nothing: calls that arrived in the same turn go with it);
- otherwise when a pooled request comes back, or ``COALESCE_WAIT_S`` after its first
  conversation arrived, whichever is first (Nagle's rule, with a bound on the wait).

Each call gets back exactly its own rows. A shared request that the endpoint refuses (a 4xx),
answers unreadably, or still answers HTTP 500 after its retries is sent again as one request
per call, concurrently, so only the call whose rows caused it sees the error; one that fails
because the endpoint is down or overloaded (connection errors, timeouts, 502/503/504, 429)
fails every call in it. With ``on_error="skip"`` a call's own request that fails that way is
split in halves (``bisect``) until the failing rows stand alone, so only they come back None.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from .exchange import describe_samples

COALESCE_WAIT_S = 0.005  # the longest a conversation waits for company while others are in flight


class _Call:
    """One ``score`` call waiting in the pool: its conversations, and per chunk what came back."""

    __slots__ = ("conversations", "future", "chunks", "results", "remaining")

    def __init__(self, conversations: list, future: asyncio.Future):
        self.conversations, self.future = conversations, future
        self.chunks: list[list[int]] = []  # this call's own indices, per request they rode in
        self.results: list[Any] = []  # per chunk: Rows sliced to this call's rows, or an exception
        self.remaining = len(conversations)

    def deliver(self, indices: list[int], result: Any) -> None:
        self.chunks.append(indices)
        self.results.append(result)
        self.remaining -= len(indices)
        if self.remaining == 0 and not self.future.done():
            self.future.set_result((self.chunks, self.results))


class Coalescer:
    """Pools the conversations of overlapping calls into ``codec``'s requests over ``transport``.

    ``await submit(conversations)`` -> ``(chunks, results)``: per request this call's rows rode
    in, its indices into ``conversations`` and the codec's ``Rows`` for them (or the exception).
    Runs on the transport's loop only.
    """

    def __init__(self, codec: Any, transport: Any, batch_size: int, wait_s: float = COALESCE_WAIT_S, parse: Any = None,
                 bisect: bool = False):
        self.codec, self.transport, self.batch_size, self.wait_s = codec, transport, batch_size, wait_s
        self.bisect = bisect  # on_error='skip': split a failing call's rows until the bad ones stand alone
        # parse(response, n, indices) -> Rows: the scorer's (the codec's, checked); indices name the rows in errors.
        self.parse = parse or (lambda response, n, indices: codec.parse(response, n))
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._pool: list[_Call] = []
        self._pooled = 0
        self._in_flight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._scheduled = False

    async def submit(self, conversations: list) -> tuple[list[list[int]], list[Any]]:
        if self._pid != os.getpid():  # forked: the parent's pool and timers belong to its loop
            self._reset()
        loop = asyncio.get_running_loop()
        call = _Call(conversations, loop.create_future())
        self._pool.append(call)
        self._pooled += len(conversations)
        if self._pooled >= self.batch_size:
            self._flush()
        elif self._in_flight == 0:
            if not self._scheduled:  # calls arriving in this turn of the loop go together
                self._scheduled = True
                loop.call_soon(self._flush)
        elif self._timer is None:
            self._timer = loop.call_later(self.wait_s, self._flush)
        return await call.future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._scheduled = False
        calls, self._pool, self._pooled = self._pool, [], 0
        if not calls:
            return
        owners = [(call, i) for call in calls for i in range(len(call.conversations))]
        conversations = [call.conversations[i] for call, i in owners]
        loop = asyncio.get_running_loop()
        for chunk in self.codec.chunks(conversations):
            self._in_flight += 1
            loop.create_task(self._send([owners[j] for j in chunk]))

    async def _send(self, members: list[tuple[_Call, int]]) -> None:
        try:
            result = await self._exchange(members)
            calls = list(dict.fromkeys(call for call, _ in members))
            if splits(result) and len(calls) > 1:
                # The failure may come from one call's rows: only that call may see it.
                await asyncio.gather(*(self._send_own([m for m in members if m[0] is call]) for call in calls))
                return
            if splits(result) and self.bisect and len(members) > 1:
                await self._send_own(members, result)
                return
            self._deliver(members, result)
        finally:
            self._in_flight -= 1
            if self._pool and self._in_flight == 0:
                self._flush()  # the answer came back: what gathered meanwhile goes now

    async def _send_own(self, members: list[tuple[_Call, int]], result: Any = None) -> None:
        """One call's rows in a request of their own; under on_error='skip', split until a failure
        that may be one row's stands alone (``result``: the answer already had for all of them)."""
        if not self.bisect:
            self._deliver(members, result if result is not None else await self._exchange(members))
            return
        for part, answer in await bisect(self._exchange, members, result):
            self._deliver(part, answer)

    async def _exchange(self, members: list[tuple[_Call, int]]) -> Any:
        """The rows' request sent and parsed: its Rows, or the exception (a rendering error too:
        it belongs to the call whose row caused it)."""
        calls = dict.fromkeys(call for call, _ in members)
        if len(calls) == 1:
            samples = describe_samples([i for _, i in members])
        else:
            samples = f"{len(members)} samples of {len(calls)} concurrent calls"
        try:
            request = self.codec.request([call.conversations[i] for call, i in members])
            indices = [i for _, i in members]
            return await self.transport.exchange(request, lambda response: self.parse(response, len(members), indices), samples)
        except Exception as error:  # noqa: BLE001: every call with rows in this request gets it
            return error

    @staticmethod
    def _deliver(members: list[tuple[_Call, int]], result: Any) -> None:
        """Hand each call its own rows of ``result`` (an exception goes to each as it is)."""
        by_call: dict[_Call, list[int]] = {}
        for position, (call, _) in enumerate(members):
            by_call.setdefault(call, []).append(position)
        for call, positions in by_call.items():
            indices = [members[p][1] for p in positions]
            call.deliver(indices, result if isinstance(result, BaseException) else _rows_at(result, positions))


def splits(result: Any) -> bool:
    """A failure that the request's own rows may have caused: a 4xx (not a key's or a route's), an unreadable answer, a
    rendering error, or an HTTP 500 after every retry (not an endpoint that is down or overloaded:
    splitting would only pay its retry budget again per part)."""
    if not isinstance(result, BaseException):
        return False
    status = getattr(result, "status", None)
    if status in WHOLE_REQUEST_STATUSES:
        return False
    return not getattr(result, "retryable", True) or status == 500


# 4xx answers that no row causes (a wrong key, a route or method the server lacks): every part would
# get the same answer, so splitting would only send ~2N requests and log each row's failure apart.
WHOLE_REQUEST_STATUSES = frozenset({401, 403, 404, 405, 407})


async def bisect(send: Any, rows: list, result: Any = None) -> list[tuple[list, Any]]:
    """``send(rows) -> result or exception``, split in halves (sent concurrently) while a part fails
    in a way one row may cause, until the failing rows stand alone; -> [(rows, result)] covering
    ``rows`` in order. ``result``: the answer already had for all of ``rows``.

    >>> class Refused(Exception): retryable = False  # a 4xx
    >>> async def send(rows): return Refused("bad") if 3 in rows else "ok"
    >>> [(rows, str(r)) for rows, r in asyncio.run(bisect(send, [0, 1, 2, 3]))]
    [([0, 1], 'ok'), ([2], 'ok'), ([3], 'bad')]
    """
    if result is None:
        result = await send(rows)
    if len(rows) == 1 or not splits(result):
        return [(rows, result)]
    half = len(rows) // 2
    first, second = await asyncio.gather(bisect(send, rows[:half]), bisect(send, rows[half:]))
    return first + second


def _rows_at(rows: Any, positions: list[int]) -> Any:
    """The codec's ``Rows`` cut down to ``positions`` (in order); all of them: the same object."""
    width = len(rows.values) if rows.values is not None else len(next(iter(rows.attributes.values()), []))
    if positions == list(range(width)):
        return rows
    return type(rows)(
        values=[rows.values[p] for p in positions] if rows.values is not None else None,
        attributes={name: [column[p] for p in positions] for name, column in rows.attributes.items()},
    )
