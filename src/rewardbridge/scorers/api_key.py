"""The API key a remote reward's requests carry: read from the environment once per reward call
(held only while that call's requests are sent, never in a repr, a pickle, a log line or an
error message), made fit for an HTTP header, and scrubbed from messages."""

from __future__ import annotations

import logging
import os
import threading

from ..errors import ConfigError

logger = logging.getLogger("rewardbridge.scorers.transport")


class ApiKey:
    """The key in the environment variable ``env`` (None: no key).

    Args:
        env: the variable's name.
        explicit: the user named it (``api_key_env=``): unset is then a ConfigError, not "no key".
    """

    _UNREAD = object()

    def __init__(self, env: str | None, explicit: bool):
        self.env, self.explicit = env, explicit
        self._checked = None  # hash of the value last checked
        # The key as read for the calls in progress (``_UNREAD``: not yet), held only while one is:
        # os.environ.get costs as much as a request's own headers, so it is read once per call, not
        # per request; each call that starts reads it afresh, so a key changed between calls is sent.
        self._calls = 0
        self._lock = threading.Lock()
        self._held: object = None

    def __repr__(self) -> str:
        return f"ApiKey({self.env!r})"

    def __getstate__(self):
        raise TypeError("an ApiKey does not pickle (it may hold the key); pickle the RewardFunction")

    def begin_call(self) -> None:
        """A reward call starts: its requests share one read of the key (``end_call`` drops it)."""
        with self._lock:
            self._calls += 1
            self._held = self._UNREAD

    def end_call(self) -> None:
        with self._lock:
            self._calls -= 1
            if self._calls == 0:
                self._held = None

    def read(self) -> str | None:
        """The key for one request: the call's read of it, made by its first request; outside a call
        (``begin_call``), read from the environment each time."""
        held = self._held
        if held is None or held is self._UNREAD:
            key = self._read()
            if held is self._UNREAD:
                with self._lock:  # once per call; end_call may have dropped it meanwhile
                    if self._held is self._UNREAD:
                        self._held = key if key is not None else ""
            return key
        return held or None

    def _read(self) -> str | None:
        if not self.env:
            return None
        key = os.environ.get(self.env)
        if not key and self.explicit:
            raise ConfigError(f"api_key_env={self.env!r}, but that environment variable is not set; set it to the key")
        if not key:
            return None
        return key.strip() if hash(key) == self._checked else self._check(key)

    def _check(self, raw: str) -> str:
        """A key as a header can carry it: surrounding whitespace (a Kubernetes secret's trailing
        newline) is stripped and said once; a control character or non-Latin-1 text inside is refused,
        naming the variable (aiohttp would fail with 'Forbidden control character', no name)."""
        key = raw.strip()
        if key != raw:
            logger.warning("the environment variable %s holds whitespace around the key (a trailing newline?); "
                           "sending it stripped", self.env)
        bad = next((c for c in key if ord(c) < 32 or ord(c) == 127 or ord(c) > 255), None)
        if bad is not None:
            raise ConfigError(f"the environment variable {self.env} holds the character {bad!r} inside the key, "
                              "which an HTTP header cannot carry; set it to the key alone")
        self._checked = hash(raw)
        return key

    def scrub(self, text: str) -> str:
        """``text`` with the key (as set, and stripped) replaced by ``***``."""
        key = os.environ.get(self.env) if self.env else None
        if key and key.strip():
            text = text.replace(key, "***").replace(key.strip(), "***")
        return text
