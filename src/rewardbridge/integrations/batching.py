"""Micro-batches out of one-sample calls: verl and OpenRLHF ask for one reward at a time.

Both engines call the reward function once per sample, many calls at once (verl: coroutines
gathered on one event loop; OpenRLHF: ``asyncio.to_thread`` per sample). Running the reward
model once per sample would waste it, so calls that arrive within ``wait_s`` of each other
(or while the previous batch is being scored) go to the scorer together, up to ``max_batch``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, Sequence

ScoreFn = Callable[[Sequence[Any]], Sequence[Any]]  # items (B,) -> results (B,)


class AsyncBatcher:
    """``await batcher.submit(item)`` from many coroutines on one loop -> one ``score_fn`` call per batch.

    ``score_fn`` runs in a worker thread (the loop keeps collecting the next batch) and
    one batch at a time.

    >>> calls = []
    >>> batcher = AsyncBatcher(lambda items: calls.append(list(items)) or [x * 2 for x in items])
    >>> async def main():
    ...     return await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    >>> asyncio.run(main()), calls
    ([0, 2, 4, 6, 8], [[0, 1, 2, 3, 4]])
    """

    def __init__(self, score_fn: ScoreFn, max_batch: int = 64, wait_s: float = 0.02):
        self.score_fn, self.max_batch, self.wait_s = score_fn, max_batch, wait_s
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._lock: asyncio.Lock | None = None

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        if self._pending:  # more than max_batch arrived: the rest wait for their own window
            self._timer = asyncio.get_running_loop().call_later(self.wait_s, self._flush)
        if batch:
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one scorer call at a time; newcomers gather meanwhile
            try:
                results = await asyncio.to_thread(self.score_fn, [item for item, _ in batch])
            except Exception as error:  # every caller in the batch sees the scorer's error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)


class ThreadBatcher:
    """``batcher.submit(item)`` from many threads -> one ``score_fn`` call per batch.

    The first caller with no batch in flight leads: it waits ``wait_s`` for company, scores
    what has arrived (``max_batch`` at a time) until nothing is left, and hands each caller
    its result.

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> calls = []
    >>> batcher = ThreadBatcher(lambda items: calls.append(len(items)) or [x + 1 for x in items], wait_s=0.2)
    >>> with ThreadPoolExecutor(4) as pool:
    ...     list(pool.map(batcher.submit, range(4)))
    [1, 2, 3, 4]
    >>> calls
    [4]
    """

    def __init__(self, score_fn: ScoreFn, max_batch: int = 64, wait_s: float = 0.02):
        self.score_fn, self.max_batch, self.wait_s = score_fn, max_batch, wait_s
        self._lock = threading.Lock()
        self._pending: list[_Slot] = []
        self._leading = False

    def submit(self, item: Any) -> Any:
        slot = _Slot(item)
        with self._lock:
            self._pending.append(slot)
            lead = not self._leading
            self._leading = True
        if lead:
            time.sleep(self.wait_s)
            while True:
                with self._lock:
                    batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
                    if not batch:
                        self._leading = False
                        break
                try:
                    results = self.score_fn([s.item for s in batch])
                    for s, result in zip(batch, results):
                        s.result = result
                except Exception as error:  # every caller in the batch sees the scorer's error
                    for s in batch:
                        s.error = error
                for s in batch:
                    s.done.set()
        slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return slot.result


class _Slot:
    def __init__(self, item: Any):
        self.item, self.result, self.error = item, None, None
        self.done = threading.Event()
