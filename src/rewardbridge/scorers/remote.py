"""Remote reward endpoints: a protocol's codec over the shared transport.

The codec (``protocols/<name>.py``, picked from ``protocols.MODULES``) says which
conversations share a request, what the request holds and how its answer reads; the
transport (``transport.py``) sends it, retries and fails over. A chunk that still fails
raises its :class:`~rewardbridge.errors.RemoteError`, or with ``on_error="skip"`` comes back
as NaN (None to TRL, counted in ``<name>/failed_frac``). Never a made-up score.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Sequence

from ..conversation import Conversation
from ..errors import RemoteError
from ..options import FLOAT32_MAX
from .base import Scores
from .exchange import ProtocolError
from .transport import Transport, display_url

logger = logging.getLogger(__name__)


class RemoteScorer:
    """Scores conversations through a reward endpoint speaking ``codec``'s wire protocol.

    Args:
        urls: one or more base URLs (``http://host:port``); load is spread over them.
        codec: the protocol's client side: ``chunks(conversations)``, ``request(chunk)``,
            ``parse(response, n)`` (see ``protocols/nim.py`` for one).
        options: :class:`~rewardbridge.options.RewardOptions` (timeout, retries, on_error, ...).
    """

    def __init__(self, urls: Sequence[str], codec: Any, options: Any):
        self.codec = codec
        self.protocol = codec.protocol
        self.transport = Transport(urls, codec.protocol, options)
        self.on_error = options.on_error
        self.attributes = tuple(options.attributes or ())
        # Overlapping calls (one sample each from many threads) share requests where the protocol batches.
        self.coalescer = None
        if getattr(codec, "batches", True) and options.request_batch_size > 1:
            from .coalesce import Coalescer

            self.coalescer = Coalescer(codec, self.transport, options.request_batch_size, parse=self._parse,
                                       bisect=self.on_error == "skip")

    def __repr__(self) -> str:
        return f"RemoteScorer({self.protocol!r}, {[display_url(u) for u in self.transport.urls]})"

    def __getstate__(self):
        raise TypeError("a RemoteScorer does not pickle; pickle the RewardFunction (it carries the URL and options)")

    def score(self, conversations: Sequence[Conversation]) -> Scores:
        conversations = list(conversations)
        n = len(conversations)
        if n == 0:
            import torch

            return Scores(values=torch.empty(0))
        if self.coalescer is not None:
            chunks, results = self.transport.run(self.coalescer.submit(conversations))
        else:
            chunks, results = self.transport.run(self._score_chunks(conversations, self.codec.chunks(conversations)))
        return self._assemble(n, chunks, results)

    def pop_metrics(self) -> dict[str, float]:
        """Retries and request latencies since the last call (``RewardFunction`` logs them)."""
        return self.transport.pop_metrics()

    def close(self) -> None:
        self.transport.close()

    async def _score_chunks(self, conversations, chunks) -> tuple[list, list]:
        """Each chunk sent; under on_error='skip' one that fails in a way one row may cause is split
        (``coalesce.bisect``) so only the failing rows come back None; -> (chunks, results)."""
        from .coalesce import bisect

        async def send(chunk, request=None):
            try:
                request = request or self.codec.request([conversations[i] for i in chunk])
                return await self.transport.exchange(request, lambda response: self._parse(response, len(chunk), chunk), chunk)
            except Exception as error:  # noqa: BLE001: handed to _assemble, which raises or skips it
                return error

        # A rendering error is the caller's, not the endpoint's: raised here, before anything is sent.
        requests = [self.codec.request([conversations[i] for i in chunk]) for chunk in chunks]
        answers = await asyncio.gather(*(send(chunk, request) for chunk, request in zip(chunks, requests)))
        if self.on_error == "skip":
            parts = [p for ps in await asyncio.gather(*(bisect(send, c, a) for c, a in zip(chunks, answers))) for p in ps]
        else:
            parts = list(zip(chunks, answers))
        return [rows for rows, _ in parts], [result for _, result in parts]

    def _parse(self, response: Any, n: int, chunk: list[int]) -> Any:
        """The codec's rows of one answer, every score a finite number (``finite_rows``)."""
        return finite_rows(self.codec.parse(response, n), chunk)

    def _assemble(self, n: int, chunks: list[list[int]], results: list) -> Scores:
        import torch  # here, not at the top: building a remote reward imports no torch

        # Filled as lists and turned into tensors once: a tensor op per chunk would cost more
        # than the request itself at one conversation per request.
        values = [math.nan] * n
        attributes: dict[str, list[float]] = {}
        any_values = False
        for chunk, result in zip(chunks, results):
            if isinstance(result, BaseException):
                if self.on_error == "raise" or not isinstance(result, RemoteError):
                    raise result
                logger.warning("%s; scored as failed (on_error='skip')", result)
                continue
            if result.values is not None:
                for i, value in zip(chunk, result.values):
                    values[i] = value
                any_values = True
            for name, column in result.attributes.items():
                into = attributes.setdefault(name, [math.nan] * n)
                for i, value in zip(chunk, column):
                    into[i] = value
        if self.attributes and (attributes or not any_values):
            # Failed rows stay NaN in every named attribute, so weights still combine (to NaN).
            for name in self.attributes:
                attributes.setdefault(name, [math.nan] * n)
        named = {name: torch.tensor(column, dtype=torch.float32) for name, column in attributes.items()}
        if not any_values and attributes:
            return Scores(values=None, attributes=named)
        return Scores(values=torch.tensor(values, dtype=torch.float32), attributes=named)


def finite_rows(rows, chunk: list[int]):
    """An answer's scores must be finite numbers: NaN, Infinity or 1e400 (JSON reads it as inf) is a
    malformed answer, a failure (raised, or None under on_error='skip'), never a reward; so is a number
    beyond float32's range (1e308), which the scores are held in and would turn into +-inf."""
    columns = ([("reward", rows.values)] if rows.values is not None else []) + list(rows.attributes.items())
    for name, column in columns:
        if all(-FLOAT32_MAX <= value <= FLOAT32_MAX for value in column):  # the common case: NaN fails it too
            continue
        for k, value in enumerate(column):
            if not math.isfinite(value):
                raise ProtocolError(f"the answer's {name} for sample {chunk[k]} is {value}, not a finite number")
            if abs(value) > FLOAT32_MAX:
                raise ProtocolError(f"the answer's {name} for sample {chunk[k]} is {value:g}, beyond float32's range "
                                    f"(+-{FLOAT32_MAX:.2g}), in which rewards are held: not a finite reward")
    return rows


def load_remote_scorer(resolved) -> RemoteScorer:
    """A :class:`RemoteScorer` for a resolved URL source (see ``resolve.py``)."""
    from ..protocols import protocol_module

    codec = protocol_module(resolved.options.protocol).CLIENT(resolved.options, renderer=resolved.renderer)
    return RemoteScorer(resolved.urls, codec, resolved.options)


def worst_case_seconds(options: Any) -> float:
    """The longest one request to a remote reward can take before it is given up on, in seconds.

    The transport retries until ``retry_budget`` seconds have passed since the first attempt (a
    retry whose wait would pass the budget is not made), so the last attempt starts within the
    budget and lasts at most ``timeout``: ``retry_budget + timeout``. With ``max_retries`` set it
    also stops after ``max_retries + 1`` attempts of at most ``timeout`` each, with waits between
    them of at most the backoff (``retry_wait`` doubling, capped at 30 s) or a server's
    ``Retry-After`` (capped at 300 s), whichever bound comes first. A generative judge asks again
    ``parse_retries`` times when an answer holds nothing to read, each a full exchange. A
    multi-process trainer's ranks wait for the slowest one in a collective, so this must stay
    under the collective timeout (transformers' ``ddp_timeout``, 1800 s by default). Requests
    beyond ``max_concurrency`` on one rank queue behind the others and add to it.

    >>> from types import SimpleNamespace as Options
    >>> worst_case_seconds(Options(timeout=60.0, retry_budget=120.0, max_retries=None, retry_wait=0.5, protocol="nim"))
    180.0
    >>> worst_case_seconds(Options(timeout=60.0, retry_budget=900.0, max_retries=1, retry_wait=0.5, protocol="nim"))  # 60 + 300 + 60
    420.0
    """
    from ..judge_options import JUDGE_PROTOCOLS
    from .transport import DEFAULT_RETRY_BUDGET_S, MAX_BACKOFF_S, MAX_RETRY_AFTER_S

    exchange = getattr(options, "retry_budget", DEFAULT_RETRY_BUDGET_S) + options.timeout
    if options.max_retries is not None:
        waits = [max(min(MAX_BACKOFF_S, options.retry_wait * 2**n), MAX_RETRY_AFTER_S) for n in range(options.max_retries)]
        exchange = min(exchange, (options.max_retries + 1) * options.timeout + sum(waits))
    asks = options.parse_retries + 1 if options.protocol in JUDGE_PROTOCOLS else 1
    return float(asks * exchange)
