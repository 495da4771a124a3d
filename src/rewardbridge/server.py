"""``rewardbridge serve``: one local reward model behind every peer's wire protocol at once.

Routes (each is parse -> the scorer a trainer uses -> format; the codecs live in
``scorers/<protocol>.py`` beside their clients):

- ``POST /v1/chat/completions``  NIM (``openai.OpenAI(base_url=.../v1)`` works)
- ``POST /get_reward``           OpenRLHF (``query`` scored as rendered text, or with
                                 ``--policy-tokenizer`` re-rendered with the reward model's template)
- ``POST /classify``, ``/pooling``  vLLM pooling server
- ``POST /v2/models/<model>/infer`` + KServe v2 health/metadata: NeMo-Aligner's Triton server
- ``POST /v1/score``             rewardbridge's own protocol
- ``GET /health`` (alive), ``/ready`` (model loaded), ``/metrics`` (Prometheus text)

Concurrent requests are coalesced into one scorer call (dynamic batching: up to
``--max-batch-size`` conversations, waiting at most ``--max-wait-ms`` for company); each
request gets back exactly its own rows. Under ``torchrun`` with ``zero3=true``, rank 0
serves HTTP and broadcasts each batch; every rank scores it in lockstep.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime.

import asyncio
import copy
import hmac
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .conversation import Conversation
from .errors import ConfigError, InputError, RewardBridgeError
from .scorers.base import Scores

logger = logging.getLogger("rewardbridge.server")

CHAT, TEXT = "chat", "text"  # conversations rendered by the model's template | text already rendered


@dataclass
class ServerSettings:
    """``rewardbridge serve`` flags (see ``rewardbridge serve --help``)."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    api_key_env: str = "REWARDBRIDGE_API_KEY"
    policy_tokenizer: str | None = None
    max_body_bytes: int = 16 * 2**20
    max_conversations: int = 1024
    max_chars: int = 200_000
    model_name: str = "reward_model"
    graceful_timeout_s: float = 30.0

    def __post_init__(self):
        for flag, value in (("--max-batch-size", self.max_batch_size), ("--max-body-bytes", self.max_body_bytes),
                            ("--max-conversations", self.max_conversations), ("--max-chars", self.max_chars)):
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1, got {value}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be 1-65535, got {self.port}")


class HTTPError(Exception):
    """An answer other than 200, with a message naming the field or the limit (and its flag)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class _PreRendered:
    """A renderer for text that is already what the model reads (Triton sentences, OpenRLHF queries)."""

    def render(self, conversation: Conversation) -> str:
        return conversation.prompt

    def add_special_tokens(self, conversation: Conversation) -> bool:
        return False  # already rendered: as OpenRLHF's serve_rm (add_special_tokens=False)


class ServedModel:
    """The reward model being served: ``score(kind, items) -> Scores`` (values combined by weights).

    Args:
        source, options: as for ``load_reward`` (normalization belongs to the trainer).
        broadcast: ZeRO-3 rank 0: hand each batch to the other ranks before scoring it.
    """

    def __init__(self, source: str, options: dict, broadcast: bool = False):
        from .reward_fn import load_reward

        check_serve_options(source, options)
        self.reward = load_reward(source, **options)
        self.chat_scorer = self.reward.scorer
        self.text_scorer = copy.copy(self.chat_scorer)
        if hasattr(self.text_scorer, "renderer"):
            self.text_scorer.renderer = _PreRendered()
        self.broadcast = broadcast
        model = getattr(self.chat_scorer, "model", None)
        if model is not None:
            from .scorers.zero3 import partitioned_param_bytes  # imports no deepspeed

            # Under ZeRO-3: this rank's shard only (/ready reports it).
            self.parameter_bytes = partitioned_param_bytes(model)
        else:
            self.parameter_bytes = None

    def score(self, kind: str, items: list) -> Scores:
        if self.broadcast:
            _broadcast((kind, items))
        return self._score(kind, items)

    def _score(self, kind: str, items: list) -> Scores:
        if kind == TEXT:
            scores = self.text_scorer.score([Conversation(text, "") for text in items])
        else:
            scores = self.chat_scorer.score(items)
        values = None
        if self.reward.options.attribute_weights is not None or scores.values is not None:
            values = self.reward.combine(scores)
        return Scores(values=values, attributes=scores.attributes, num_truncated=scores.num_truncated)

    @property
    def columns(self) -> int:
        """Triton's ``rewards`` width: 1, or the attribute count when there is no single reward."""
        opts = self.reward.options
        if opts.attribute_weights is None and opts.attributes and len(opts.attributes) > 1:
            return len(opts.attributes)
        return 1


