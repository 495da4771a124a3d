"""A pairwise generative reward model (GenRM) over OpenAI-compatible chat completions: the
client side of the wire format NVIDIA's Nemotron-3 recipes use (NeMo-Gym's
``resources_servers/genrm_compare``, README and ``utils.py``; its ``genrm_model`` server).

Request: POST /v1/chat/completions, one per comparison. ``messages`` is the conversation
history (user/assistant turns ending with the user's), then an optional
``{"role": "principle"}`` for judges trained with principles, then ``{"role": "response_1",
"content": A}`` and ``{"role": "response_2", "content": B}`` (the order genrm_model appends
them in). Sampling as genrm_compare's config: temperature 0.6, top_p 0.95, max_tokens 16384.

Answer: ``choices[0].message.content``; after any reasoning (``</think>``), the JSON
``{"score_1": 1-5, "score_2": 1-5, "ranking": 1-6}``: fenced ```json blocks first, then the
last top-level ``{...}`` that parses, has one of the keys and holds values in range
(``{"overall": {...}}`` is read too). A reply with none of them, or one cut at ``max_tokens``
(``finish_reason: "length"``) before its reasoning ended, is :class:`Unparsed` (asked again,
``parse_retries``).

The judge is an LLM served by vLLM or NIM; ``rewardbridge serve`` does not judge pairs, so
there are no server routes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from ..comparisons import NEUTRAL_RANKING, NEUTRAL_SCORE, REASONING_END, Judgement, split_reasoning
from ..errors import InputError
from ..scorers.exchange import ProtocolError, Request
from .base import Codec

PATH = "/v1/chat/completions"
KEYS = ("score_1", "score_2", "ranking")
# The judge's scale (genrm_compare's prompt): scores 1-5, ranking 1-6. A value outside it is
# not a verdict on that scale, so it is read as no answer (asked again), never clamped.
RANGES = {"score_1": (1.0, 5.0), "score_2": (1.0, 5.0), "ranking": (1.0, 6.0)}
SAMPLING = {"temperature": 0.6, "top_p": 0.95, "max_tokens": 16384}  # genrm_compare.yaml


@dataclass(frozen=True)
class Unparsed:
    """A well-formed chat completion whose answer holds nothing to read (asked again)."""

    reason: str


def chat_content(response: Any) -> tuple[str | None, str | None]:
    """(content, finish_reason) of a chat completion's first choice; ProtocolError if it is not one.

    ``message`` may come as a list (one hosted endpoint does, REFERENCE.md §2) and ``content``
    as OpenAI content parts; both are read.
    """
    try:
        body = response.json()
        choice = body["choices"][0]
        message = choice["message"]
        if isinstance(message, list):
            message = next(m for m in message if isinstance(m, dict))
        content = message.get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, StopIteration):
        raise ProtocolError(f"no choices[0].message in {response.text[:200]!r}: not a chat completion") from None
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if content is not None and not isinstance(content, str):
        raise ProtocolError(f"choices[0].message.content is {type(content).__name__}, not text")
    return content, choice.get("finish_reason")


def reasoning_ended(response: Any, content: str) -> bool:
    """Whether the judge finished reasoning: a ``</think>`` in ``content``, or an endpoint that
    moved the reasoning out of it (vLLM's ``--reasoning-parser`` fills ``reasoning_content``
    and leaves ``content`` empty until ``</think>`` came)."""
    if REASONING_END in content:
        return True
    try:
        message = response.json()["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return False
    if isinstance(message, list):
        message = next((m for m in message if isinstance(m, dict)), {})
    moved = message.get("reasoning_content") or message.get("reasoning") if isinstance(message, dict) else None
    return isinstance(moved, str) and bool(moved.strip()) and bool(content.strip())


def json_objects(text: str) -> list[dict]:
    """The top-level JSON objects in ``text``, in order.

    A top-level object is a balanced ``{...}`` span (braces inside JSON strings not counted);
    a span that is not valid JSON is skipped whole, nested objects included, as
    genrm_compare's brace counter does; an unbalanced ``{`` is passed over.

    >>> json_objects('first {"a": 1} then {"b": {"c": 2}} and {oops}')
    [{'a': 1}, {'b': {'c': 2}}]
    >>> json_objects('{"x": {"a": 1}, oops} {"b": 2}')
    [{'b': 2}]
    """
    found, i = [], text.find("{")
    while i != -1:
        end = _balanced_end(text, i)
        if end is None:  # never closed: not an object; try the next brace
            i = text.find("{", i + 1)
            continue
        try:
            value = json.loads(text[i:end])
        except ValueError:
            value = None
        if isinstance(value, dict):
            found.append(value)
        i = text.find("{", end)
    return found


def _balanced_end(text: str, start: int) -> int | None:
    """One past the ``}`` closing the ``{`` at ``start``, or None; braces in strings do not count."""
    depth, in_string, escaped = 0, False, False
    for j in range(start, len(text)):
        ch = text[j]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_judgement(candidate: dict, neutral: bool) -> Judgement | str:
    """A Judgement from one JSON object, or why not. Missing keys take the neutral values
    only when ``neutral`` (genrm_compare always fills them; by default they are a failure)."""
    if isinstance(candidate.get("overall"), dict):  # {"rubric_evaluations": [...], "overall": {...}}
        candidate = candidate["overall"]
    if not any(key in candidate for key in KEYS):
        return f"no {'/'.join(KEYS)} in {json.dumps(candidate)[:120]}"
    defaults = {"score_1": NEUTRAL_SCORE, "score_2": NEUTRAL_SCORE, "ranking": NEUTRAL_RANKING}
    values = []
    for key in KEYS:
        if key not in candidate:
            if not neutral:
                return f"{json.dumps(candidate)[:120]} has no {key!r}"
            values.append(defaults[key])
            continue
        number = _number(candidate[key])
        if number is None:
            return f"{key}={candidate[key]!r} is not a number"
        low, high = RANGES[key]
        if not low <= number <= high:
            return f"{key}={candidate[key]!r} is outside {low:g}-{high:g}"
        values.append(number)
    return Judgement(*values)


def parse_judgement(text: str, neutral: bool = False) -> Judgement | Unparsed:
    """The judge's verdict in its reply ``text`` (see the module docstring for the order tried).

    >>> parse_judgement('<think>B is wrong.</think> Verdict: {"score_1": 5, "score_2": 2, "ranking": 1}')
    Judgement(score_1=5.0, score_2=2.0, ranking=1.0)
    >>> parse_judgement("I cannot decide.")
    Unparsed(reason='no JSON object in the answer')
    """
    answer = split_reasoning(text)[1]
    why = "no JSON object in the answer"
    for block in re.finditer(r"```json\s*([\s\S]*?)\s*```", answer, flags=re.IGNORECASE):
        for candidate in json_objects(block.group(1)):
            result = read_judgement(candidate, neutral)
            if isinstance(result, Judgement):
                return result
            why = result
    last = None
    for candidate in json_objects(answer):
        result = read_judgement(candidate, neutral)
        if isinstance(result, Judgement):
            last = result
        else:
            why = result
    return last if last is not None else Unparsed(why)


def check_history(history: list[dict]) -> None:
    """The judge reads two answers to the user's last turn: the history must end with it."""
    if not history or history[-1].get("role") != "user":
        last = history[-1].get("role") if history else None
        raise InputError(
            f"a GenRM judges two answers to the user's last turn, but the prompt ends with a {last!r} message; "
            "give prompts that end with the user's turn"
        )


class GenRMClient(Codec):
    """Client side: one chat completion per comparison, its answer read as a :class:`Judgement`."""

    protocol = "genrm"
    batches = False  # chat completions: one conversation per request, never pooled
    renders_here = False  # the judge's own chat template renders the response_1/response_2 roles
    batches = False  # one comparison per request
    scorer = "pairwise"  # needs whole groups: scorers/pairwise.py
    summary = (
        "POST /v1/chat/completions per comparison of two responses to one prompt: the conversation, "
        "[principle], response_1, response_2; the judge's JSON {score_1, score_2, ranking} folded into one "
        "reward per response (simple_tiebreaker, see docs/genrm.md)"
    )

    @staticmethod
    def sampling_of(options: Any) -> dict[str, Any]:
        given = {"temperature": options.temperature, "top_p": options.top_p, "max_tokens": options.max_tokens}
        return {key: SAMPLING[key] if value is None else value for key, value in given.items()}

    def sampling(self) -> dict[str, Any]:
        return self.sampling_of(self.options)

    @classmethod
    def describe(cls, options: Any) -> list[tuple[str, str]]:
        """``rewardbridge inspect`` rows: what is compared, how it is asked and read, what it costs."""
        per = {"circular": "N", "all_pairs": "N(N-1)/2"}[options.pairs]
        judges = f" x {options.judges_per_pair} judgements" if options.judges_per_pair > 1 else ""
        principle = repr(options.principle) if options.principle else (
            f"column {options.principle_column!r}" if options.principle_column else "none (no principle message)")
        length = ", ".join(f"{key} {getattr(options, key):g}" for key in ("length_penalty", "reasoning_length_penalty"))
        bonuses = ", ".join(f"{key} {getattr(options, key):g}" for key in ("answer_bonus", "reasoning_bonus"))
        from ..scorers.remote import worst_case_seconds

        example = cls(options).request([{"role": "user", "content": "What is 2+2?"}], "4", "5", options.principle or None)
        groups = (f"group_size {options.group_size}: each {options.group_size} consecutive completions (TRL's groups)"
                  if options.group_size else "by prompt (and principle); group_size=<num_generations> for TRL's positional groups")
        return [
            ("pairs", f"{options.pairs}: {per} comparisons per prompt of N responses{judges}, one request each"),
            ("groups", groups),
            ("sampling", ", ".join(f"{k} {v:g}" for k, v in cls.sampling_of(options).items())),
            ("principle", principle),
            ("parse", f"parse_retries {options.parse_retries}, on_parse_failure {options.on_parse_failure!r}; "
                      "scores 1-5 and ranking 1-6, else asked again"),
            ("length", f"{length} (reward += coeff x zero-mean weight, shortest highest)"),
            ("bonuses", f"{bonuses}, to the shortest if its reward is at least the k-th highest of its N, "
                        f"k = max(1, int(N x {options.top_percentile:g})); "
                        f"style_penalty {options.style_penalty:g} (the same zero-mean weight over markdown per character)"),
            ("worst case", f"{worst_case_seconds(options):g} s before a hung comparison fails (keep it under the trainer's "
                           "ddp_timeout, 1800 s by default)"),
            ("input", "the prompt's messages, [a principle message], then each answer without its reasoning as "
                      "response_1 and response_2; the judge's chat template renders them"),
            ("example", repr(example.json["messages"])),
        ]

    def request(self, history: list[dict], first: str, second: str, principle: str | None = None) -> Request:
        """``history``: the prompt's messages (ending with the user's); ``first``/``second``: the two answers."""
        check_history(history)
        messages = [{"role": m["role"], "content": m["content"]} for m in history]
        if principle:
            messages.append({"role": "principle", "content": principle})
        messages += [{"role": "response_1", "content": first}, {"role": "response_2", "content": second}]
        return Request(PATH, json={"model": self.options.model_name, "messages": messages, **self.sampling()})

    def parse(self, response: Any) -> Judgement | Unparsed:
        content, finish = chat_content(response)
        if not content or not content.strip():
            return Unparsed(f"empty answer (finish_reason={finish!r}; raise max_tokens if the judge ran out of tokens)")
        if finish == "length" and not reasoning_ended(response, content):
            # Cut while still reasoning (a <think> the chat template opened, or an unclosed one):
            # any JSON in it is a draft, not the verdict.
            return Unparsed(f"the answer was cut at max_tokens={self.sampling()['max_tokens']} before its reasoning "
                            f"ended (no {REASONING_END}); raise max_tokens")
        result = parse_judgement(content, neutral=self.options.on_parse_failure == "neutral")
        if isinstance(result, Unparsed) and finish == "length":
            return Unparsed(f"{result.reason}; the answer was cut at max_tokens={self.sampling()['max_tokens']}")
        return result


CLIENT = GenRMClient
ROUTES = ()
