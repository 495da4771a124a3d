"""rewardbridge's own protocol: conversations in (prompt/completion as text or messages), rewards and attributes out.

Request: POST /v1/score ``{"model", "conversations": [{"prompt": str | [messages],
"completion": str | [messages]}, ...]}``. Answer: ``{"rewards": [float | null, ...],
"attributes": {name: [float, ...]}}`` (``rewards`` null for a multi-attribute model without
weights). The server renders with the reward model's own template, so a conversation scores
as it would in-process (to float rounding: a batch's padding can move the last bits, 6e-8 measured).
"""

from __future__ import annotations

import json
from typing import Any

from ..conversation import Conversation
from ..scorers.base import Scores
from ..scorers.exchange import ProtocolError, Request
from ..messages import field_namer
from ._wire import check_model, field, is_number_list, load_json
from .base import CHAT, Call, Codec, Route, Rows, check_attribute_names

PATH = "/v1/score"


class NativeClient(Codec):
    """Client side: conversations in requests of ``request_batch_size``."""

    protocol = "rewardbridge"
    renders_here = False  # the server renders with the reward model's own template
    summary = "POST /v1/score, request_batch_size conversations per request, as text or messages"

    def request(self, batch: list[Conversation]) -> Request:
        items = [{"prompt": _plain(c.prompt), "completion": _plain(c.completion)} for c in batch]
        # Encoded here, as aiohttp's json= would: a request in flight then holds bytes, not dicts the GC walks.
        body = json.dumps({"model": self.options.model_name, "conversations": items}).encode()
        return Request(PATH, content=body, content_type="application/json")

    def parse(self, response: Any, n: int) -> Rows:
        try:
            body = response.json()
            rewards, attributes = body.get("rewards"), body.get("attributes") or {}
        except (ValueError, AttributeError):
            raise ProtocolError(f"not a JSON object with 'rewards': {response.text[:200]!r}") from None
        if not attributes and is_number_list(rewards, n):  # the common answer, read without the general checks
            return Rows(values=[float(v) for v in rewards], attributes={})
        columns = {"rewards": rewards} if rewards is not None else {}
        columns.update(attributes)
        for name, column in columns.items():
            if not is_number_list(column, n):
                raise ProtocolError(f"'{name}' is not a list of {n} numbers")
        if attributes:
            check_attribute_names(list(attributes), self.options, "the answer")
        if rewards is None and not attributes:
            raise ProtocolError("the answer has neither 'rewards' nor 'attributes'")
        return Rows(
            values=[float(v) for v in rewards] if rewards is not None else None,
            attributes={k: [float(v) for v in col] for k, col in attributes.items()},
        )


def _plain(part: Any) -> Any:
    return part if isinstance(part, str) else [dict(m) for m in part]


def parse_request(body: bytes, served: str | None = None) -> list[Conversation]:
    data = load_json(body)
    check_model(data, served)
    items = field(data, "conversations", list)
    conversations = []
    for i, item in enumerate(items):
        where = f"conversations[{i}]."
        prompt = field(item, "prompt", (str, list), where=where)
        completion = field(item, "completion", (str, list), where=where)
        # Read as load_reward reads a sample (text or messages, either side), errors naming the field.
        names = (field_namer(f"conversations[{i}].prompt"), field_namer(f"conversations[{i}].completion"))
        conversations.append(Conversation.from_trl(prompt, completion, names=names))
    return conversations


def format_response(scores: Scores) -> dict:
    return {
        "rewards": scores.values.tolist() if scores.values is not None else None,
        "attributes": {name: column.tolist() for name, column in scores.attributes.items()},
    }


async def serve_score(call: Call) -> dict:
    conversations = parse_request(call.body, call.server.settings.model_name)
    return format_response(await call.server.score(CHAT, conversations))


CLIENT = NativeClient
ROUTES = (Route("POST", PATH, serve_score),)