def check_serve_options(source: str, options: dict) -> None:
    """Options a server cannot honour, and a source that names nothing, refused before the model loads."""
    from .options import RewardOptions
    from .reward_fn import resolve_local_source

    opts = RewardOptions.from_kwargs(**options)  # unknown names and bad values fail here, early
    opts.check_applies_to_source(remote=False)  # protocol=, timeout=, ... would do nothing here
    resolve_local_source(source)  # a missing folder: say so now, not after the server started
    if opts.normalize != "none":
        raise ConfigError(
            "--option normalize=... is per prompt over a trainer's batch; a server scores requests, so normalize in the "
            "trainer: load_reward(url, protocol=..., normalize=...)"
        )


def _broadcast(message: Any) -> Any:
    import torch.distributed as dist

    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def follow_rank0(model: ServedModel) -> None:
    """Ranks > 0 under ZeRO-3: score every batch rank 0 broadcasts, until it sends None."""
    while True:
        message = _broadcast(None)
        if message is None:
            return
        kind, items = message
        model._score(kind, items)


def slice_scores(scores: Scores, start: int, stop: int) -> Scores:
    return Scores(
        values=scores.values[start:stop] if scores.values is not None else None,
        attributes={name: column[start:stop] for name, column in scores.attributes.items()},
    )


@dataclass
class _Pending:
    items: list
    future: asyncio.Future


class Batcher:
    """Dynamic batching: requests queued per kind are coalesced into one scorer call.

    A batch closes when it holds ``max_batch_size`` conversations or ``max_wait_s`` after
    its first request arrived; a request bigger than ``max_batch_size`` is scored alone.
    Scoring runs on one worker thread, so batches never overlap (ZeRO-3 ranks stay in step).
    """

    def __init__(self, score, max_batch_size: int, max_wait_s: float, on_batch=None):
        self.score, self.max_batch_size, self.max_wait_s = score, max_batch_size, max_wait_s
        self.on_batch = on_batch or (lambda n: None)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewardbridge-score")
        self.queues: dict[str, asyncio.Queue] = {}
        self.workers: list[asyncio.Task] = []

    async def submit(self, kind: str, items: list) -> Scores:
        if kind not in self.queues:
            self.queues[kind] = asyncio.Queue()
            self.workers.append(asyncio.get_running_loop().create_task(self._work(kind)))
        future = asyncio.get_running_loop().create_future()
        await self.queues[kind].put(_Pending(items, future))
        return await future

    async def _work(self, kind: str) -> None:
        queue, carry = self.queues[kind], None
        loop = asyncio.get_running_loop()
        while True:
            first = carry or await queue.get()
            carry, batch, size = None, [first], len(first.items)
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch_size:
                remaining = deadline - loop.time()
                try:
                    nxt = queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(queue.get(), remaining)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if size + len(nxt.items) > self.max_batch_size:
                    carry = nxt  # opens the next batch
                    break
                batch.append(nxt)
                size += len(nxt.items)
            items = [item for pending in batch for item in pending.items]
            self.on_batch(len(items))
            try:
                scores = await loop.run_in_executor(self.executor, self.score, kind, items)
            except Exception as error:  # every request of the batch gets the error
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            offset = 0
            for pending in batch:
                n = len(pending.items)
                if not pending.future.done():
                    pending.future.set_result(slice_scores(scores, offset, offset + n))
                offset += n


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


