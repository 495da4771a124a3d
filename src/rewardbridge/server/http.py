"""HTTP plumbing for the server as a pure ASGI app: routing, bounded body reads, answers, and a
header read timeout for uvicorn's connections.

No web framework sits in the request path: the routes are framework-agnostic handlers
(``protocols.base.Route``), so routing is a dict lookup for fixed paths and a few regular
expressions for KServe's templated ones, and an answer is two ``send`` calls.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from typing import Any, Callable, Iterable

from ..protocols.base import Answer, HTTPError

JSON = [(b"content-type", b"application/json")]


class ClientGone(Exception):
    """The client closed the connection before its request was answered."""


class Router:
    """(method, path) -> (handler, path parameters, metric label), from ``Route`` entries.

    A fixed path's label is the path itself; a templated one's is its template, so metrics
    never carry a client-chosen path.
    """

    def __init__(self, routes: Iterable[Any]):
        self.fixed: dict[str, dict[str, Callable]] = {}
        self.templated: list[tuple[re.Pattern, str, dict[str, Callable]]] = []
        for route in routes:
            if "{" not in route.path:
                self.fixed.setdefault(route.path, {})[route.method] = route.handler
                continue
            pattern = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(route.path)) + "$")
            for _, template, methods in self.templated:
                if template == route.path:
                    methods[route.method] = route.handler
                    break
            else:
                self.templated.append((pattern, route.path, {route.method: route.handler}))

    def table(self) -> list[tuple[str, set[str]]]:
        """(path or template, methods) for every route served."""
        return [(path, set(methods)) for path, methods in self.fixed.items()] + [
            (template, set(methods)) for _, template, methods in self.templated]

    def match(self, method: str, path: str) -> tuple[Callable, dict[str, str], str]:
        methods, params, label = self.fixed.get(path), {}, path
        if methods is None:
            for pattern, template, candidates in self.templated:
                found = pattern.match(path)
                if found:
                    methods, params, label = candidates, found.groupdict(), template
                    break
        if methods is None:
            raise HTTPError(404, f"no route {path!r}; see the routes in docs/remote-and-serve.md")
        handler = methods.get(method)
        if handler is None:
            raise HTTPError(405, f"{path} takes {' or '.join(sorted(methods))}, not {method}", {"Allow": ", ".join(sorted(methods))})
        return handler, params, label


class BodyBudget:
    """Request body bytes held at once over all connections (``--max-body-bytes-in-flight``):
    without it, many connections each sending most of a maximal body grow the server's memory
    until ``--read-timeout``. ``used`` is what the requests being read or answered hold now."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise HTTPError(503, f"the server holds {self.used} bytes of request bodies, and this one would pass "
                                 f"--max-body-bytes-in-flight {self.limit}; retry shortly", {"Retry-After": "1"})
        self.used += n


async def read_body(receive: Callable, limit: int, timeout_s: float, declared: int | None, budget: BodyBudget | None = None,
                    held: list[int] | None = None) -> bytes:
    """The request body, refused with 413 the moment it passes ``limit`` bytes (chunked bodies
    carry no Content-Length, so the limit holds while reading, not after), with 408 when it
    has not arrived ``timeout_s`` seconds after the headers, and with 503 when ``budget`` (all
    connections' bodies) is spent; ``held[0]`` counts the bytes taken from it (the caller gives
    them back when the request is answered)."""
    if declared is not None and declared > limit:
        raise HTTPError(413, f"request body has {declared} bytes > the limit {limit}; raise --max-body-bytes")
    chunks, size = [], 0
    try:
        async with _deadline(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise HTTPError(413, f"request body passed the limit of {limit} bytes while being read; raise --max-body-bytes")
                if budget is not None and chunk:
                    budget.take(len(chunk))
                    held[0] += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except (TimeoutError, asyncio.TimeoutError):
        raise HTTPError(408, f"the request body did not arrive within {timeout_s:g} s of its headers; raise --read-timeout") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _deadline(seconds: float):
    if sys.version_info >= (3, 11):
        return asyncio.timeout(seconds)
    return _WaitForDeadline(seconds)  # pragma: no cover (Python 3.10)


class _WaitForDeadline:
    """``asyncio.timeout`` for Python 3.10: cancels the task when the deadline passes."""

    def __init__(self, seconds: float):
        self.seconds, self.handle, self.fired = seconds, None, False

    async def __aenter__(self):
        task = asyncio.current_task()
        self.handle = asyncio.get_running_loop().call_later(self.seconds, self._fire, task)

    def _fire(self, task):
        self.fired = True
        task.cancel()

    async def __aexit__(self, kind, error, trace):
        self.handle.cancel()
        if self.fired and kind is asyncio.CancelledError:
            raise asyncio.TimeoutError from None


def error_answer(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    """The JSON error body every route answers with: ``{"error": {"message", "type", "code"}}``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()
    return Answer(body, status, {"Content-Type": "application/json", **(headers or {})})


async def send_answer(send: Callable, answer: Answer, close: bool = False) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()]
    headers.append((b"content-length", str(len(answer.body)).encode()))
    if close:  # the rest of the body is not read: the connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


async def send_json(send: Callable, data: Any) -> None:
    body = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [*JSON, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def guarded_http_protocol(timeout_s: float):
    """uvicorn's httptools protocol with a header read timeout: a connection whose request line
    and headers have not all arrived ``timeout_s`` after it opened (or after its last answer)
    is closed. Slow senders (slowloris) cannot hold connections open; None without httptools."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self):
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same time

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def _arm(self):
            self._disarm()
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm(self):
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self):
            self._header_timer = None
            if self.cycle is None or self.cycle.response_complete:  # no request is being answered
                self.transport.close()

    return HeaderTimeoutProtocol
