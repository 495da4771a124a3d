"""The HTTP app: auth, limits and metrics around the routes of every protocol in ``protocols.MODULES``.

Each protocol's routes live beside its codec (``protocols/<name>.py``: parse -> the scorer a
trainer uses -> format); this module registers them from the table, adds the operations
routes (``/health``, ``/ready``, ``/metrics``), and owns what every route shares: the API key
check, body and request limits, dynamic batching (``batcher.py``) and Prometheus metrics.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime.

import hmac
import logging
import os
import sys
import threading
import time
from typing import Any

from ..errors import ConfigError, InputError, RewardBridgeError
from ..protocols.base import Answer, Call, HTTPError
from ..scorers.base import Scores
from .batcher import Batcher
from .served import ServedModel, check_serve_options, follow_rank0, broadcast
from .settings import ServerSettings

logger = logging.getLogger("rewardbridge.server")

OPERATIONS = ("/health", "/ready", "/metrics")
UNAUTHENTICATED = ("/health",)


class Metrics:
    """Prometheus counters and histograms on a registry of the app's own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("rewardbridge_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.errors = Counter("rewardbridge_errors", "requests answered with an error", ["route", "status"], registry=self.registry)
        self.latency = Histogram("rewardbridge_request_latency_seconds", "request latency", ["route"], registry=self.registry)
        self.batch_size = Histogram(
            "rewardbridge_batch_size", "conversations per scorer call", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.conversations = Counter("rewardbridge_conversations", "conversations scored", registry=self.registry)



class ServerState:
    """What every route shares: the settings, the model (None while it loads) and the batcher.

    ``await score(kind, items)`` is the one way a route scores: it checks the limits, queues
    the items for dynamic batching and turns scoring errors into HTTP answers (422 for the
    request's own data, 500 for anything else, which clients retry).
    """

    def __init__(self, settings: ServerSettings, metrics: Metrics, batcher: Batcher, splitter: Any = None):
        self.settings, self.metrics, self.batcher, self.splitter = settings, metrics, batcher, splitter
        self.model: ServedModel | None = None
        self.error: str | None = None

    def check_limits(self, items: list) -> None:
        settings = self.settings
        if len(items) > settings.max_conversations:
            raise HTTPError(413, f"request has {len(items)} conversations > the limit {settings.max_conversations}; raise --max-conversations or send fewer")
        for i, item in enumerate(items):
            chars = len(item) if isinstance(item, str) else sum(len(m["content"]) for m in item.messages())
            if chars > settings.max_chars:
                raise HTTPError(422, f"conversation {i} has {chars} characters > the limit {settings.max_chars}; raise --max-chars")

    async def score(self, kind: str, items: list) -> Scores:
        if self.model is None:
            if self.error:
                raise HTTPError(500, f"the model failed to load: {self.error}")
            raise HTTPError(503, "the model is still loading; see GET /ready", {"Retry-After": "1"})
        self.check_limits(items)
        try:
            scores = await self.batcher.submit(kind, items)
        except RewardBridgeError as error:  # the request's data: chat data without a chat template, too long, ...
            raise HTTPError(422, str(error)) from None
        except Exception as error:  # noqa: BLE001: the client sees a 500 it may retry
            logger.exception("scoring failed")
            raise HTTPError(500, f"scoring failed: {type(error).__name__}: {error}") from None
        self.metrics.conversations.inc(len(items))
        return scores


def create_app(model_loader, settings: ServerSettings):
    """The FastAPI app. ``model_loader()`` returns a :class:`ServedModel` (called on a thread at startup)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, Response

    from ..protocols import all_routes

    metrics = Metrics()
    api_key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
    splitter = None
    if settings.policy_tokenizer:
        from transformers import AutoTokenizer

        from ..protocols.openrlhf import PolicyTextSplitter

        splitter = PolicyTextSplitter(AutoTokenizer.from_pretrained(settings.policy_tokenizer))
    batcher = Batcher(
        lambda kind, items: state.model.score(kind, items), settings.max_batch_size, settings.max_wait_ms / 1000,
        on_batch=metrics.batch_size.observe,
    )
    state = ServerState(settings, metrics, batcher, splitter)
    routes = all_routes()
    # Metric labels: a fixed route path, or "/v2" for KServe's templated paths (never the raw path).
    known = {route.path for route in routes if "{" not in route.path and not route.path.startswith("/v2")} | set(OPERATIONS)

    def load():
        try:
            state.model = model_loader()
            logger.info("model loaded; ready")
        except Exception as error:  # noqa: BLE001: reported on /ready and in the log
            state.error = f"{type(error).__name__}: {error}"
            logger.error("loading the model failed: %s", state.error)

    @asynccontextmanager
    async def lifespan(app):
        thread = threading.Thread(target=load, name="rewardbridge-load", daemon=True)
        thread.start()
        yield
        batcher.executor.shutdown(wait=True)

    app = FastAPI(title="rewardbridge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    app.state.metrics = metrics

    def error_response(status: int, message: str, headers: dict | None = None):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status, headers=headers)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        route = path if path in known else ("/v2" if path.startswith("/v2") else "other")
        began = time.perf_counter()
        if api_key and path not in UNAUTHENTICATED:
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            # Constant-time: the comparison's duration says nothing about the key.
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
                response = error_response(401, f"missing or wrong API key: send 'Authorization: Bearer <key>' (the server's --api-key-env {settings.api_key_env})")
                return _count(metrics, route, response, began)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_body_bytes:
            response = error_response(413, f"request body has {length} bytes > the limit {settings.max_body_bytes}; raise --max-body-bytes")
            return _count(metrics, route, response, began)
        try:
            response = await call_next(request)
        except HTTPError as error:  # raised in a route
            response = error_response(error.status, error.message, error.headers)
        return _count(metrics, route, response, began)

    async def body_of(request: Request) -> bytes:
        body = await request.body()
        if len(body) > settings.max_body_bytes:  # chunked bodies carry no Content-Length
            raise HTTPError(413, f"request body has {len(body)} bytes > the limit {settings.max_body_bytes}; raise --max-body-bytes")
        return body

    @app.exception_handler(HTTPError)
    async def http_error(request, error: HTTPError):
        return error_response(error.status, error.message, error.headers)

    def endpoint_for(handler):
        async def endpoint(request: Request):
            call = Call(await body_of(request), request.headers, dict(request.path_params), state)
            try:
                answer = await handler(call)
            except InputError as error:  # a malformed body: 422 naming the field, never a retried 500
                raise HTTPError(422, str(error)) from None
            if isinstance(answer, Answer):
                return Response(answer.body, status_code=answer.status, headers=answer.headers)
            return JSONResponse(answer)

        return endpoint

    for route in routes:
        app.add_api_route(route.path, endpoint_for(route.handler), methods=[route.method])

    # -- operations ----------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if state.model is not None:
            return {"ready": True, "model": settings.model_name, "parameter_bytes": state.model.parameter_bytes,
                    "processes": int(os.environ.get("WORLD_SIZE", "1"))}
        return JSONResponse({"ready": False, "error": state.error}, status_code=503)

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _count(metrics: Metrics, route: str, response, began: float):
    metrics.requests.labels(route, str(response.status_code)).inc()
    metrics.latency.labels(route).observe(time.perf_counter() - began)
    if response.status_code >= 400:
        metrics.errors.labels(route, str(response.status_code)).inc()
    return response


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
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="info", access_log=False,
        timeout_graceful_shutdown=settings.graceful_timeout_s,
    )
    server = uvicorn.Server(config)
    try:
        server.run()  # SIGTERM: stop accepting, finish in-flight requests, then return
    finally:
        if zero3 and world > 1:
            broadcast(None)  # release the other ranks
    if app.state.server.error:
        print(f"rewardbridge: error: the model failed to load: {app.state.server.error}", file=sys.stderr)
        raise SystemExit(1)
