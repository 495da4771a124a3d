"""Small helpers the protocol codecs share: reading JSON bodies and fields with errors that name the field."""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import InputError


# A \uD800-\uDFFF escape: half of a surrogate pair. A pair decodes to one character; a lone one
# is valid JSON but no UTF-8 text, and would fail later, inside the tokenizer (a 500 clients retry).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF][0-9a-fA-F]{2}")


def load_json(body: bytes | str, what: str = "request body") -> Any:
    """Parse JSON, or raise InputError naming ``what`` (the server answers 422): invalid JSON,
    nesting deeper than Python's parser takes, a body that is not UTF-8, or a string holding a lone
    surrogate (named by its path)."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        # Strictly UTF-8 (RFC 8259 §8.1): json.loads(bytes) would guess UTF-16/32 and decode with
        # surrogatepass, letting raw surrogate bytes (\xed\xa0\x80) through to the tokenizer (a 500).
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as error:
            raise InputError(
                f"the {what} is not UTF-8 text (byte {error.start}: {error.reason}); send JSON encoded as UTF-8"
            ) from None
    try:
        data = json.loads(body)
    except RecursionError:
        raise InputError(f"the {what} nests JSON arrays or objects too deeply to read; no reward request needs more than a few levels") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"the {what} is not valid JSON ({error})") from None
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if _SURROGATE_ESCAPE.search(raw):  # rare: only then walk the data for the bad string
        where = _lone_surrogate(data)
        if where is not None:
            raise InputError(f"field {where!r} holds a lone UTF-16 surrogate (an unpaired \\uD800-\\uDFFF escape), which is not text; send UTF-8 text")
    return data


def _lone_surrogate(data: Any) -> str | None:
    """The path of the first string (key or value) that is not valid Unicode text, or None."""
    stack = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path or "(the body)"
        elif isinstance(value, dict):  # pushed in reverse, so the first bad string is found first
            for key, item in reversed(value.items()):
                stack.append((f"{path}.{key}" if path else key, item))
                stack.append((f"{path}.{key}" if path else key, key))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", value[i]) for i in range(len(value) - 1, -1, -1))
    return None


def check_model(data: Any, served: str | None) -> None:
    """A body's ``model`` field, when it has one, must name the model served (Triton's route checks
    its path's name the same way): 404 naming the served name, never another model's scores."""
    if served is None or not isinstance(data, dict) or data.get("model") is None:
        return
    from .base import HTTPError

    if data["model"] != served:
        raise HTTPError(404, f"unknown model {data['model']!r}; this server serves {served!r} (rewardbridge serve --model-name)")


def is_number_list(column: Any, n: int) -> bool:
    """A list of ``n`` JSON numbers: no null (a failure must come back as an error, never a made-up
    score) and no true/false (Python's bool is an int).

    >>> is_number_list([1, 2.5], 2), is_number_list([1, None], 2), is_number_list([True], 1)
    (True, False, False)
    """
    return isinstance(column, list) and len(column) == n and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in column
    )


def field(body: Any, name: str, kind: type | tuple[type, ...], *, where: str = "", required: bool = True) -> Any:
    """``body[name]`` checked to be ``kind``; InputError names the field otherwise."""
    label = f"{where}{name}"
    if not isinstance(body, dict):
        raise InputError(f"expected a JSON object{' at ' + where.rstrip('.') if where else ''}, got {type(body).__name__}")
    if name not in body or body[name] is None:
        if required:
            raise InputError(f"field {label!r} is missing")
        return None
    value = body[name]
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise InputError(f"field {label!r} must be {names}, got {type(value).__name__}")
    return value


def messages_field(value: Any, label: str, completion: bool = False) -> list[dict]:
    """A list of {"role", "content"} messages, read as in-process data is (``messages.read_messages``:
    text parts joined with newlines, anything else refused), errors naming the field."""
    from ..messages import field_namer, read_messages

    return list(read_messages(value, field_namer(label), completion=completion))


def chat_conversation(value: Any, label: str = "messages"):
    """A flat chat body's messages (``/v1/chat/completions``, ``/classify``, ``/pooling``) -> the
    ``Conversation`` to score, split as in-process data is (``messages.split_flat``), errors naming the field."""
    from ..conversation import Conversation
    from ..messages import field_namer, split_flat

    prompt, completion = split_flat(messages_field(value, label), label)
    name = field_namer(label)
    return Conversation.from_trl(prompt, completion, names=(name, name))


def text_list(value: Any, label: str) -> list[str]:
    """A string or a list of strings -> list of strings."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"field {label!r} must be a string or a list of strings")
    return value
