"""NVIDIA NIM reward models (OpenAI-compatible chat completions): both directions of the wire format.

Request: POST /v1/chat/completions ``{"model", "messages": [user prompt, assistant response]}``,
one conversation per request (the NIM API has no batch). Answer (REFERENCE.md §2):
``choices[0].message.content`` = ``helpfulness:1.2578,correctness:0.4336,...`` (Nemotron-4-340B)
or ``reward:<float>`` (Llama-3.1-Nemotron-70B-Reward), the same pairs in
``choices[0].logprobs.content`` as ``[{"token": name, "logprob": value}]``. One hosted
endpoint sent ``message`` as a list: parsed defensively.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..conversation import Conversation
from ..errors import InputError
from ..scorers.base import Scores
from ..scorers.exchange import ProtocolError, Request
from ._wire import chat_conversation, check_model, field, load_json
from .base import CHAT, Call, Codec, Route, Rows, check_attribute_names

PATH = "/v1/chat/completions"
SCALAR_NAME = "reward"


def format_content(pairs: list[tuple[str, float]]) -> str:
    """``[("a", 1.5), ("b", -2.0)]`` -> ``"a:1.5,b:-2.0"`` (full float precision, not NIM's 4 digits).

    >>> format_content([("reward", -3.28125)])
    'reward:-3.28125'
    """
    return ",".join(f"{name}:{float(value)!r}" for name, value in pairs)


def parse_content(text: str) -> list[tuple[str, float]]:
    """``"a:1.5,b:-2"`` -> ``[("a", 1.5), ("b", -2.0)]``; ProtocolError on anything else.

    >>> parse_content("helpfulness:1.2578, correctness:0.4336")
    [('helpfulness', 1.2578), ('correctness', 0.4336)]
    """
    pairs = []
    for item in text.strip().split(","):
        name, sep, value = item.partition(":")
        try:
            pairs.append((name.strip(), float(value)))
        except ValueError:
            raise ProtocolError(f"message content {text[:200]!r} is not 'name:value,...'") from None
        if not sep or not name.strip():
            raise ProtocolError(f"message content {text[:200]!r} is not 'name:value,...'")
    return pairs


# -- client ----------------------------------------------------------------------------------


class NimClient(Codec):
    """Client side: one request per conversation, ``content`` parsed into a reward or attributes."""

    protocol = "nim"
    batches = False  # the NIM API takes one conversation per request
    renders_here = False  # NIM applies the model's own template
    batches = False  # one conversation per request
    summary = "POST /v1/chat/completions, one conversation per request; the answer's content is name:value pairs"

    def chunks(self, conversations: list[Conversation]) -> list[list[int]]:
        return [[i] for i in range(len(conversations))]

    def request(self, batch: list[Conversation]) -> Request:
        (conversation,) = batch
        return Request(PATH, json={"model": self.options.model_name, "messages": conversation.messages()})

    def parse(self, response: Any, n: int) -> Rows:
        try:
            body = response.json()
            choice = body["choices"][0]
            message = choice["message"]
            if isinstance(message, list):  # a hosted endpoint's quirk (REFERENCE.md §2)
                message = next(m for m in message if isinstance(m, dict) and m.get("content"))
            content = message["content"]
        except (ValueError, KeyError, IndexError, TypeError, StopIteration):
            raise ProtocolError(f"no choices[0].message.content in {response.text[:200]!r}") from None
        if not isinstance(content, str):
            raise ProtocolError(f"choices[0].message.content is {type(content).__name__}, not a string")
        pairs = parse_content(content)
        if len(pairs) == 1 and (pairs[0][0] == SCALAR_NAME or not self.options.attributes):
            return Rows(values=[pairs[0][1]])
        check_attribute_names([name for name, _ in pairs], self.options, "the answer")
        return Rows(attributes={name: [value] for name, value in pairs})


# -- server ----------------------------------------------------------------------------------


def parse_request(body: bytes, served: str | None = None) -> Conversation:
    """A chat completions body -> the conversation whose last (assistant) turn is scored."""
    data = load_json(body)
    check_model(data, served)
    if isinstance(data, dict) and data.get("stream") not in (None, False):
        raise InputError("field 'stream' must be false or absent: a reward is one answer, not a stream")
    return chat_conversation(field(data, "messages", list))


def format_response(scores: Scores, row: int, model: str) -> dict:
    """One row of ``scores`` as a chat completion; attributes when the model has them, else ``reward:``."""
    if scores.attributes and scores.values is None:
        pairs = [(name, float(column[row])) for name, column in scores.attributes.items()]
    else:
        pairs = [(SCALAR_NAME, float(scores.values[row]))]
    content = format_content(pairs)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": {"content": [{"token": name, "logprob": value, "bytes": None, "top_logprobs": []} for name, value in pairs]},
            "finish_reason": "length",
        }],
        "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
    }


async def serve_chat_completions(call: Call) -> dict:
    conversation = parse_request(call.body, call.server.settings.model_name)
    scores = await call.server.score(CHAT, [conversation])
    return format_response(scores, 0, call.server.settings.model_name)


CLIENT = NimClient
ROUTES = (Route("POST", PATH, serve_chat_completions),)
