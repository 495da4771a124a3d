"""The transport's event loop: one per process on a daemon thread, and the aiohttp sessions on it.

Every remote reward in a process shares one loop (``EventLoopThread``), so a sync caller on
any thread waits on ``run_coroutine_threadsafe(...).result()``. Sessions made on it are
closed when their transport is dropped or the process exits, and proxies come from the
environment once per endpoint.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import weakref
from typing import Any


PID = os.getpid()  # this process's id, kept current across forks (os.getpid() is a system call)


def _forked() -> None:
    global PID
    PID = os.getpid()


os.register_at_fork(after_in_child=_forked)


def current_pid() -> int:
    """``os.getpid()`` without the system call."""
    return PID


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


def env_proxy(url: str) -> tuple[Any, Any]:
    """(proxy URL, proxy auth) the environment asks for ``url``, or (None, None)."""
    from aiohttp.helpers import get_env_proxy_for_url
    from yarl import URL

    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:  # no proxy for this URL, or NO_PROXY names its host
        return None, None


_OPEN_SESSIONS: "weakref.WeakSet" = weakref.WeakSet()


def watch_session(owner, session) -> None:
    """Close ``session`` (made on this loop) when ``owner`` is garbage-collected, or at exit:
    a reward is rarely closed by hand, and aiohttp warns about every session left open."""
    weakref.finalize(owner, _close_session, session, asyncio.get_running_loop())
    _OPEN_SESSIONS.add(session)


def _close_session(session, loop) -> None:
    """Close ``session`` on its loop without waiting (this may run on any thread, the loop's own too)."""
    if not session.closed and not loop.is_closed():
        try:
            loop.call_soon_threadsafe(lambda: loop.create_task(session.close()))
        except RuntimeError:  # the loop is gone: nothing left to close with
            pass


@atexit.register
def _close_open_sessions() -> None:
    """At exit, close what is still open and wait a moment, so aiohttp has nothing to warn about."""
    sessions = [s for s in list(_OPEN_SESSIONS) if not s.closed]
    if not sessions or EventLoopThread._instance is None or EventLoopThread._instance[0] != os.getpid():
        return

    async def close_all():
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    try:
        asyncio.run_coroutine_threadsafe(close_all(), EventLoopThread._instance[1]).result(timeout=2)
    except Exception:  # noqa: BLE001: exiting anyway
        pass
