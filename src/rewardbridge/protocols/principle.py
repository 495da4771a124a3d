"""A pointwise principle judge read from a chat endpoint's logprobs: the remote twin of the
local ``causal_logit`` (yes, no) judge, for Llama-3.3-Nemotron-70B-Reward-Principle and
Qwen3-Nemotron-32B-GenRM-Principle served by vLLM or NIM (OpenAI chat completions).

Request: POST /v1/chat/completions, one per response, ``logprobs: true, top_logprobs: 20``.
``messages`` is the conversation, the response as the assistant's turn, then the principle:

- as a ``{"role": "principle", "content": principle}`` message (Qwen3-Nemotron-32B-GenRM-
  Principle: its chat template has a principle role; the model reasons, then answers " Yes"
  or " No"), or
- with ``principle_prompt``, as a user turn (Llama-3.3-Nemotron-70B-Reward-Principle's card:
  "Evaluate the response to the previous prompt in terms of whether it satisfies this
  principle: {principle}. Only answer Yes or No.", one generated token).

Reward: ``logprob(yes) - logprob(no)`` at the answer token (``token_id=(yes, no)``, spelled
as the endpoint spells tokens): the last generated token that is yes or no after the last
``</think>`` (never one inside the judge's reasoning), or the only generated token. A reply
cut at ``max_tokens`` before its reasoning ended is no answer (asked again), except with
``max_tokens=1``. That is the card's ``score_yes - score_no`` of logits: the softmax
normaliser cancels. When one of the two is not among the 20 listed, its logprob is bounded
by the smallest listed (so the reward is never larger in size than the answer supports),
and the ``bounded`` attribute says so.
"""

from __future__ import annotations

import itertools
from typing import Any

from ..comparisons import REASONING_END, REASONING_START, answer_text
from ..scorers.exchange import ProtocolError, Request
from .base import Codec, Rows
from .genrm import PATH, Unparsed, chat_content

TOP_LOGPROBS = 20  # OpenAI's maximum, and vLLM's default --max-logprobs
DEFAULT_TOKENS = ("Yes", "No")


def answer_logprobs(
    positions: list[dict], yes: str, no: str, finish_reason: str | None = None, one_token: bool = False
) -> tuple[float, float, bool] | Unparsed:
    """(logprob of yes, logprob of no, bounded) at the answer token of ``logprobs.content``.

    The answer token is the last yes/no token after the last ``</think>`` (the judge's own
    reasoning may say "Yes" or "No" on the way; that is not its answer), or, when one token
    was generated, that token whatever was sampled. A reply cut at ``max_tokens``
    (``finish_reason="length"``) before its reasoning ended, or with a ``<think>`` never
    closed, has no answer (:class:`Unparsed`), except in the one-token mode (``one_token``:
    ``max_tokens=1``, the 70B card), where the cut is the point.

    >>> answer_logprobs([{"token": "Yes", "logprob": -0.1, "top_logprobs": [
    ...     {"token": "Yes", "logprob": -0.1}, {"token": "No", "logprob": -2.4}]}], "Yes", "No")
    (-0.1, -2.4, False)
    >>> thinking = [{"token": t, "logprob": -0.5} for t in ("<think>", "Yes", "?", "</think>")]
    >>> answer_logprobs([*thinking, {"token": "No", "logprob": -0.2, "top_logprobs": [
    ...     {"token": "No", "logprob": -0.2}, {"token": "Yes", "logprob": -1.9}]}], "Yes", "No")
    (-1.9, -0.2, False)
    >>> answer_logprobs([{"token": t, "logprob": -1.0} for t in ("<think>", "Yes", "...")], "Yes", "No", "length")
    Unparsed(reason="cut at max_tokens (finish_reason 'length') before the reasoning ended: no '</think>' among the 3 tokens generated")
    """
    tokens = [p["token"] if isinstance(p, dict) and isinstance(p.get("token"), str) else "" for p in positions]
    text = "".join(tokens)
    cut = text.rfind(REASONING_END)
    after = cut + len(REASONING_END) if cut != -1 else 0  # character offset where the answer starts
    starts = [0, *itertools.accumulate(len(t) for t in tokens)]
    answer_from = next((k for k, start in enumerate(starts[:-1]) if start >= after), len(tokens))
    single = len(positions) == 1
    if not one_token:
        if finish_reason == "length" and cut == -1:
            return Unparsed(f"cut at max_tokens (finish_reason 'length') before the reasoning ended: no {REASONING_END!r} "
                            f"among the {len(positions)} tokens generated")
        if REASONING_START in text[after:]:
            return Unparsed(f"the judge's {REASONING_START} was never closed: no answer after its reasoning")
    answer = positions[answer_from:]
    chosen = next((p for p in reversed(answer) if isinstance(p, dict) and p.get("token") in (yes, no)), None)
    if chosen is None and single and isinstance(positions[0], dict):  # one token (the 70B card): its logits, whatever was sampled
        chosen = positions[0]
    if chosen is None:
        where = f"after {REASONING_END!r} " if cut != -1 else ""
        return Unparsed(f"no {yes!r} or {no!r} token {where}among the {len(positions)} generated")
    listed: dict[str, float] = {}
    for entry in [chosen, *(chosen.get("top_logprobs") or [])]:
        if isinstance(entry, dict) and isinstance(entry.get("token"), str) and isinstance(entry.get("logprob"), (int, float)):
            listed[entry["token"]] = max(float(entry["logprob"]), listed.get(entry["token"], float("-inf")))
    if yes not in listed and no not in listed:
        return Unparsed(f"neither {yes!r} nor {no!r} is among the answer token's top_logprobs")
    floor = min(listed.values())
    return listed.get(yes, floor), listed.get(no, floor), yes not in listed or no not in listed


