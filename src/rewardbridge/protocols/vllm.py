"""vLLM pooling servers (``vllm serve --runner pooling --convert classify``): both directions.

POST /classify ``{"model", "input": str | [str]}`` or ``{"model", "messages": [...]}`` (one
chat, rendered by the server's template) -> ``{"data": [{"index", "probs": [...],
"num_classes"}]}``; POST /pooling ``{"model", "input", "task"}`` -> ``data[i].data``
(REFERENCE.md §3). A reward model's single class is its score (verl reads
``probs[-1]`` with the activation off); several classes are attributes, named by
``attributes=``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..conversation import Conversation
from ..scorers.base import Scores
from ..scorers.exchange import ProtocolError, Request
from ._wire import chat_conversation, check_model, field, load_json, text_list
from .base import CHAT, PLAIN, Call, Codec, Route, Rows, batched, check_attribute_names

CLASSIFY, POOLING = "/classify", "/pooling"


class VllmClient(Codec):
    """Client side: with a local chat template (``tokenizer=``) or ``render='steerlm'``/``'text'``, rendered
    text batched in ``input``; without, every conversation goes as ``messages``, one per request, so the
    server applies its model's own template to text rows and chat rows alike, as ``load_reward`` would."""

    protocol = "vllm"
    renders_here = True
    summary = ("POST /classify: with tokenizer= (or render=), request_batch_size rendered texts per request; without, "
               "each conversation as messages (one per request) for the server's template")

    def _as_messages(self, conversation: Conversation) -> bool:
        # No chat template here and no render= asked for: let the server apply the model's own, to every row
        # (a text row read as one user turn plus the answer, as in-process scoring reads it under a template).
        return self.renderer.mode == "auto" and self.renderer.resolved_mode(conversation) == "text"

    def chunks(self, conversations: list[Conversation]) -> list[list[int]]:
        singles = [[i] for i, c in enumerate(conversations) if self._as_messages(c)]
        rest = [i for i, c in enumerate(conversations) if not self._as_messages(c)]
        return singles + [[rest[j] for j in chunk] for chunk in batched(len(rest), self.options.request_batch_size)]

    def request(self, batch: list[Conversation]) -> Request:
        if len(batch) == 1 and self._as_messages(batch[0]):
            messages = self.renderer.with_system(batch[0]).messages()  # system_prompt goes as the server's system turn
            return Request(CLASSIFY, json={"model": self.options.model_name, "messages": messages})
        return Request(CLASSIFY, json={"model": self.options.model_name, "input": [self.renderer.render(c) for c in batch]})

    def parse(self, response: Any, n: int) -> Rows:
        try:
            data = sorted(response.json()["data"], key=lambda d: d["index"])
            probs = [[float(p) for p in d["probs"]] for d in data]
        except (ValueError, KeyError, TypeError):
            raise ProtocolError(f"no data[i].probs in {response.text[:200]!r}") from None
        if len(probs) != n or len({len(p) for p in probs}) != 1:
            raise ProtocolError(f"expected {n} rows of equal length in 'data', got {[len(p) for p in probs]}")
        width = len(probs[0])
        if width == 1:
            return Rows(values=[p[0] for p in probs])
        names = self.options.attributes
        if not names or len(names) != width:
            raise ProtocolError(f"each row has {width} classes; pass attributes= naming each, in order")
        check_attribute_names(names, self.options, "the answer")
        return Rows(attributes={name: [p[k] for p in probs] for k, name in enumerate(names)})


# -- server ----------------------------------------------------------------------------------


def parse_request(body: bytes, served: str | None = None) -> tuple[str, list]:
    """-> ("text", [rendered strings]) or ("chat", [one Conversation])."""
    data = load_json(body)
    check_model(data, served)
    if isinstance(data, dict) and data.get("messages") is not None:
        return "chat", [chat_conversation(field(data, "messages", list))]
    return "text", text_list(field(data, "input", (str, list)), "input")


def _rows(scores: Scores) -> list[list[float]]:
    if scores.values is not None:
        return [[v] for v in scores.values.tolist()]
    columns = [c.tolist() for c in scores.attributes.values()]
    return [list(row) for row in zip(*columns)]


def format_classify(scores: Scores, model: str) -> dict:
    rows = _rows(scores)
    return {
        "id": f"classify-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": [{"index": i, "label": str(max(range(len(r)), key=r.__getitem__)), "probs": r, "num_classes": len(r)}
                 for i, r in enumerate(rows)],
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


def format_pooling(scores: Scores, model: str) -> dict:
    return {
        "id": f"pool-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": [{"index": i, "object": "pooling", "data": r} for i, r in enumerate(_rows(scores))],
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


async def _serve_classify_like(call: Call, fmt) -> dict:
    kind, items = parse_request(call.body, call.server.settings.model_name)
    scores = await call.server.score(CHAT if kind == "chat" else PLAIN, items)  # text: with special tokens, as vLLM
    return fmt(scores, call.server.settings.model_name)


async def serve_classify(call: Call) -> dict:
    return await _serve_classify_like(call, format_classify)


async def serve_pooling(call: Call) -> dict:
    return await _serve_classify_like(call, format_pooling)


CLIENT = VllmClient
ROUTES = (Route("POST", CLASSIFY, serve_classify), Route("POST", POOLING, serve_pooling))
