"""The principle judge's answer token (protocols/principle.py): read after the judge's reasoning,
never inside it, and no answer at all from a reply cut at max_tokens while still reasoning."""

import json

import pytest

from rewardbridge import load_reward
from rewardbridge.errors import RemoteError
from rewardbridge.protocols.genrm import Unparsed
from rewardbridge.protocols.principle import answer_logprobs
from servers.faulty import Fault, FaultyServer
from servers.judge import completion, judge_answer

FAST = dict(timeout=5.0, max_retries=1, retry_wait=0.01)


def token(text, logprob=-0.5, top=None):
    entry = {"token": text, "logprob": logprob}
    if top is not None:
        entry["top_logprobs"] = [{"token": t, "logprob": lp} for t, lp in top.items()]
    return entry


YES = token("Yes", -0.1, {"Yes": -0.1, "No": -2.5})
NO = token("No", -0.3, {"No": -0.3, "Yes": -1.6})


@pytest.mark.parametrize(
    "tokens, finish, one_token, result",
    [
        ([token("<think>"), YES, token("?"), token("</think>"), NO], "stop", False, (-1.6, -0.3, False)),  # the answer, not the thought
        # The thoughts say Yes, the answer after </think> holds neither: no answer (the old reading took the thought's Yes).
        ([token("<think>"), YES, token("</think>"), token(" Unsure")], "stop", False, "no 'Yes' or 'No' token after '</think>'"),
        # "</think>" spelled over three tokens.
        ([token("<"), YES, token("</"), token("think"), token(">"), NO], "stop", False, (-1.6, -0.3, False)),
        # Cut at max_tokens while still reasoning (the template opened <think>; no </think> yet): no answer.
        ([token("Let"), token(" me"), YES], "length", False, "cut at max_tokens (finish_reason 'length') before the reasoning ended"),
        ([token("<think>"), YES, token("...")], "stop", False, "<think> was never closed"),
        # Cut after the reasoning ended: the answer is there.
        ([token("<think>"), token("</think>"), YES, token(" because")], "length", False, (-0.1, -2.5, False)),
        # One-token mode (max_tokens=1, the 70B card): the cut is the point; the one token is read.
        ([YES], "length", True, (-0.1, -2.5, False)),
        ([token("Maybe", -0.9, {"Maybe": -0.9, "Yes": -1.2, "No": -1.4})], "length", True, (-1.2, -1.4, False)),
        ([NO], "stop", False, (-1.6, -0.3, False)),  # a judge that does not reason
    ],
    ids=["after-think", "yes-only-in-thought", "split-close-tag", "cut-while-thinking", "never-closed", "cut-after-answer",
         "one-token", "one-token-other", "no-reasoning"],
)
def test_answer_logprobs(tokens, finish, one_token, result):
    found = answer_logprobs(tokens, "Yes", "No", finish_reason=finish, one_token=one_token)
    if isinstance(result, str):
        assert isinstance(found, Unparsed) and result in found.reason
    else:
        assert found == result


def test_a_yes_inside_the_judge_s_reasoning_is_never_the_reward():
    # The judge reasons "Yes ..." and then its reply is cut at max_tokens: asked again, then a failure.
    cut = completion("<think>Yes, it seems", [token("<think>"), YES, token(","), token(" it"), token(" seems")], "length")
    server = FaultyServer(judge_answer()).start()
    try:
        server.script += [Fault(body=cut, headers={"Content-Type": "application/json"})] * 2
        reward = load_reward(server.url, protocol="principle", principle="correctness", parse_retries=1, **FAST)
        with pytest.raises(RemoteError, match=r"could not be read after 2 attempts: cut at max_tokens .* before the reasoning ended"):
            reward(prompts=["Q"], completions=["four"])
        assert len(server.requests) == 2
        # Once the judge answers after its reasoning, that answer is read: 1 - len("four")/100.
        server.script += [Fault(body=cut, headers={"Content-Type": "application/json"})]
        assert reward(prompts=["Q"], completions=["four"]) == pytest.approx([0.96])
        assert json.loads(server.requests[-1][2])["messages"][-2]["content"] == "four"
    finally:
        server.stop()
