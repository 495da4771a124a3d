"""OpenRLHF's remote reward model: both directions of POST /get_reward.

Request ``{"query": [full decoded texts], "prompts": [...], "labels": [...]}``; answer
``{"rewards": [...], "scores": [...], "extra_logs": {...}}`` (REFERENCE.md §3, §7). OpenRLHF
sends ``query`` = the policy's decoded, chat-templated prompt+response with special tokens
kept, and ``prompts`` = the prompt alone; its own server scores ``query`` as given.
"""

from __future__ import annotations

from typing import Any

from ..conversation import Conversation
from ..errors import InputError
from ..scorers.base import Scores
from ..scorers.exchange import ProtocolError, Request
from ._wire import field, is_number_list, load_json
from .base import CHAT, TEXT, Call, Codec, HTTPError, Route, Rows

PATH = "/get_reward"


class OpenRLHFClient(Codec):
    """Client side: full texts rendered here (``tokenizer=`` for a chat template), in requests of ``request_batch_size``."""

    protocol = "openrlhf"
    renders_here = True
    summary = "POST /get_reward, request_batch_size rendered texts per request"

    def request(self, batch: list[Conversation]) -> Request:
        if self.renderer.mode == "auto" and not self.renderer.has_chat_template:
            if any(c.has_messages for c in batch):  # raw text one way (a messages completion), refused the other
                raise InputError(
                    "protocol='openrlhf' sends each conversation as rendered text, and these samples hold chat messages "
                    "(in the prompt or the completion), which only the reward model's chat template renders the way it "
                    "reads them: pass tokenizer='<the reward model's tokenizer>', or send text prompts and completions"
                )
        return Request(PATH, json={
            "query": [self.renderer.render(c) for c in batch],
            "prompts": [c.prompt_text() for c in batch],
            "labels": [None] * len(batch),
        })

    def parse(self, response: Any, n: int) -> Rows:
        try:
            body = response.json()
            rewards = body.get("rewards", body.get("scores"))
        except (ValueError, AttributeError):
            raise ProtocolError(f"not a JSON object with 'rewards': {response.text[:200]!r}") from None
        if not is_number_list(rewards, n):
            raise ProtocolError(f"'rewards' is not a list of {n} numbers")
        return Rows(values=[float(v) for v in rewards])


# -- server ----------------------------------------------------------------------------------


def parse_request(body: bytes) -> tuple[list[str], list[str] | None]:
    """-> (queries, prompts or None)."""
    data = load_json(body)
    queries = field(data, "query", list)
    if not all(isinstance(q, str) for q in queries):
        raise InputError("field 'query' must be a list of strings")
    prompts = field(data, "prompts", list, required=False)
    if prompts is not None and (len(prompts) != len(queries) or not all(isinstance(p, str) for p in prompts)):
        raise InputError(f"field 'prompts' must be a list of {len(queries)} strings, one per query")
    return queries, prompts


def format_response(rewards: list[float]) -> dict:
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}


class PolicyTextSplitter:
    """Recovers (prompt, response) from OpenRLHF's decoded query with the POLICY's tokenizer.

    The response is ``query`` minus its ``prompt`` prefix, the policy's special tokens
    stripped. The user's message is read out of the templated prompt by rendering a probe
    message with the policy's chat template and taking what lies between its prefix and
    suffix; a prompt that does not fit the template is used as text, special tokens stripped.
    """

    PROBE = "\u2063PROBE\u2063"

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.specials = sorted({t for t in tokenizer.all_special_tokens if t}, key=len, reverse=True)
        self.prefix = self.suffix = None
        if getattr(tokenizer, "chat_template", None):
            probe = tokenizer.apply_chat_template([{"role": "user", "content": self.PROBE}], tokenize=False, add_generation_prompt=True)
            self.prefix, _, self.suffix = probe.partition(self.PROBE)

    def strip_specials(self, text: str) -> str:
        for token in self.specials:
            text = text.replace(token, "")
        return text

    def split(self, query: str, prompt: str, index: int) -> Conversation:
        if not query.startswith(prompt):
            raise InputError(f"field 'query[{index}]' does not start with 'prompts[{index}]'; --policy-tokenizer needs both")
        response = self.strip_specials(query[len(prompt):]).strip()
        if self.prefix is not None and prompt.startswith(self.prefix) and prompt.endswith(self.suffix) and len(prompt) >= len(self.prefix) + len(self.suffix):
            user = prompt[len(self.prefix):len(prompt) - len(self.suffix)]
        else:
            user = self.strip_specials(prompt).strip()
        return Conversation.from_trl([{"role": "user", "content": user}], [{"role": "assistant", "content": response}])


def rewards_of(scores: Scores, route: str) -> list[float]:
    """One reward per text; a multi-attribute model without weights has none to give."""
    if scores.values is None:
        raise HTTPError(
            422, f"{route} returns one reward per text, but the model has attributes {list(scores.attributes)} and no "
            "weights; start the server with --option attribute_weights=[...]",
        )
    return scores.values.tolist()


async def serve_get_reward(call: Call) -> dict:
    queries, prompts = parse_request(call.body)
    splitter = call.server.splitter
    if splitter is None:
        scores = await call.server.score(TEXT, queries)
    else:
        if prompts is None:
            raise HTTPError(422, "field 'prompts' is missing; --policy-tokenizer splits each query at its prompt")
        conversations = [splitter.split(q, p, i) for i, (q, p) in enumerate(zip(queries, prompts))]
        scores = await call.server.score(CHAT, conversations)
    return format_response(rewards_of(scores, PATH))


CLIENT = OpenRLHFClient
ROUTES = (Route("POST", PATH, serve_get_reward),)
