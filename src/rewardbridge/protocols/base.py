"""The two contracts a protocol module fills: what its client codec hands the transport and
the remote scorer, and what its server routes get from ``rewardbridge serve``.

Client side: a codec has ``chunks(conversations) -> [[index, ...]]`` (which conversations share
a request), ``request(batch) -> Request`` and ``parse(response, n) -> Rows``; the transport
(``scorers/transport.py``) sends the request, retries and fails over.

Server side: ``ROUTES`` is a tuple of :class:`Route`; a handler gets a :class:`Call` and
returns a JSON-able dict or an :class:`Answer`. It raises ``InputError`` for a malformed body
(422 naming the field) or :class:`HTTPError` for anything else it must refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence

from ..scorers.exchange import ProtocolError

# What a route hands the served model: conversations its template renders, or text already rendered.
CHAT, TEXT = "chat", "text"
# Plain text a tokenizer reads with its special tokens (vLLM's /classify and /pooling ``input``),
# unlike TEXT (already rendered for the model: Triton sentences, OpenRLHF queries).
PLAIN = "plain"


@dataclass(slots=True)
class Rows:
    """What one answer said about its n conversations: per row, a value and/or attributes."""

    values: list[float] | None = None
    attributes: dict[str, list[float]] = field(default_factory=dict)


def batched(n: int, size: int) -> list[list[int]]:
    """Indices 0..n-1 in runs of ``size``.

    >>> batched(5, 2)
    [[0, 1], [2, 3], [4]]
    """
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def remote_renderer(options: Any, default_mode: str = "auto"):
    """The renderer a client uses when its protocol carries rendered text.

    With ``tokenizer=DIR`` (the reward model's tokenizer, or one with its chat template)
    chat data is rendered by its template; without, plain prompt+completion for standard
    data, SteerLM when ``render='steerlm'``.
    """
    from ..conversation import Renderer

    tokenizer = None
    if options.tokenizer:
        from transformers import AutoTokenizer

        from ..checkpoint import from_pretrained_or_explain

        tokenizer = from_pretrained_or_explain(AutoTokenizer, options.tokenizer, "tokenizer", trust_remote_code=options.trust_remote_code)
    mode = options.render if options.render != "auto" else default_mode
    return Renderer(tokenizer=tokenizer, mode=mode, chat_template=options.chat_template, judge_prompt=options.judge_prompt,
                    system_prompt=options.system_prompt)


class Codec:
    """The client side of a protocol: which conversations share a request, what a request holds
    (``request``) and how its answer reads (``parse``), for ``scorers/remote.py``.

    ``renders_here``: the protocol carries rendered text, so the client renders (with
    ``default_render`` unless ``render=`` says otherwise; ``resolve.py`` builds the renderer).
    ``batches``: several conversations share a request (``request_batch_size``), so the client may
    also pool concurrent calls into one (``scorers/coalesce.py``); False for one conversation (or
    one comparison) per request. ``summary``: one line for ``rewardbridge inspect``.
    """

    protocol: str = ""
    summary: str = ""
    batches: bool = True
    renders_here: bool = False
    default_render: str = "auto"

    def __init__(self, options: Any, renderer: Any = None):
        self.options = options
        self.renderer = (renderer or remote_renderer(options, self.default_render)) if self.renders_here else None

    def chunks(self, conversations: list) -> list[list[int]]:
        """Index runs that share a request: ``request_batch_size`` at a time."""
        return batched(len(conversations), self.options.request_batch_size)


def check_attribute_names(got: Sequence[str], options: Any, where: str) -> None:
    """The endpoint's attribute names must be the ones ``attributes=`` expects, when given."""
    if options.attributes and list(got) != list(options.attributes) and set(got) != set(options.attributes):
        raise ProtocolError(f"{where} has attributes {list(got)}, but attributes= expects {list(options.attributes)}")


# -- server side ------------------------------------------------------------------------------


class HTTPError(Exception):
    """An answer other than 200, with a message naming the field or the limit (and its flag)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class Answer:
    """A non-JSON (or non-200) answer: raw bytes and headers (Triton's binary tensors, a bare status)."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    """One request as a route sees it.

    Attributes:
        body: the request body (already bounded by ``--max-body-bytes``).
        headers: request headers, names in lower case.
        params: the route's path parameters (``{name}`` in ``/v2/models/{name}/infer``).
        server: the running server: ``await server.score(CHAT | TEXT, items) -> Scores``,
            ``server.settings`` (its flags), ``server.model`` (None while loading),
            ``server.splitter`` (``--policy-tokenizer``'s, or None).
    """

    body: bytes
    headers: Mapping[str, str]
    params: dict[str, str]
    server: Any


Handler = Callable[[Call], Awaitable["dict | Answer"]]


@dataclass(frozen=True)
class Route:
    method: str  # "GET" | "POST"
    path: str  # a path template: "/v2/models/{name}/infer"
    handler: Handler
