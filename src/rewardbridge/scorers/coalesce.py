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

Each call gets back exactly its own rows. A shared request that the endpoint refuses (a 4xx)
or answers unreadably is sent again as one request per call, so only the call whose rows
caused it sees the error; one that fails because the endpoint is down fails every call in it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from .transport import describe_samples

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

    def __init__(self, codec: Any, transport: Any, batch_size: int, wait_s: float = COALESCE_WAIT_S, parse: Any = None):
        self.codec, self.transport, self.batch_size, self.wait_s = codec, transport, batch_size, wait_s
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
            try:
                request = self.codec.request([call.conversations[i] for call, i in members])
            except Exception:  # noqa: BLE001: a rendering error belongs to the call whose row caused it
                await self._send_apart(members)
                return
            result = await self._exchange(request, members)
            if _is_own_failure(result) and len({call for call, _ in members}) > 1:
                # A 4xx or an unreadable answer may come from one call's rows: only that call may see it.
                await self._send_apart(members)
                return
            self._deliver(members, result)
        finally:
            self._in_flight -= 1
            if self._pool and self._in_flight == 0:
                self._flush()  # the answer came back: what gathered meanwhile goes now

    async def _send_apart(self, members: list[tuple[_Call, int]]) -> None:
        """A merged request that could not be built: each call's rows in a request of their own."""
        for call in dict.fromkeys(call for call, _ in members):
            own = [(c, i) for c, i in members if c is call]
            try:
                request = self.codec.request([call.conversations[i] for _, i in own])
            except Exception as error:  # noqa: BLE001: handed to the caller, raised there
                self._deliver(own, error)
                continue
            self._deliver(own, await self._exchange(request, own))

    async def _exchange(self, request: Any, members: list[tuple[_Call, int]]) -> Any:
        calls = dict.fromkeys(call for call, _ in members)
        if len(calls) == 1:
            samples = describe_samples([i for _, i in members])
        else:
            samples = f"{len(members)} samples of {len(calls)} concurrent calls"
        try:
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


def _is_own_failure(result: Any) -> bool:
    """A failure the request itself caused (not the endpoint being down or overloaded)."""
    return isinstance(result, BaseException) and not getattr(result, "retryable", True)


def _rows_at(rows: Any, positions: list[int]) -> Any:
    """The codec's ``Rows`` cut down to ``positions`` (in order); all of them: the same object."""
    width = len(rows.values) if rows.values is not None else len(next(iter(rows.attributes.values()), []))
    if positions == list(range(width)):
        return rows
    return type(rows)(
        values=[rows.values[p] for p in positions] if rows.values is not None else None,
        attributes={name: [column[p] for p in positions] for name, column in rows.attributes.items()},
    )
