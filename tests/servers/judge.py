"""A generative judge for the tests: a real HTTP server on 127.0.0.1 speaking OpenAI chat
completions, built by hand from the upstream wire formats (not with rewardbridge's codecs).

- Pairwise (NeMo-Gym genrm_compare): a request whose messages end with ``response_1`` and
  ``response_2`` gets reasoning text plus ``{"score_1", "score_2", "ranking"}`` computed by
  :func:`verdict` from the two responses, in one of four reply styles picked by the pair
  (fenced ```json, prose with the JSON inline, ``{"overall": {...}}`` after an example
  object, a ``<think>`` block holding a decoy verdict). A response containing ``MUMBLE``
  makes every reply about it unreadable (no JSON), for parse failures.
- Pointwise principle judges: a request with ``logprobs: true`` gets one or more generated
  tokens ending in "Yes"/"No" with ``top_logprobs``: logprob(Yes) = -len(response)/100,
  logprob(No) = -1, so the reward is 1 - len(response)/100 (see :func:`principle_logprobs`).

Faults (503s, slow answers, unreadable replies) come from ``FaultyServer``'s script.
"""

from __future__ import annotations

import hashlib
import json

from servers.faulty import Fault, FaultyServer

UNREADABLE = "I have compared both responses carefully and they are both fine."


def words(text: str) -> int:
    return len(text.split())


def verdict(first: str, second: str) -> tuple[int, int, int]:
    """score = word count clamped to 1..5; ranking 1/2 (first better by >= 2 / 1), 5/6 likewise
    for the second; equal scores: ranking 3 when the first is no longer than the second, else 4."""
    s1, s2 = (min(5, max(1, words(t))) for t in (first, second))
    if s1 > s2:
        ranking = 1 if s1 - s2 >= 2 else 2
    elif s2 > s1:
        ranking = 6 if s2 - s1 >= 2 else 5
    else:
        ranking = 3 if len(first) <= len(second) else 4
    return s1, s2, ranking


def reply_text(first: str, second: str) -> str:
    if "MUMBLE" in first or "MUMBLE" in second:
        return UNREADABLE
    s1, s2, ranking = verdict(first, second)
    answer = json.dumps({"score_1": s1, "score_2": s2, "ranking": ranking})
    style = int(hashlib.sha1(f"{first}\x00{second}".encode()).hexdigest(), 16) % 4
    if style == 0:
        return f"Response 1 has {words(first)} words, response 2 has {words(second)}.\n```json\n{answer}\n```"
    if style == 1:
        return f"Weighing helpfulness: both answer the question. My scores are {answer} and that is final."
    if style == 2:
        nested = json.dumps({"rubric_evaluations": [{"name": "helpfulness"}], "overall": json.loads(answer)})
        return f'The format is {{"note": "an example"}}. Here is my evaluation:\n{nested}'
    decoy = json.dumps({"score_1": 1, "score_2": 1, "ranking": 6})
    return f"<think>A first guess would be {decoy}, but let me count again.</think>\n```json\n{answer}\n```"


def principle_logprobs(response: str) -> tuple[float, float]:
    return -len(response) / 100, -1.0


def completion(content: str, logprobs: list | None = None, finish_reason: str = "stop") -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    body = {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "judge", "choices": [choice],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
    return json.dumps(body).encode()


def principle_reply(messages: list[dict], request: dict, drop_no: bool) -> bytes:
    response = next(m["content"] for m in reversed(messages) if m["role"] == "assistant")
    yes, no = principle_logprobs(response)
    answer = "Yes" if yes >= no else "No"
    top = [{"token": "Yes", "logprob": yes}, {"token": "Maybe", "logprob": -6.0}]
    if not drop_no:
        top.append({"token": "No", "logprob": no})
    last = {"token": answer, "logprob": max(yes, no), "top_logprobs": top[: request.get("top_logprobs", 20)]}
    if request.get("max_tokens") == 1:
        return completion(answer, [last], "length")
    # A reasoning judge: a few thought tokens, then the answer, as the 32B principle GenRM does.
    thoughts = [{"token": t, "logprob": -0.5, "top_logprobs": [{"token": t, "logprob": -0.5}]} for t in ("Checking", ".", " Final", ":")]
    return completion(f"Checking. Final: {answer}", thoughts + [last])


def judge_answer(drop_no: bool = False):
    """``FaultyServer`` answer function for both judge kinds."""

    def answer(path, body, headers):
        assert path == "/v1/chat/completions", path
        request = json.loads(body)
        messages = request["messages"]
        if request.get("logprobs"):
            return 200, {"Content-Type": "application/json"}, principle_reply(messages, request, drop_no)
        assert [m["role"] for m in messages[-2:]] == ["response_1", "response_2"], messages
        return 200, {"Content-Type": "application/json"}, completion(reply_text(messages[-2]["content"], messages[-1]["content"]))

    return answer


def unreadable_fault() -> Fault:
    """A well-formed chat completion with nothing to read in it (the client asks again)."""
    return Fault(body=completion(UNREADABLE), headers={"Content-Type": "application/json"})


def start_judge(**kwargs) -> FaultyServer:
    return FaultyServer(judge_answer(**kwargs)).start()


def compared(server: FaultyServer) -> list[tuple[str, str]]:
    """The (response_1, response_2) of every pairwise request the server received."""
    pairs = []
    for _, _, body in server.requests:
        messages = json.loads(body)["messages"]
        if messages[-1]["role"] == "response_2":
            pairs.append((messages[-2]["content"], messages[-1]["content"]))
    return pairs
