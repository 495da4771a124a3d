"""The HTTP transport every remote protocol shares: endpoints, concurrency, retries, failover.

A protocol codec (``protocols/<name>.py``) says what one request holds and how its answer
reads; this module sends it, once, in one place:

- one asyncio event loop on a background thread, so a sync caller (TRL, from any thread,
  with or without its own running loop) waits on ``run_coroutine_threadsafe(...).result()``;
- HTTP by aiohttp: one ``ClientSession`` per loop, keep-alive connections, at most
  ``max_concurrency`` requests in flight (chosen on evidence: ``benchmarks/client.py``
  measures it against a plain aiohttp loop and against httpx, whose connection pool costs
  grow with connections x requests in flight, encode/httpcore#1035);
- per-request ``timeout`` (the whole request, not each phase); retries with exponential
  backoff and jitter on connection errors, timeouts, 5xx and 429 (whose ``Retry-After`` is
  honoured), never on another 4xx or a malformed answer, until ``max_retries`` retries
  (None: no count) or ``retry_budget`` seconds since the first attempt, whichever comes first;
- endpoints tried round-robin (load spreading), the next one on each retry (failover); one
  that refused a connection goes last in the rotation for ``DOWN_COOLDOWN_S``, one that hung
  for twice ``timeout`` (a hung endpoint costs a full timeout each time it is tried), doubled
  each time it hangs again until it answers;
- a request that still fails raises :class:`~rewardbridge.errors.RemoteError` naming the
  endpoint, the HTTP status and the samples. Never a made-up score.

The API key is read from the environment variable named by ``api_key_env`` once per call
(``run``), by its first request; it is held only while the call lasts, never in a repr, a
pickle, a log line or an error message (messages are scrubbed of it as well).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import os
import random
import threading
import time
from typing import Any, Callable, Sequence

from ..errors import ConfigError, RemoteError
from .api_key import ApiKey
from .event_loop import EventLoopThread, current_pid, env_proxy, watch_session
# What one exchange is and how it fails; the codecs import them from here (their first home).
from .exchange import (  # noqa: F401
    FinalStatus, ProtocolError, Request, Response, RetryableStatus, TLSError, _is_tls_error, _TransportError,
    describe_samples, retry_after_seconds,
)
from .urls import check_base_url, display_url, split_urls  # noqa: F401 (their old home)

# Default key variables per protocol (None: send no key unless api_key_env names one).
DEFAULT_KEY_ENV = {"nim": "NVIDIA_API_KEY", "rewardbridge": "REWARDBRIDGE_API_KEY", "vllm": "VLLM_API_KEY"}
MAX_BACKOFF_S = 30.0  # verl caps its backoff at 30 s (REFERENCE.md §3)
MAX_RETRY_AFTER_S = 300.0
DOWN_COOLDOWN_S = 5.0  # an endpoint that refused a connection goes last in the rotation this long
HUNG_COOLDOWN_TIMEOUTS = 2.0  # one that hung: this many timeouts (it costs a full timeout per try)...
MAX_HUNG_COOLDOWN_S = 600.0  # ...doubling each time it hangs again (reset when it answers), up to this
DEFAULT_RETRY_BUDGET_S = 120.0
KEEPALIVE_S = 4.0  # seconds an idle connection is kept (uvicorn closes them after 5)

logger = logging.getLogger(__name__)


class Transport:
    """Sends one protocol's requests to its endpoints (see the module docstring for the rules).

    Args:
        urls: one or more base URLs (``http://host:port``); load is spread over them.
        protocol: the protocol's name, for messages and its default key variable.
        options: :class:`~rewardbridge.options.RewardOptions` (timeout, max_retries,
            retry_budget, retry_wait, max_concurrency, api_key_env).
    """

    give_up_hint = "raise retry_budget/timeout, add endpoints, or pass on_error='skip'"  # an engine says its own

    def __init__(self, urls: Sequence[str], protocol: str, options: Any):
        self.urls = list(urls)
        self.protocol = protocol
        self.timeout = float(options.timeout)
        self.max_retries = None if options.max_retries is None else int(options.max_retries)
        self.retry_budget = float(getattr(options, "retry_budget", DEFAULT_RETRY_BUDGET_S))
        self.max_concurrency = int(options.max_concurrency)
        self.retry_wait = float(options.retry_wait)
        self.api_key_env = options.api_key_env or DEFAULT_KEY_ENV.get(protocol)
        self.key = ApiKey(self.api_key_env, explicit=options.api_key_env is not None)
        self._next_endpoint = itertools.count()
        self._down_until: dict[str, float] = {}  # endpoint -> when to try it first again
        self._hangs: dict[str, int] = {}  # endpoint -> timeouts in a row (its cool-down doubles with each)
        self._session = None  # aiohttp.ClientSession, made on the loop thread
        self._proxies: dict[str, tuple[Any, Any]] = {}
        self._semaphore: asyncio.Semaphore | None = None
        self._pid = None
        self._metrics_lock = threading.Lock()
        self._retries = 0
        self._latencies_ms = collections.deque(maxlen=65536)  # bounded: a reward called without log_metric

    def run(self, coroutine) -> Any:
        """Run ``coroutine`` on the process's transport loop, its requests sharing one read of the key (any thread)."""
        self.key.begin_call()
        try:
            return asyncio.run_coroutine_threadsafe(coroutine, EventLoopThread.loop()).result()
        finally:
            self.key.end_call()

    async def exchange(self, request: Request, parse: Callable[[Any], Any], indices: list[int] | str) -> Any:
        """Send ``request`` (retried, failed over) and ``parse`` its :class:`Response`; RemoteError
        names the endpoint and the samples when it cannot be had: ``indices``, or a description
        of them (``"12 samples of 3 concurrent calls"``)."""
        self._ensure_session()
        start = next(self._next_endpoint)
        began = time.monotonic()
        attempt = 0
        while True:
            url = self._endpoint(start, attempt)
            attempt += 1
            try:
                return parse(await self._send(url, request))
            except (RetryableStatus, _TransportError) as error:
                wait = self._wait(error, attempt)
                spent = time.monotonic() - began
                if (self.max_retries is not None and attempt > self.max_retries) or spent + wait > self.retry_budget:
                    raise self._remote_error(error, url, request.path, indices, attempt, spent, wait) from None
                with self._metrics_lock:
                    self._retries += 1
                if spent + wait >= 5.0:  # a longer outage: say so while it lasts, not only at the end
                    logger.warning("%s endpoint %s: %s; retrying in %.1f s (%.0f of retry_budget=%g s spent)",
                                   self.protocol, display_url(url), self._scrub(str(error)), wait, spent, self.retry_budget)
                if wait > 0:
                    await asyncio.sleep(wait)
            except Exception as error:  # noqa: BLE001: every other failure becomes one RemoteError
                raise self._remote_error(error, url, request.path, indices, attempt, time.monotonic() - began) from None

    def pop_metrics(self) -> dict[str, float]:
        """Retries and request latencies since the last call (``RewardFunction`` logs them)."""
        with self._metrics_lock:
            retries, self._retries = self._retries, 0
            latencies, self._latencies_ms = self._latencies_ms, collections.deque(maxlen=65536)
        latencies = sorted(latencies)  # a copy: an append racing the swap lands in the old list, never mid-sort
        metrics = {"retries": float(retries)}
        if latencies:
            metrics["latency_ms_p50"] = _percentile(latencies, 50)
            metrics["latency_ms_p95"] = _percentile(latencies, 95)
        return metrics

    def close(self) -> None:
        if self._session is not None and self._pid == os.getpid():
            self.run(self._session.close())
        self._session = None

    def cooldown_s(self, error: Exception, hangs: int = 1) -> float:
        """How long an endpoint that failed this way goes last in the rotation: a hung one must
        stay out longer than the timeout it costs, or each try pays that timeout again; one that
        hung ``hangs`` times in a row without answering stays out twice as long each time.

        >>> from types import SimpleNamespace as Options
        >>> t = Transport(["http://a:1"], "nim", Options(timeout=3, max_retries=None, max_concurrency=1, retry_wait=1, api_key_env=None))
        >>> [t.cooldown_s(_TransportError("hung", timed_out=True), k) for k in (1, 2, 3)], t.cooldown_s(_TransportError("refused"))
        ([6.0, 12.0, 24.0], 5.0)
        """
        if isinstance(error, _TransportError) and error.timed_out:
            first = max(DOWN_COOLDOWN_S, HUNG_COOLDOWN_TIMEOUTS * self.timeout)
            return min(MAX_HUNG_COOLDOWN_S, first * 2 ** (max(1, hangs) - 1))
        return DOWN_COOLDOWN_S

    # -- on the loop thread -----------------------------------------------------------------

    def _ensure_session(self) -> None:
        if self._session is None or self._pid != current_pid():
            import aiohttp

            # limit=max_concurrency: the pool never makes a request wait that the semaphore let through.
            # keepalive_timeout under uvicorn's 5 s: an idle connection is dropped here before the server
            # drops it, so a request never goes out on a socket the server is closing.
            connector = aiohttp.TCPConnector(limit=self.max_concurrency, limit_per_host=0, keepalive_timeout=KEEPALIVE_S)
            # Proxies from the environment (HTTP(S)_PROXY, NO_PROXY), read once per endpoint: aiohttp's
            # trust_env=True would look them up (and .netrc) in a thread, twice per request.
            self._proxies = {url: env_proxy(url) for url in self.urls}
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout))
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
            # Looked up once: an import statement per request costs as much as a header.
            self._errors = (aiohttp.ClientSSLError, (aiohttp.ClientError, asyncio.TimeoutError, OSError))
            self._payload = aiohttp.BytesPayload
            self._pid = current_pid()
            watch_session(self, self._session)  # closed when this transport is dropped, or at exit

    async def _send(self, url: str, request: Request) -> Response:
        tls_error, transport_errors = self._errors
        key = self.key.read()
        headers = {**(request.headers or {}), "Authorization": f"Bearer {key}"} if key else request.headers
        # aiohttp's fast paths: json= serializes and sets Content-Type, so does a typed payload; no headers skips merging.
        data = None if request.json is not None else request.content or b""
        data = self._payload(data, content_type=request.content_type) if request.content_type and data is not None else data
        async with self._semaphore:
            began = time.perf_counter()
            try:
                # The session's ClientTimeout(total=timeout) bounds the whole request, connect to last byte.
                proxy, proxy_auth = self._proxies[url]
                async with self._session.post(url + request.path, json=request.json, data=data, headers=headers or None,
                                              proxy=proxy, proxy_auth=proxy_auth) as answer:
                    response = Response(answer.status, answer.headers, await answer.read())
            except tls_error as error:  # retrying cannot change what the server speaks
                raise TLSError(f"{type(error).__name__}: {error}") from None
            except transport_errors as error:
                if _is_tls_error(error):
                    raise TLSError(f"{type(error).__name__}: {error}") from None
                timed_out = isinstance(error, asyncio.TimeoutError)
                failure = _TransportError(
                    f"no answer within timeout={self.timeout:g} s" if timed_out else f"{type(error).__name__}: {error}", timed_out,
                )
                hangs = self._hangs[url] = self._hangs.get(url, 0) + 1 if timed_out else 0
                self._down_until[url] = time.monotonic() + self.cooldown_s(failure, hangs)
                raise failure from None
        if self._hangs and self._hangs.get(url):
            self._hangs[url] = 0  # it answers again: a later hang starts from the first cool-down
        status = response.status_code
        if status == 429 or status >= 500:
            raise RetryableStatus(status, _snippet(response), retry_after_seconds(response.headers.get("Retry-After")))
        if status >= 400:
            raise FinalStatus(status, _snippet(response))
        self._latencies_ms.append((time.perf_counter() - began) * 1000)  # deque.append is atomic: no lock per request
        return response

    def _endpoint(self, start: int, attempt: int) -> str:
        """Round-robin from ``start``, one further per attempt, passing over endpoints in cool-down."""
        n = len(self.urls)
        if n == 1:
            return self.urls[0]
        now = time.monotonic()
        for offset in range(n):
            url = self.urls[(start + attempt + offset) % n]
            if self._down_until.get(url, 0.0) <= now:
                return url
        return self.urls[(start + attempt) % n]  # all look down: try anyway, in turn

    def _wait(self, error: Exception, attempt: int) -> float:
        """Exponential backoff with jitter; a server's Retry-After wins when it says one, shorter or
        longer (a server back from a restart says ``Retry-After: 1`` while the backoff has grown).

        A connection error or timeout fails over to the next endpoint at once while this
        round of endpoints is not used up: another endpoint need not wait for this one.
        """
        if isinstance(error, _TransportError) and attempt % len(self.urls) != 0:
            return 0.0
        backoff = min(MAX_BACKOFF_S, self.retry_wait * 2 ** (attempt - 1))
        wait = backoff / 2 + random.uniform(0, backoff / 2)
        if isinstance(error, RetryableStatus) and error.retry_after is not None:
            wait = min(error.retry_after, MAX_RETRY_AFTER_S)
        return wait

    def _remote_error(self, error: Exception, url: str, path: str, indices: list[int] | str, attempts: int, spent: float,
                      wait: float = 0.0) -> Exception:
        if isinstance(error, ConfigError):
            return error
        samples = indices if isinstance(indices, str) else describe_samples(indices)
        status = getattr(error, "status", None)
        where = f"{self.protocol} endpoint {display_url(url)}{path}"
        if isinstance(error, ProtocolError):
            what = f"answered in a way rewardbridge cannot read ({error})"
        elif isinstance(error, TLSError):
            what = f"could not make an https (TLS) connection ({error})"
            if "WRONG_VERSION_NUMBER" in str(error) or "record layer" in str(error):
                what += f"; the server speaks plain http: use {display_url(url).replace('https://', 'http://', 1)}"
        elif status is not None:
            what = f"answered HTTP {status} ({error})"
            if status in (401, 403):
                what += f"; check the key in the environment variable {self.api_key_env or '(none: set api_key_env)'}"
            if status == 404 and any(w in str(error).lower() for w in ("unknown model", "does not exist", "model not found")):
                # The route is there; the body's model is not served (rewardbridge's, vLLM's and NIM's wordings)
                what += "; check model_name= (the name the server serves; rewardbridge serve --model-name sets it)"
            elif status in (404, 405):  # the route is not there: another protocol, or a URL that already names a route
                what += (f"; {path} is not a route of this server: check that it speaks protocol={self.protocol!r}, and that "
                         "the URL is the server's base (http://host:port)")
        else:
            what = f"could not be reached ({error})"
        message = f"{where} {what} for {samples}" + (f" after {attempts} attempts over {spent:.1f} s" if attempts > 1 else "")
        if isinstance(error, (RetryableStatus, _TransportError)):
            asked = getattr(error, "retry_after", None)
            if self.max_retries is not None and attempts > self.max_retries:
                message += f"; it gave up at max_retries={self.max_retries}: {self.give_up_hint}"
            elif asked is not None and wait >= min(asked, MAX_RETRY_AFTER_S) and spent + wait > self.retry_budget:
                message += (f"; the server asked to wait {asked:g} s (Retry-After) before retrying, beyond what is left of "
                            f"retry_budget={self.retry_budget:g} s ({max(0.0, self.retry_budget - spent):.1f} s): raise retry_budget "
                            f"to wait that long; else {self.give_up_hint}")
            else:
                message += f"; it gave up at retry_budget={self.retry_budget:g} s: {self.give_up_hint}"
        remote = RemoteError(self._scrub(message))
        # The endpoint's trouble (down, overloaded) or this request's (4xx, an unreadable answer):
        # the coalescer re-sends a shared request's calls apart only for the latter.
        remote.retryable = isinstance(error, (RetryableStatus, _TransportError))
        remote.status = status  # a final HTTP 500 may be one row's doing: the coalescer splits on it too
        return remote

    def _scrub(self, text: str) -> str:
        return self.key.scrub(text)


def _snippet(response: Response, limit: int = 200) -> str:
    text = " ".join(response.text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])