KNOWN_ROUTES = ("/v1/chat/completions", "/get_reward", "/classify", "/pooling", "/v1/score", "/health", "/ready", "/metrics")


def create_app(model_loader, settings: ServerSettings):
    """The FastAPI app. ``model_loader()`` returns a :class:`ServedModel` (called on a thread at startup)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, Response

    from .scorers import native, nim, openrlhf, triton, vllm

    state: dict[str, Any] = {"model": None, "error": None}
    metrics = Metrics()
    api_key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
    splitter = None
    if settings.policy_tokenizer:
        from transformers import AutoTokenizer

        splitter = openrlhf.PolicyTextSplitter(AutoTokenizer.from_pretrained(settings.policy_tokenizer))
    batcher = Batcher(
        lambda kind, items: state["model"].score(kind, items), settings.max_batch_size, settings.max_wait_ms / 1000,
        on_batch=metrics.batch_size.observe,
    )

    def load():
        try:
            state["model"] = model_loader()
            logger.info("model loaded; ready")
        except Exception as error:  # noqa: BLE001: reported on /ready and in the log
            state["error"] = f"{type(error).__name__}: {error}"
            logger.error("loading the model failed: %s", state["error"])

    @asynccontextmanager
    async def lifespan(app):
        thread = threading.Thread(target=load, name="rewardbridge-load", daemon=True)
        thread.start()
        yield
        batcher.executor.shutdown(wait=True)

    app = FastAPI(title="rewardbridge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.model = state
    app.state.metrics = metrics

    def error_response(status: int, message: str, headers: dict | None = None):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status, headers=headers)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        route = path if path in KNOWN_ROUTES else ("/v2" if path.startswith("/v2") else "other")
        began = time.perf_counter()
        if api_key and path != "/health":
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

    def check_limits(items: list) -> None:
        if len(items) > settings.max_conversations:
            raise HTTPError(413, f"request has {len(items)} conversations > the limit {settings.max_conversations}; raise --max-conversations or send fewer")
        for i, item in enumerate(items):
            chars = len(item) if isinstance(item, str) else sum(len(m["content"]) for m in item.messages())
            if chars > settings.max_chars:
                raise HTTPError(422, f"conversation {i} has {chars} characters > the limit {settings.max_chars}; raise --max-chars")

    async def scored(kind: str, items: list) -> Scores:
        if state["model"] is None:
            if state["error"]:
                raise HTTPError(500, f"the model failed to load: {state['error']}")
            raise HTTPError(503, "the model is still loading; see GET /ready", {"Retry-After": "1"})
        check_limits(items)
        try:
            scores = await batcher.submit(kind, items)
        except RewardBridgeError as error:  # the request's data: chat data without a chat template, too long, ...
            raise HTTPError(422, str(error)) from None
        except Exception as error:  # noqa: BLE001: the client sees a 500 it may retry
            logger.exception("scoring failed")
            raise HTTPError(500, f"scoring failed: {type(error).__name__}: {error}") from None
        metrics.conversations.inc(len(items))
        return scores

    def parsed(parse, *args):
        try:
            return parse(*args)
        except InputError as error:
            raise HTTPError(422, str(error)) from None

    @app.exception_handler(HTTPError)
    async def http_error(request, error: HTTPError):
        return error_response(error.status, error.message, error.headers)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        conversation = parsed(nim.parse_request, await body_of(request))
        scores = await scored(CHAT, [conversation])
        return JSONResponse(nim.format_response(scores, 0, settings.model_name))

    @app.post("/get_reward")
    async def get_reward(request: Request):
        queries, prompts = parsed(openrlhf.parse_request, await body_of(request))
        if splitter is None:
            scores = await scored(TEXT, queries)
        else:
            if prompts is None:
                raise HTTPError(422, "field 'prompts' is missing; --policy-tokenizer splits each query at its prompt")
            conversations = [parsed(splitter.split, q, p, i) for i, (q, p) in enumerate(zip(queries, prompts))]
            scores = await scored(CHAT, conversations)
        return JSONResponse(openrlhf.format_response(_rewards(scores, "/get_reward")))

    async def classify_like(request: Request, fmt):
        kind, items = parsed(vllm.parse_request, await body_of(request))
        scores = await scored(CHAT if kind == "chat" else TEXT, items)
        return JSONResponse(fmt(scores, settings.model_name))

    @app.post("/classify")
    async def classify(request: Request):
        return await classify_like(request, vllm.format_classify)

    @app.post("/pooling")
    async def pooling(request: Request):
        return await classify_like(request, vllm.format_pooling)

    @app.post("/v1/score")
    async def score(request: Request):
        conversations = parsed(native.parse_request, await body_of(request))
        return JSONResponse(native.format_response(await scored(CHAT, conversations)))

    # -- KServe v2 (Triton) --------------------------------------------------------------------

    def check_model(name: str) -> None:
        if name != settings.model_name:
            raise HTTPError(404, f"unknown model {name!r}; this server serves {settings.model_name!r}")

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def triton_infer(name: str, request: Request, version: str = "1"):
        check_model(name)
        sentences, header = parsed(triton.parse_request, await body_of(request), request.headers.get(triton.HEADER_LENGTH))
        scores = await scored(TEXT, sentences)
        body, headers = triton.format_response(triton.reward_matrix(scores), header, settings.model_name)
        return Response(body, headers=headers)

    @app.get("/v2/health/live")
    async def live():
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def triton_ready(name: str | None = None, version: str | None = None):
        if name is not None:
            check_model(name)
        return Response(status_code=200 if state["model"] is not None else 503)

    @app.get("/v2")
    async def triton_server_metadata():
        from . import __version__

        return triton.server_metadata(__version__)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def triton_model_metadata(name: str, version: str | None = None):
        check_model(name)
        columns = state["model"].columns if state["model"] is not None else 1
        return triton.model_metadata(settings.model_name, columns)

    # -- operations ----------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if state["model"] is not None:
            return {"ready": True, "model": settings.model_name, "parameter_bytes": state["model"].parameter_bytes,
                    "processes": int(os.environ.get("WORLD_SIZE", "1"))}
        return JSONResponse({"ready": False, "error": state["error"]}, status_code=503)

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _rewards(scores: Scores, route: str) -> list[float]:
    if scores.values is None:
        raise HTTPError(
            422, f"{route} returns one reward per text, but the model has attributes {list(scores.attributes)} and no "
            "weights; start the server with --option attribute_weights=[...]",
        )
    return scores.values.tolist()


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

    from .scorers import is_remote

    if is_remote(source):
        raise ConfigError(f"rewardbridge serve serves a local model; {source!r} is already an endpoint")
    check_serve_options(source, options)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(settings.api_key_env or ""):
        logger.warning("serving on %s with no API key: anyone who can reach this port can use the model; "
                       "set the environment variable %s", settings.host, settings.api_key_env)
    zero3 = bool(options.get("zero3"))
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if zero3:
        # ZeRO-3 loading is collective: every rank loads before rank 0 starts serving.
        model = ServedModel(source, options, broadcast=world > 1)
        if rank != 0:
            follow_rank0(model)
            return
        loader = lambda: model  # noqa: E731
    elif world > 1:
        raise ConfigError("several processes serve one model only with --option zero3=true (each rank holds a shard)")
    else:
        def loader():
            try:
                return ServedModel(source, options)
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
            _broadcast(None)  # release the other ranks
    if app.state.model["error"]:
        print(f"rewardbridge: error: the model failed to load: {app.state.model['error']}", file=sys.stderr)
        raise SystemExit(1)
