"""Dynamic batching: concurrent requests coalesced into one scorer call, each answered with its own rows."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..scorers.base import Scores


def slice_scores(scores: Scores, start: int, stop: int) -> Scores:
    return Scores(
        values=scores.values[start:stop] if scores.values is not None else None,
        attributes={name: column[start:stop] for name, column in scores.attributes.items()},
    )


@dataclass
class _Pending:
    items: list
    future: asyncio.Future


class Batcher:
    """Dynamic batching: requests queued per kind are coalesced into one scorer call.

    A batch closes when it holds ``max_batch_size`` conversations or ``max_wait_s`` after
    its first request arrived; a request bigger than ``max_batch_size`` is scored alone.
    Scoring runs on one worker thread, so batches never overlap (ZeRO-3 ranks stay in step).
    """

    def __init__(self, score, max_batch_size: int, max_wait_s: float, on_batch=None):
        self.score, self.max_batch_size, self.max_wait_s = score, max_batch_size, max_wait_s
        self.on_batch = on_batch or (lambda n: None)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewardbridge-score")
        self.queues: dict[str, asyncio.Queue] = {}
        self.workers: list[asyncio.Task] = []

    async def submit(self, kind: str, items: list) -> Scores:
        if kind not in self.queues:
            self.queues[kind] = asyncio.Queue()
            self.workers.append(asyncio.get_running_loop().create_task(self._work(kind)))
        future = asyncio.get_running_loop().create_future()
        await self.queues[kind].put(_Pending(items, future))
        return await future

    async def _work(self, kind: str) -> None:
        queue, carry = self.queues[kind], None
        loop = asyncio.get_running_loop()
        while True:
            first = carry or await queue.get()
            carry, batch, size = None, [first], len(first.items)
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch_size:
                remaining = deadline - loop.time()
                try:
                    nxt = queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(queue.get(), remaining)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if size + len(nxt.items) > self.max_batch_size:
                    carry = nxt  # opens the next batch
                    break
                batch.append(nxt)
                size += len(nxt.items)
            items = [item for pending in batch for item in pending.items]
            self.on_batch(len(items))
            try:
                scores = await loop.run_in_executor(self.executor, self.score, kind, items)
            except Exception as error:  # every request of the batch gets the error
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            offset = 0
            for pending in batch:
                n = len(pending.items)
                if not pending.future.done():
                    pending.future.set_result(slice_scores(scores, offset, offset + n))
                offset += n
