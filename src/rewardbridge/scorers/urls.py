"""Endpoint base URLs as the user writes them: one, several comma-separated, or a list; each checked
when the reward is resolved (not at its first request), and shown without credentials."""

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
        check_base_url(url)
    return urls


def check_base_url(url: str) -> None:
    """One endpoint's base URL, checked when the reward is resolved, not at its first request: no
    space (two URLs written with one), no query or fragment (requests append their route to the
    path: ``...?x=1/v1/score``), a host and a port that parse.

    >>> check_base_url("http://a:1 http://b:2")
    Traceback (most recent call last):
    ...
    rewardbridge.errors.ConfigError: endpoint 'http://a:1 http://b:2' holds a space; several endpoints are separated by commas: 'http://a:1,http://b:2'
    """
    shown = display_url(url)
    if any(c.isspace() for c in url):
        joined = ",".join(url.split())
        raise ConfigError(f"endpoint {shown!r} holds a space; several endpoints are separated by commas: {display_url(joined)!r}")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"endpoint {shown!r} is not an http(s)://host[:port] URL")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        shown += f"#{parts.fragment}" if "#" in url else ""  # display_url drops a fragment
        base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        raise ConfigError(
            f"endpoint {shown!r} has a {'query' if parts.query or '?' in url else 'fragment'}; a base URL takes none "
            f"(each request adds its route to the path): pass {display_url(base)!r}"
        )
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number in 0-65535)
    except ValueError:
        raise ConfigError(f"endpoint {shown!r} has a port that is not a number from 1 to 65535") from None


def display_url(url: str) -> str:
    """The URL without any ``user:password@`` part, for messages.

    >>> display_url("https://me:secret@host:8000/v1")
    'https://host:8000/v1'
    """
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
