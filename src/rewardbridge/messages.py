"""The one reading of TRL's and OpenAI's message forms, for every way a conversation arrives.

``load_reward``'s callable, ``rewardbridge score`` rows and every route of ``rewardbridge
serve`` (``/v1/score``, ``/v1/chat/completions``, ``/classify``, ``/pooling``) read a prompt or
a completion with :func:`read_turns`, so one conversation is read the same way wherever it
comes from, and scores the same. What it reads:

- a string (TRL standard data), as it is;
- a list of ``{"role", "content"}`` messages (TRL conversational data, OpenAI chat), where
  ``content`` is a string or a list of parts: text parts (``{"type": "text", "text": ...}``
  or a bare string) are joined with newlines, as vLLM's chat front end joins them;

and what it refuses, naming the place: a single message dict, an empty list, a message
without a string role or with no content, a non-text part (an image: a text reward model
would score the conversation without it), any other content (``[1, 2]``), and a completion
whose first message is not the assistant's (or that holds other than assistant and tool turns).

A place is named by a :data:`Namer`: in-process ``"sample 3: completion message 0 content
part 1"``, on the server ``"field 'messages[0].content[1]'"`` (:func:`field_namer`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from .errors import InputError

Message = dict[str, Any]
# A place inside a prompt or completion -> its name in messages: () the whole value, (j,) message j,
# (j, "role" | "content") one of its fields, (j, "content", k) content part k.
Namer = Callable[[tuple], str]
COMPLETION_ROLES = ("assistant", "tool")  # a completion is the model's turn, then any tool results


def sample_namer(where: str) -> Namer:
    """Names for in-process data: ``where`` is ``"sample 3: prompt"``.

    >>> sample_namer("sample 3: prompt")((0, "content", 1))
    'sample 3: prompt message 0 content part 1'
    """

    def name(path: tuple) -> str:
        text = where
        if path:
            text += f" message {path[0]}"
        if len(path) > 1:
            text += f" {path[1]}"
        if len(path) > 2:
            text += f" part {path[2]}"
        return text

    return name


def field_namer(label: str) -> Namer:
    """Names for a request body's field ``label`` (``"messages"``, ``"conversations[2].prompt"``).

    >>> field_namer("messages")((0, "content", 1))
    "field 'messages[0].content[1]'"
    """

    def name(path: tuple) -> str:
        text = label
        if path:
            text += f"[{path[0]}]"
        if len(path) > 1:
            text += f".{path[1]}"
        if len(path) > 2:
            text += f"[{path[2]}]"
        return f"field {text!r}"

    return name


def read_turns(value: Any, name: Namer, *, completion: bool = False) -> str | tuple[Message, ...]:
    """A prompt or completion: a string as it is, or messages checked and normalized (content as text)."""
    if isinstance(value, str):
        return value
    return read_messages(value, name, completion=completion)


def read_messages(value: Any, name: Namer, *, completion: bool = False) -> tuple[Message, ...]:
    """A list of ``{"role", "content"}`` messages, each content read as text by :func:`message_text`.

    >>> read_messages([{"role": "user", "content": [{"type": "text", "text": "Hi"}, "there"]}], field_namer("messages"))
    ({'role': 'user', 'content': 'Hi\\nthere'},)
    """
    if isinstance(value, Mapping):
        raise InputError(f"{name(())} is a single message dict; pass a list of messages ([{{'role': ..., 'content': ...}}]) or a string")
    if not isinstance(value, Sequence) or isinstance(value, (bytes, bytearray)):
        raise InputError(f"{name(())} is a {type(value).__name__}; TRL passes a string or a list of {{'role', 'content'}} messages")
    if not value:
        raise InputError(f"{name(())} is an empty list of messages; a {'completion' if completion else 'prompt'} needs at least one "
                         "message (or pass a string)")
    messages = []
    for j, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise InputError(f"{name((j,))} is a {type(message).__name__}, not a {{'role', 'content'}} dict")
        for key in ("role", "content"):
            if key not in message:
                raise InputError(f"{name((j,))} has no {key!r} (it has {sorted(map(str, message))}); every message needs 'role' and 'content'")
        role, content = message["role"], message["content"]
        if content is None and message.get("tool_calls"):
            content = ""  # OpenAI's form of an assistant turn that only calls tools: the same as content ""
        for key, value in (("role", role), ("content", content)):
            if value is None:
                raise InputError(f"{name((j,))} has {key!r}: null; every message needs a {key} (content may be \"\")")
        if not isinstance(role, str):
            raise InputError(f"{name((j,))} has role {role!r}; a role is a string such as 'user' or 'assistant'")
        if completion and (role not in COMPLETION_ROLES or (j == 0 and role != "assistant")):
            raise InputError(
                f"{name((j,))} has role {role!r}; a completion is the model's answer: role 'assistant' (tool results, role 'tool', "
                "may follow it). Put other turns in the prompt"
            )
        messages.append({**message, "content": message_text(content, lambda path, j=j: name((j, *path)))})
    return tuple(messages)


def split_flat(messages: Sequence[Message], label: str = "messages") -> tuple[list[Message], list[Message]]:
    """A flat message list (an OpenAI chat body) -> (prompt, completion), read as TRL pairs them: the
    completion is the trailing run of assistant and tool turns (the model's answer and any tool
    results), opening with the assistant's; the prompt is what comes before it and must hold a turn.

    >>> split_flat([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "tool", "content": "ok"}])
    ([{'role': 'user', 'content': '2+2?'}], [{'role': 'assistant', 'content': '4'}, {'role': 'tool', 'content': 'ok'}])
    """
    start = len(messages)
    while start > 0 and messages[start - 1].get("role") in COMPLETION_ROLES:
        start -= 1
    while start < len(messages) and messages[start].get("role") != "assistant":
        start += 1  # tool results before the answer belong to the prompt
    if start == len(messages):
        raise InputError(
            f"field '{label}[-1].role' is {messages[-1].get('role')!r}; the response to score comes last: role 'assistant' "
            "(tool results, role 'tool', may follow it)"
        )
    if start == 0:
        raise InputError(f"field '{label}' holds only the response ({len(messages)} assistant/tool message(s)); put the prompt "
                         "(a user turn) before it")
    return list(messages[:start]), list(messages[start:])


def message_text(content: Any, name: Namer | None = None) -> str:
    r"""A message's content as text: a string, or the text parts of a list of parts, joined with newlines.

    ``name(("content",))`` names the content, ``name(("content", k))`` part k.

    >>> message_text([{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}])
    'Hi\nthere'
    """
    name = name or (lambda path: "message " + " part ".join(str(p) for p in path))
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray, Mapping)):
        texts = []
        for k, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type", "text") if isinstance(part, Mapping) else type(part).__name__
                what = "a text part without a string 'text'" if kind == "text" else f"of type {kind!r}"
                raise InputError(
                    f"{name(('content', k))} is {what}; reward models here read text only (string parts or "
                    "{'type': 'text', 'text': ...}): drop non-text parts before scoring"
                )
        return "\n".join(texts)
    raise InputError(f"{name(('content',))} is a {type(content).__name__}; content is a string or a list of text parts")
