"""What a reward source string names: an endpoint URL, a local folder or a hub id, and the
mistakes in writing one, caught before anything loads.

- an endpoint without its scheme (``127.0.0.1:8000``) or with a mistyped one (``htp://``):
  said as such, rather than read as a local folder;
- a base URL that ends in its route (``.../v1/chat/completions``) or in ``/v1`` (as NIM's and
  OpenAI's docs write base URLs): the route is cut off (:func:`base_url`), so requests do not go
  to ``/v1/v1/...``;
- a file where a folder is expected (``config.json``, a ``.gguf``, a weights file, a data file):
  named, with the folder to pass instead.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError

URL_PATTERN = re.compile(r"^\s*https?://", re.IGNORECASE)
SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*):/+")
HOST_PORT = re.compile(r"^\s*(\[[0-9A-Fa-f:.]+\]|[\w.-]+):(\d{1,5})(/\S*)?\s*$")
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def is_remote(source: str | list) -> bool:
    """True for a URL (any case of ``http://``/``https://``), a comma-separated list, or a list of them.

    >>> is_remote("HTTP://rm:8000"), is_remote(["http://a", "https://b"]), is_remote("models/http_rm")
    (True, True, False)
    """
    if isinstance(source, (list, tuple)):
        return bool(source) and all(isinstance(s, str) and URL_PATTERN.match(s) for s in source)
    return isinstance(source, str) and bool(URL_PATTERN.match(source))


def check_source_text(source: Any) -> None:
    """Refuse a source that is almost an endpoint URL: a missing or mistyped scheme, a list mixing URLs and paths.

    >>> check_source_text("127.0.0.1:8000")
    Traceback (most recent call last):
    ...
    rewardbridge.errors.ConfigError: source '127.0.0.1:8000' looks like an endpoint without its scheme; pass 'http://127.0.0.1:8000' (or https://...)
    """
    if isinstance(source, (list, tuple)):
        urls = [s for s in source if isinstance(s, str) and URL_PATTERN.match(s)]
        if urls and len(urls) != len(source):
            raise ConfigError(f"source {list(source)!r} mixes endpoint URLs and other values; several endpoints are all http(s):// URLs")
        items = [s for s in source if isinstance(s, str)]
    elif isinstance(source, str):
        if os.path.exists(os.path.expanduser(source)):
            return
        items = source.split(",")
    else:
        return
    for item in (i.strip() for i in items):
        if not item or URL_PATTERN.match(item) or os.path.exists(os.path.expanduser(item)):
            continue
        if re.match(r"^https?:(?!//)", item, re.IGNORECASE):
            raise ConfigError(f"source {item!r} is missing the // after its scheme; write '{item.split(':', 1)[0]}://{item.split(':', 1)[1].lstrip('/')}'")
        scheme = SCHEME.match(item)
        if scheme:
            close = difflib.get_close_matches(scheme.group(1).lower(), ["http", "https"], n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            rest = item[scheme.end():]
            raise ConfigError(
                f"source {item!r} has the scheme {scheme.group(1)!r}{hint}; an endpoint is an http(s):// URL: pass 'http://{rest}'"
            )
        if HOST_PORT.match(item):
            raise ConfigError(f"source {item!r} looks like an endpoint without its scheme; pass 'http://{item}' (or https://...)")


def base_url(url: str, routes: list[str]) -> tuple[str, str | None]:
    """``url`` without a trailing route of its protocol (``routes``: path templates such as
    ``/v2/models/{name}/infer``), then without a trailing ``/v1`` or ``/v2``; and what was cut.

    >>> base_url("https://integrate.api.nvidia.com/v1", ["/v1/chat/completions"])
    ('https://integrate.api.nvidia.com', '/v1')
    >>> base_url("http://rm:8000/v2/models/reward_model/infer", ["/v2/models/{name}/infer"])
    ('http://rm:8000', '/v2/models/reward_model/infer')
    """
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    cut = ""
    for route in sorted(routes, key=len, reverse=True):
        pattern = re.escape(route).replace(r"\{name\}", "[^/]+").replace(r"\{version\}", "[^/]+")
        match = re.search(pattern + "$", path)
        if match:
            cut, path = path[match.start():], path[:match.start()]
            break
    if re.search(r"/v[12]$", path):
        cut, path = path[-3:] + cut, path[:-3]
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment)), (cut or None)


def resolve_local_source(source: str, what: str = "source") -> str:
    """An existing local folder made absolute (a pickled reward then loads from any working
    directory); a hub id as given; a path that does not exist, or a file, a clear error.

    >>> resolve_local_source("org/model-name")  # a hub id: left to transformers
    'org/model-name'
    """
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"{what} must be a model directory, a hub id or an http(s):// URL, got {source!r}")
    expanded = os.path.expanduser(source)
    if os.path.isfile(expanded):
        raise ConfigError(f"{what}={source!r} is a file; {_folder_hint(expanded, what)}")
    if os.path.exists(expanded):
        return os.path.abspath(expanded)
    # A hub id is "name" or "org/name"; anything else that names no existing path is a typo'd folder.
    looks_like_path = source.startswith((".", "/", "~")) or os.path.isabs(source) or source.count("/") > 1 or "\\" in source
    if looks_like_path:
        raise ConfigError(
            f"{what}={source!r}: no such folder ({os.path.abspath(expanded)}). Pass an existing model directory, "
            "a hub id such as 'org/name', or an http(s):// URL"
        )
    return source


def _folder_hint(path: str, what: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    lowered = name.lower()
    if lowered == "config.json":
        return f"it is the model's config; pass its folder: {what}={folder!r}"
    if lowered in ("tokenizer.json", "tokenizer_config.json"):
        return f"pass the folder that holds it: {what}={folder!r}"
    if lowered.endswith(".gguf"):
        return f"pass its folder and the file's name: {what}={folder!r}, gguf_file={name!r}"
    if lowered.endswith(WEIGHT_SUFFIXES):
        return f"pass the folder that holds it with its config.json: {what}={folder!r}"
    if lowered.endswith(DATA_SUFFIXES):
        return ("it looks like data, not a reward model; the arguments may be swapped: the reward model comes first, "
                "then the data (rewardbridge score MODEL DATA -o OUT, rewardbridge eval MODEL DATA; "
                "rewardbridge pairs POLICY PROMPTS --reward MODEL)")
    return "a reward model is a folder with a config.json, a hub id such as 'org/name', or an http(s):// URL"
