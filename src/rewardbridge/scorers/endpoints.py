"""Endpoint URLs as users give them: one, several comma-separated, or a list; shown without credentials."""

from __future__ import annotations

from typing import Sequence
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError


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
