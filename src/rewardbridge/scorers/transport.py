"""The HTTP transport every remote protocol shares: endpoints, concurrency, retries, failover.

A protocol codec (``protocols/<name>.py``) says what one request holds and how its answer
reads; this module sends it, once, in one place:

- one asyncio event loop on a background thread, so a sync caller (TRL, from any thread,
  with or without its own running loop) waits on ``run_coroutine_threadsafe(...).result()``;
- at most ``max_concurrency`` requests in flight;
- per-request ``timeout`` (the whole request, not each phase); up to ``max_retries``
  retries with exponential backoff and jitter (tenacity) on connection errors, timeouts,
  5xx and 429 (whose ``Retry-After`` is honoured), never on another 4xx or a malformed answer;
- endpoints tried round-robin (load spreading), the next one on each retry (failover), and
  one that just failed to connect or answer goes last in the rotation for a while;
- a request that still fails raises :class:`~rewardbridge.errors.RemoteError` naming the
  endpoint, the HTTP status and the samples. Never a made-up score.

The API key is read from the environment variable named by ``api_key_env`` when a request
is sent; it is never stored, so it cannot reach a repr, a pickle, a log line or an error
message (messages are scrubbed of it as well).
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError, RemoteError

# Default key variables per protocol (None: send no key unless api_key_env names one).
DEFAULT_KEY_ENV = {"nim": "NVIDIA_API_KEY", "rewardbridge": "REWARDBRIDGE_API_KEY", "vllm": "VLLM_API_KEY"}
MAX_BACKOFF_S = 30.0  # verl caps its backoff at 30 s (REFERENCE.md §3)
MAX_RETRY_AFTER_S = 300.0
DOWN_COOLDOWN_S = 5.0  # an endpoint that refused or timed out goes last in the rotation this long


@dataclass
class Request:
    """One HTTP request for a chunk of conversations: ``json`` or raw ``content`` (+ headers)."""

    path: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


class ProtocolError(Exception):
    """An answer that does not follow the wire format (not retried: it would say the same again)."""


class RetryableStatus(Exception):
    """A 5xx or 429 answer; ``retry_after`` in seconds when the server said."""

    def __init__(self, status: int, text: str, retry_after: float | None):
        super().__init__(f"HTTP {status}: {text}")
        self.status, self.retry_after = status, retry_after


class FinalStatus(Exception):
    """A 4xx other than 429: the request itself is wrong; retrying cannot help."""

    def __init__(self, status: int, text: str):
        super().__init__(f"HTTP {status}: {text}")
        self.status = status


class _TransportError(Exception):
    """A connection error or timeout (retried)."""


class TLSError(Exception):
    """An https handshake that failed (http spoken to an https URL, an untrusted certificate): not retried."""


def _is_tls_error(error: BaseException) -> bool:
    import ssl

    seen, depth = error, 0
    while seen is not None and depth < 10:
        if isinstance(seen, ssl.SSLError):
            return True
        seen, depth = seen.__cause__ or seen.__context__, depth + 1
    return "[SSL" in str(error)


def split_urls(source: str | Sequence[str]) -> list[str]:
    """One URL, several comma-separated, or a list -> a list of base URLs.

    >>> split_urls("http://a:8000/, http://b:8000")
    ['http://a:8000', 'http://b:8000']
    """
    items = source.split(",") if isinstance(source, str) else list(source)
    urls = [u.strip().rstrip("/") for u in items if u and u.strip()]
    if not urls:
        raise ConfigError(f"no endpoint URL in {source!r}; pass 'http://host:port' or several, comma-separated")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"endpoint {display_url(url)!r} is not an http(s)://host[:port] URL")
    return urls


def display_url(url: str) -> str:
    """The URL without any ``user:password@`` part, for messages.

    >>> display_url("https://me:secret@host:8000/v1")
    'https://host:8000/v1'
    """
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class EventLoopThread:
    """One event loop per process on a daemon thread; rebuilt after a fork."""

    _lock = threading.Lock()
    _instance: tuple[int, asyncio.AbstractEventLoop] | None = None

    @classmethod
    def loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._instance is None or cls._instance[0] != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="rewardbridge-remote", daemon=True).start()
                cls._instance = (os.getpid(), loop)
            return cls._instance[1]


class Transport:
    """Sends one protocol's requests to its endpoints (see the module docstring for the rules).

    Args:
        urls: one or more base URLs (``http://host:port``); load is spread over them.
        protocol: the protocol's name, for messages and its default key variable.
        options: :class:`~rewardbridge.options.RewardOptions` (timeout, max_retries,
            retry_wait, max_concurrency, api_key_env).
    """

    def __init__(self, urls: Sequence[str], protocol: str, options: Any):
        self.urls = list(urls)
        self.protocol = protocol
        self.timeout = float(options.timeout)
        self.max_retries = int(options.max_retries)
        self.max_concurrency = int(options.max_concurrency)
        self.retry_wait = float(options.retry_wait)
        self.api_key_env = options.api_key_env or DEFAULT_KEY_ENV.get(protocol)
        self._key_env_explicit = options.api_key_env is not None
        self._next_endpoint = itertools.count()
        self._down_until: dict[str, float] = {}  # endpoint -> when to try it first again
        self._client = None  # httpx.AsyncClient, made on the loop thread
        self._semaphore: asyncio.Semaphore | None = None
        self._pid = None
        self._metrics_lock = threading.Lock()
        self._retries = 0
        self._latencies_ms: list[float] = []

    def run(self, coroutine) -> Any:
        """Run ``coroutine`` on the process's transport loop and wait for it (from any thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, EventLoopThread.loop()).result()

    async def exchange(self, request: Request, parse: Callable[[Any], Any], indices: list[int]) -> Any:
        """Send ``request`` (retried, failed over) and ``parse`` its answer; RemoteError names
        the endpoint and the samples ``indices`` when it cannot be had."""
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

        self._ensure_client()
        start = self._pick_start()
        attempt_no = 0
        last_url = self.urls[start % len(self.urls)]
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((RetryableStatus, _TransportError)),
                stop=stop_after_attempt(self.max_retries + 1),
                wait=self._wait,
                reraise=True,
            ):
                with attempt:
                    # Failover: each retry goes to the next endpoint.
                    last_url = self.urls[(start + attempt_no) % len(self.urls)]
                    if attempt_no:
                        with self._metrics_lock:
                            self._retries += 1
                    attempt_no += 1
                    response = await self._send(last_url, request)
            return parse(response)
        except Exception as error:  # noqa: BLE001: every failure becomes one RemoteError
            raise self._remote_error(error, last_url, request.path, indices, attempt_no) from None

    def pop_metrics(self) -> dict[str, float]:
        """Retries and request latencies since the last call (``RewardFunction`` logs them)."""
        with self._metrics_lock:
            retries, latencies = self._retries, sorted(self._latencies_ms)
            self._retries, self._latencies_ms = 0, []
        metrics = {"retries": float(retries)}
        if latencies:
            metrics["latency_ms_p50"] = _percentile(latencies, 50)
            metrics["latency_ms_p95"] = _percentile(latencies, 95)
        return metrics

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self.run(self._client.aclose())
        self._client = None

    # -- on the loop thread -----------------------------------------------------------------

    def _ensure_client(self) -> None:
        if self._client is None or self._pid != os.getpid():
            import httpx

            limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
            self._client = httpx.AsyncClient(timeout=self.timeout, limits=limits)
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
            self._pid = os.getpid()

    async def _send(self, url: str, request: Request):
        import httpx

        headers = dict(request.headers)
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        async with self._semaphore:
            began = time.perf_counter()
            try:
                # httpx's timeout bounds each phase (connect, each read); wait_for bounds the whole request.
                response = await asyncio.wait_for(
                    self._client.post(url + request.path, json=request.json, content=request.content, headers=headers),
                    self.timeout,
                )
            except (httpx.TransportError, httpx.TimeoutException, asyncio.TimeoutError) as error:
                if _is_tls_error(error):  # retrying cannot change what the server speaks
                    raise TLSError(f"{type(error).__name__}: {error}") from None
                self._down_until[url] = time.monotonic() + DOWN_COOLDOWN_S
                if isinstance(error, (httpx.TimeoutException, asyncio.TimeoutError)):
                    raise _TransportError(f"no answer within timeout={self.timeout:g} s") from None
                raise _TransportError(f"{type(error).__name__}: {error}") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise RetryableStatus(status, _snippet(response), retry_after_seconds(response.headers.get("Retry-After")))
        if status >= 400:
            raise FinalStatus(status, _snippet(response))
        with self._metrics_lock:
            self._latencies_ms.append((time.perf_counter() - began) * 1000)
        return response

    def _pick_start(self) -> int:
        """Round-robin over endpoints, passing over those that just failed to connect or answer in time."""
        start = next(self._next_endpoint)
        now = time.monotonic()
        for offset in range(len(self.urls)):
            if self._down_until.get(self.urls[(start + offset) % len(self.urls)], 0.0) <= now:
                return start + offset
        return start  # all look down: try anyway, in turn

    def _wait(self, retry_state) -> float:
        """Exponential backoff with jitter; a server's Retry-After wins when it says more.

        A connection error or timeout fails over to the next endpoint at once while this
        round of endpoints is not used up: another endpoint need not wait for this one.
        """
        import random

        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, _TransportError) and retry_state.attempt_number % len(self.urls) != 0:
            return 0.0
        backoff = min(MAX_BACKOFF_S, self.retry_wait * 2 ** (retry_state.attempt_number - 1))
        wait = backoff / 2 + random.uniform(0, backoff / 2)
        if isinstance(error, RetryableStatus) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, MAX_RETRY_AFTER_S))
        return wait

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key and self._key_env_explicit:
            raise ConfigError(f"api_key_env={self.api_key_env!r}, but that environment variable is not set; set it to the key")
        return key or None

    def _remote_error(self, error: Exception, url: str, path: str, indices: list[int], attempts: int) -> Exception:
        if isinstance(error, ConfigError):
            return error
        samples = f"sample {indices[0]}" if len(indices) == 1 else f"samples {indices[0]}{' and ' if len(indices) == 2 else '-'}{indices[-1]}"
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
            if status in (404, 405):  # the route is not there: another protocol, or a URL that already names a route
                what += (f"; {path} is not a route of this server: check that it speaks protocol={self.protocol!r}, and that "
                         "the URL is the server's base (http://host:port)")
        else:
            what = f"could not be reached ({error})"
        tried = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts > 1 else ""
        message = f"{where} {what} for {samples}{tried}"
        if isinstance(error, (RetryableStatus, _TransportError)):
            message += "; raise timeout/max_retries, add endpoints, or pass on_error='skip'"
        return RemoteError(self._scrub(message))

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "***") if key else text


def _snippet(response, limit: int = 200) -> str:
    text = " ".join(response.text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])
