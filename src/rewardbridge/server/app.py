"""The server: a pure ASGI app around the routes of every protocol in ``protocols.MODULES``.

Each protocol's routes live beside its codec (``protocols/<name>.py``: parse -> the scorer a
trainer uses -> format); this module registers them from the table, adds the operations
routes (``/health``, ``/ready``, ``/metrics``), and owns what every route shares: the API key
check, the body, request and read-time limits, dynamic batching (``batcher.py``) and the
Prometheus metrics. There is no framework in the request path (a Starlette middleware alone
cost 21% of the loop's time): a request is parsed, queued and answered on the event loop,
and the only thread hop is the scoring round's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

from ..errors import ConfigError, InputError, RewardBridgeError
from ..protocols.base import PLAIN, TEXT, Answer, Call, HTTPError, Route
from ..scorers.base import Scores
from .batcher import Batcher
from .http import BodyBudget, ClientGone, Router, error_answer, guarded_http_protocol, read_body, send_answer, send_json
from .metrics import Metrics
from .served import ServedModel, broadcast, check_serve_options, follow_rank0
from .settings import ServerSettings

logger = logging.getLogger("rewardbridge.server")

# Probes answer without the key: a liveness or readiness check carries none (KServe's own too, and
# its per-model readiness, /v2/models/<name>/ready, which KServe's probes call).
UNAUTHENTICATED = frozenset({"/health", "/v2/health/live", "/v2/health/ready"})
MODEL_READY = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/ready$")


def conversation_chars(item: Any) -> int:
    """Characters of one queued item: rendered text, or every text field of every message
    (a role is text the model reads too)."""
    if isinstance(item, str):
        return len(item)
    total = 0
    for part in (item.prompt, item.completion):
        if isinstance(part, str):
            total += len(part)
            continue
        for message in part:
            total += sum(len(v) for v in message.values() if isinstance(v, str))
    return total


class ServerState:
    """What every route shares: the settings, the model (None while it loads) and the batcher.

    ``await score(kind, items)`` is the one way a route scores: it checks the limits, queues
    the items for dynamic batching and turns scoring errors into HTTP answers (422 for the
    request's own data, 500 for anything else, which clients retry). Only the request whose
    rows failed gets the error (``batcher.py`` splits a failed round).
    """

    def __init__(self, settings: ServerSettings, metrics: Metrics, batcher: Batcher, splitter: Any = None):
        self.settings, self.metrics, self.batcher, self.splitter = settings, metrics, batcher, splitter
        self.model: ServedModel | None = None
        self.error: str | None = None

    def check_limits(self, items: list) -> list[int]:
        """The request's counts against ``--max-conversations`` and ``--max-chars``; -> each item's characters."""
        settings = self.settings
        if len(items) > settings.max_conversations:
            raise HTTPError(413, f"request has {len(items)} conversations > the limit {settings.max_conversations}; raise --max-conversations or send fewer")
        sizes = [conversation_chars(item) for item in items]
        for i, chars in enumerate(sizes):
            if chars > settings.max_chars:
                raise HTTPError(422, f"conversation {i} has {chars} characters (roles and contents) > the limit {settings.max_chars}; raise --max-chars")
        return sizes

    async def score(self, kind: str, items: list) -> Scores:
        if self.model is None:
            if self.error:
                raise HTTPError(500, f"the model failed to load: {self.error}")
            raise HTTPError(503, "the model is still loading; see GET /ready", {"Retry-After": "1"})
        if kind in (TEXT, PLAIN) and getattr(self.model, "reads_pairs", False):
            raise HTTPError(
                422, "this server's model reads (question, answer) pairs (kind='pair_regression'), and rendered text cannot be "
                "split back into them: it would be scored as (text, ''). Send conversations: POST /v1/score, "
                "/v1/chat/completions, or /classify with 'messages'",
            )
        sizes = self.check_limits(items)
        try:
            scores = await self.batcher.submit(kind, items, sizes)
        except RewardBridgeError as error:  # the request's data: chat data without a chat template, too long, ...
            raise HTTPError(422, str(error)) from None
        except (UnicodeError, RecursionError) as error:  # text the tokenizer cannot encode: still the request's data
            raise HTTPError(422, f"the request's text cannot be read: {type(error).__name__}: {error}") from None
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001: the client sees a 500 it may retry
            logger.exception("scoring failed")
            raise HTTPError(500, f"scoring failed: {type(error).__name__}: {error}") from None
        self.metrics.conversations.inc(len(items))
        return scores


class RewardApp:
    """The ASGI app (``uvicorn.run(app)`` serves it). ``state.server`` is the :class:`ServerState`."""

    def __init__(self, state: ServerState, router: Router, api_key: str | None, loader):
        self.state = SimpleNamespace(server=state, metrics=state.metrics)
        self.server, self.router, self.api_key, self.loader = state, router, api_key, loader
        self.settings = state.settings
        self._key = api_key.encode() if api_key else None
        self.bodies = BodyBudget(state.settings.max_body_bytes_in_flight)
        state.metrics.body_bytes.set_function(lambda: self.bodies.used)

    @property
    def routes(self) -> list[SimpleNamespace]:
        """Every route served, as ``.path`` and ``.methods`` (for introspection and tests)."""
        return [SimpleNamespace(path=path, methods=methods) for path, methods in self.router.table()]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                threading.Thread(target=self._load, name="rewardbridge-load", daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.server.batcher.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _load(self) -> None:
        try:
            self.server.model = self.loader()
            logger.info("model loaded; ready")
        except Exception as error:  # noqa: BLE001: reported on /ready and in the log
            self.server.error = f"{type(error).__name__}: {error}"
            logger.error("loading the model failed: %s", self.server.error)

    async def _http(self, scope, receive, send) -> None:
        began = time.perf_counter()
        path, label, status, body = scope["path"], "other", 500, None
        held = [0]  # body bytes taken from the shared budget, given back once answered
        try:
            try:
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                self._check_key(path, headers)
                handler, params, label = self.router.match(scope["method"], path)
                declared = headers.get("content-length")
                body = await read_body(receive, self.settings.max_body_bytes, self.settings.read_timeout_s,
                                       int(declared) if declared and declared.isdigit() else None, self.bodies, held)
                answer = await self._answer(handler, Call(body, headers, params, self.server), receive)
            except HTTPError as error:
                answer = error_answer(error.status, error.message, error.headers)
            except InputError as error:  # a malformed body: 422 naming the field, never a retried 500
                answer = error_answer(422, str(error))
            status = answer.status if isinstance(answer, Answer) else 200
            if isinstance(answer, Answer):
                # Refused before its body was read (401, 404, 413, 408): close rather than take in the rest.
                await send_answer(send, answer, close=body is None)
            else:
                await send_json(send, answer)
        except ClientGone:
            status = 499  # nginx's "client closed request": counted, nothing sent
        except asyncio.CancelledError:
            # SIGTERM and --graceful-timeout passed: uvicorn cancels what still runs, and would answer
            # a plain-text 500 and log the cancel as an error. A 503 says "retry", which clients do.
            if sys.version_info >= (3, 11):
                asyncio.current_task().uncancel()
            status = 503
            logger.warning("%s: cancelled at shutdown (--graceful-timeout %g s passed); answered 503", path,
                           self.settings.graceful_timeout_s)
            try:
                await send_answer(send, error_answer(503, f"the server is shutting down (--graceful-timeout "
                                                          f"{self.settings.graceful_timeout_s:g} s passed); retry", {"Retry-After": "1"}), close=True)
            except Exception:  # noqa: BLE001: the answer had already begun, or the connection is gone
                pass
        except Exception as error:  # noqa: BLE001: a bug must still answer, and be logged
            logger.exception("request to %s failed", path)
            status = 500
            await send_answer(send, error_answer(500, f"internal error: {type(error).__name__}: {error}"))
        finally:
            self.bodies.used -= held[0]
        self.server.metrics.count(label, status, time.perf_counter() - began)

    def _check_key(self, path: str, headers: dict[str, str]) -> None:
        if self._key is None or path in UNAUTHENTICATED or MODEL_READY.match(path):
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        # Constant-time: the comparison's duration says nothing about the key.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._key):
            raise HTTPError(401, f"missing or wrong API key: send 'Authorization: Bearer <key>' (the server's --api-key-env {self.settings.api_key_env})")

    async def _answer(self, handler, call: Call, receive) -> Any:
        """Run the route while watching the connection: a client that leaves cancels its request,
        so the batcher drops its rows instead of scoring them for nobody."""
        task = asyncio.current_task()
        state = {"answered": False, "gone": False}

        async def watch():
            message = await receive()
            if message["type"] == "http.disconnect" and not state["answered"]:
                state["gone"] = True
                task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            return await handler(call)
        except asyncio.CancelledError:
            if state["gone"]:
                if sys.version_info >= (3, 11):
                    task.uncancel()
                raise ClientGone() from None
            raise
        finally:
            state["answered"] = True
            watcher.cancel()


def read_api_key(settings: ServerSettings) -> str | None:
    """The key from ``--api-key-env``'s variable; a variable that is set but empty is refused,
    since serving with it would silently turn authentication off."""
    if not settings.api_key_env or settings.api_key_env not in os.environ:
        return None
    key = os.environ[settings.api_key_env]
    if not key.strip():
        raise ConfigError(
            f"the environment variable {settings.api_key_env} is set but empty, which would serve without a key; "
            f"set it to a key (e.g. $(openssl rand -hex 16)), or unset it to serve without one"
        )
    # Clients' tokens are compared stripped, so a key with a newline (from a file or a Kubernetes
    # secret) would lock every client out: refused, as is a control character no header can carry.
    if key != key.strip() or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ConfigError(
            f"the environment variable {settings.api_key_env} holds whitespace around the key or a control character "
            f"(a trailing newline from a file or a Kubernetes secret?), which no client could send; remove it "
            f"(e.g. export {settings.api_key_env}=\"$(tr -d '[:space:]' < keyfile)\")"
        )
    return key


def create_app(model_loader, settings: ServerSettings) -> RewardApp:
    """The ASGI app. ``model_loader()`` returns a :class:`ServedModel` (called on a thread at startup)."""
    from ..protocols import all_routes

    api_key = read_api_key(settings)
    metrics = Metrics()
    splitter = None
    if settings.policy_tokenizer:
        from ..checkpoint import load_tokenizer
        from ..protocols.openrlhf import PolicyTextSplitter

        splitter = PolicyTextSplitter(load_tokenizer(settings.policy_tokenizer, "--policy-tokenizer"))
    batcher = Batcher(
        lambda kind, items: state.model.score(kind, items), settings.max_batch_size, settings.max_wait_ms / 1000,
        max_batch_chars=settings.max_batch_chars, on_batch=metrics.batch_size.observe, on_abandoned=metrics.abandoned.inc,
        score_requests=lambda kind, groups: state.model.score_requests(kind, groups),
    )
    state = ServerState(settings, metrics, batcher, splitter)

    async def health(call: Call) -> dict:
        return {"status": "ok"}

    async def ready(call: Call) -> Any:
        if state.model is not None:
            return {"ready": True, "model": settings.model_name, "parameter_bytes": state.model.parameter_bytes,
                    "processes": int(os.environ.get("WORLD_SIZE", "1"))}
        return Answer(json.dumps({"ready": False, "error": state.error}).encode(), 503, {"Content-Type": "application/json"})

    async def prometheus(call: Call) -> Answer:
        body, content_type = metrics.exposition()
        return Answer(body, headers={"Content-Type": content_type})

    operations = [Route("GET", "/health", health), Route("GET", "/ready", ready), Route("GET", "/metrics", prometheus)]
    return RewardApp(state, Router([*all_routes(), *operations]), api_key, model_loader)


def serve(source: str, options: dict, settings: ServerSettings) -> None:
    """Serve ``source`` (any local reward ``load_reward`` takes) until SIGTERM/SIGINT.

    Under ``torchrun`` with ``--option zero3=true`` every rank loads its shard; rank 0
    serves HTTP and broadcasts each batch, the other ranks score in lockstep.
    """
    import uvicorn

    from ..resolve import is_remote

    if is_remote(source):
        raise ConfigError(f"rewardbridge serve serves a local model; {source!r} is already an endpoint")
    resolved = check_serve_options(source, options)  # every weight-free check, before the server starts
    read_api_key(settings)  # an empty key is refused before the model loads
    if settings.policy_tokenizer:  # a missing folder, or one without tokenizer files, before the model loads
        from ..checkpoint import check_tokenizer_files
        from ..sources import resolve_local_source

        check_tokenizer_files(resolve_local_source(settings.policy_tokenizer, "--policy-tokenizer"), "--policy-tokenizer")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(settings.api_key_env or ""):
        logger.warning("serving on %s with no API key: anyone who can reach this port can use the model; "
                       "set the environment variable %s", settings.host, settings.api_key_env)
    zero3 = bool(options.get("zero3"))
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if zero3:
        # ZeRO-3 loading is collective: every rank loads before rank 0 starts serving.
        model = ServedModel(source, options, broadcast=world > 1, resolved=resolved)
        if rank != 0:
            follow_rank0(model)
            return
        loader = lambda: model  # noqa: E731
    elif world > 1:
        raise ConfigError("several processes serve one model only with --option zero3=true (each rank holds a shard)")
    else:
        def loader():
            try:
                return ServedModel(source, options, resolved=resolved)
            except Exception:
                server.should_exit = True  # a server without its model only says 503: stop instead
                raise
    app = create_app(loader, settings)
    protocol = guarded_http_protocol(settings.read_timeout_s)
    if protocol is None:
        logger.warning("httptools is not installed: no header read timeout, and a slower HTTP parser (pip install httptools)")
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="info", access_log=False, lifespan="on",
        http=protocol or "auto", timeout_graceful_shutdown=settings.graceful_timeout_s,
    )
    server = (releasing_server(uvicorn.Server) if zero3 and world > 1 else uvicorn.Server)(config)
    try:
        server.run()  # SIGTERM: stop accepting, finish in-flight requests, then return
    finally:
        if zero3 and world > 1:
            broadcast(None)  # release the other ranks
    if app.state.server.error:
        print(f"rewardbridge: error: the model failed to load: {app.state.server.error}", file=sys.stderr)
        raise SystemExit(1)


def releasing_server(base: type) -> type:
    """A uvicorn Server that returns after a SIGTERM/SIGINT drain instead of re-raising the signal.

    uvicorn re-raises the signal it caught once it has finished its in-flight requests; under
    ZeRO-3 that killed rank 0 before it released the other ranks, which then failed with
    "Connection closed by peer" and made a deliberate stop look like a crash. Returning lets
    rank 0 release them; every rank then leaves the process group (cli) and exits 0.
    """

    class ReleasingServer(base):
        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                self._captured_signals.clear()  # caught and acted on (drained): nothing to re-raise

    return ReleasingServer
