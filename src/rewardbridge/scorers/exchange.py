"""What one HTTP exchange of the transport is: the request a codec builds, the answer it reads,
and the ways an exchange fails (each failure's class decides whether ``transport.py`` retries it).
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(slots=True)
class Request:
    """One HTTP request for a chunk of conversations: ``json`` or raw ``content`` (+ headers), sent as
    ``content_type`` when given (JSON encoded by the codec: bytes in flight hold no objects for the GC)."""

    path: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] | None = None
    content_type: str | None = None


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
    """A connection error or timeout (retried); ``timed_out`` for a timeout."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


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


class Response:
    """One answer as a codec's ``parse`` reads it: ``status_code``, ``headers`` (case-insensitive),
    ``content`` (bytes), ``text`` and ``json()``."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: Any, content: bytes):
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


def describe_samples(indices: Sequence[int]) -> str:
    """``[3]`` -> ``"sample 3"``; ``[2, 0]`` -> ``"samples 2 and 0"`` (a comparison);
    ``[0, 1, 2]`` -> ``"samples 0-2"`` (for messages)."""
    if not indices:
        return "no samples"
    if len(indices) == 1:
        return f"sample {indices[0]}"
    return f"samples {indices[0]}{' and ' if len(indices) == 2 else '-'}{indices[-1]}"