class PrincipleClient(Codec):
    """Client side: one chat completion per (conversation, principle), read from its logprobs."""

    protocol = "principle"
    batches = False  # chat completions: one conversation per request, never pooled
    renders_here = False
    batches = False  # one response per request
    scorer = "principle"  # reads the principle per row: scorers/judges.py
    summary = (
        "POST /v1/chat/completions per response with logprobs: the conversation, the response, then the principle "
        "(a 'principle' message, or principle_prompt as a user turn); reward = logprob(yes) - logprob(no) at the "
        "answer token (token_id=(yes, no), default ('Yes', 'No'))"
    )

    @classmethod
    def describe(cls, options: Any) -> list[tuple[str, str]]:
        """``rewardbridge inspect`` rows: the principle, how it is sent, what is read."""
        from ..conversation import Conversation
        from ..scorers.remote import worst_case_seconds

        principle = repr(options.principle) if options.principle else f"column {options.principle_column!r}"
        example = cls(options).request([(Conversation("What is 2+2?", "4"), options.principle or "<principle>")])
        yes, no = tuple(options.token_id) if options.token_id else DEFAULT_TOKENS
        return [
            ("principle", f"{principle}, sent {'in principle_prompt as a user turn' if options.principle_prompt else 'as a principle message'}"),
            ("readout", f"logprob({yes!r}) - logprob({no!r}) at the answer token (top_logprobs {TOP_LOGPROBS})"),
            ("parse", f"parse_retries {options.parse_retries}"),
            ("worst case", f"{worst_case_seconds(options):g} s before a hung request fails (keep it under the trainer's "
                           "ddp_timeout, 1800 s by default)"),
            ("input", "the prompt's messages, the answer without its reasoning as the assistant's turn, then the "
                      "principle; the judge's chat template renders them"),
            ("example", repr(example.json["messages"])),
        ]

    def chunks(self, conversations: list) -> list[list[int]]:
        return [[i] for i in range(len(conversations))]

    @property
    def tokens(self) -> tuple[str, str]:
        return tuple(self.options.token_id) if self.options.token_id else DEFAULT_TOKENS

    def request(self, batch: list) -> Request:
        """``batch``: one (Conversation, principle) pair."""
        ((conversation, principle),) = batch
        options = self.options
        messages = [{"role": m["role"], "content": m["content"]} for m in conversation.prompt_messages()]
        messages.append({"role": "assistant", "content": answer_text(conversation.completion_text())})
        if options.principle_prompt:
            messages.append({"role": "user", "content": options.principle_prompt.format(principle=principle)})
        else:
            messages.append({"role": "principle", "content": principle})
        body = {"model": options.model_name, "messages": messages, "logprobs": True, "top_logprobs": TOP_LOGPROBS,
                "temperature": 0.0 if options.temperature is None else options.temperature}
        body.update({k: v for k, v in (("top_p", options.top_p), ("max_tokens", options.max_tokens)) if v is not None})
        return Request(PATH, json=body)

    def parse(self, response: Any, n: int = 1) -> Rows | Unparsed:
        content, finish = chat_content(response)
        try:
            positions = response.json()["choices"][0]["logprobs"]["content"]
        except (KeyError, IndexError, TypeError):
            positions = None
        if not isinstance(positions, list):
            raise ProtocolError("no choices[0].logprobs.content: the endpoint must answer logprobs=true, top_logprobs=20")
        found = answer_logprobs(positions, *self.tokens, finish_reason=finish, one_token=self.options.max_tokens == 1)
        if isinstance(found, Unparsed):
            return Unparsed(f"{found.reason} (answer {(content or '')[-120:]!r})")
        yes, no, bounded = found
        return Rows(values=[yes - no], attributes={"logprob_yes": [yes], "logprob_no": [no], "bounded": [float(bounded)]})


CLIENT = PrincipleClient
ROUTES = ()
