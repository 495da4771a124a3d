"""Remote reward clients (scorers/remote.py and one module per protocol) against real HTTP servers.

The peers that cannot run here (NIM, vLLM, Triton, OpenRLHF's server) are faked by
``servers/faulty.py`` answering in their upstream wire formats (REFERENCE.md §2-§3), built
here by hand, not with rewardbridge's own codecs; the same server injects the faults.
"""

import asyncio
import json
import logging
import pickle
import threading
import time

import pytest

from rewardbridge import load_reward
from rewardbridge.errors import ConfigError, RemoteError
from servers.faulty import Fault, FaultyServer, free_port

NIM_ATTRIBUTES = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
PROMPTS = ["What is 2+2?", "Name a colour.", "Say hi.", "Count to three."]
COMPLETIONS = ["4", "Blue, like the sea", "Hi!", "1 2 3"]
FAST = dict(timeout=2.0, max_retries=3, retry_wait=0.01)  # short waits: faults resolve in milliseconds


def nim_values(prompt: str, response: str) -> list[float]:
    # The fake 340B NIM's attributes: len(response)/10, len(prompt)/10, 1, 0.5, -1.
    return [len(response) / 10, len(prompt) / 10, 1.0, 0.5, -1.0]


def nim_answer(message_as_list=False, scalar=False):
    """A NIM chat-completions answer (REFERENCE.md §2): content 'name:value,...' and the same pairs in logprobs."""

    def answer(path, body, headers):
        assert path == "/v1/chat/completions"
        messages = json.loads(body)["messages"]
        prompt, response = messages[-2]["content"], messages[-1]["content"]
        pairs = [("reward", len(response) / 10)] if scalar else list(zip(NIM_ATTRIBUTES, nim_values(prompt, response)))
        message = {"role": "assistant", "content": ",".join(f"{k}:{v:.4f}" for k, v in pairs)}
        choice = {"index": 0, "message": [message] if message_as_list else message, "finish_reason": "length",
                  "logprobs": {"content": [{"token": k, "logprob": v} for k, v in pairs]}}
        out = {"id": "x", "object": "chat.completion", "model": "nvidia/nemotron-4-340b-reward", "choices": [choice]}
        return 200, {"Content-Type": "application/json"}, json.dumps(out).encode()

    return answer


def vllm_answer(path, body, headers):
    assert path == "/classify"
    texts = json.loads(body)["input"]
    data = [{"index": i, "label": "0", "probs": [len(t) / 100], "num_classes": 1} for i, t in enumerate(texts)]
    return 200, {"Content-Type": "application/json"}, json.dumps({"object": "list", "data": data}).encode()


def openrlhf_answer(path, body, headers):
    assert path == "/get_reward"
    queries = json.loads(body)["query"]
    rewards = [len(q) / 100 for q in queries]
    return 200, {"Content-Type": "application/json"}, json.dumps({"rewards": rewards, "scores": rewards, "extra_logs": {}}).encode()


def triton_answer(columns):
    """KServe v2 JSON answer; the request's binary BYTES input decoded with tritonclient's own helper."""
    from tritonclient.utils import deserialize_bytes_tensor

    def answer(path, body, headers):
        assert path == "/v2/models/reward_model/infer"
        size = int(headers["inference-header-content-length"])
        request = json.loads(body[:size])
        sentences = deserialize_bytes_tensor(body[size:])
        assert request["inputs"][0]["name"] == "sentences" and request["inputs"][0]["shape"] == [len(sentences), 1]
        # Column k of row i: len(sentence_i) / 100 + k.
        rewards = [[len(s) / 100 + k for k in range(columns)] for s in sentences]
        out = {"model_name": "reward_model", "outputs": [
            {"name": "rewards", "datatype": "FP32", "shape": [len(sentences), columns], "data": sum(rewards, [])}]}
        return 200, {"Content-Type": "application/json"}, json.dumps(out).encode()

    return answer


@pytest.fixture
def serve():
    started = []

    def start(answer, **kwargs):
        server = FaultyServer(answer, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def steerlm(prompt, response):
    from rewardbridge.conversation import Conversation, render_steerlm

    return render_steerlm(Conversation(prompt, response))


@pytest.mark.parametrize(
    "protocol, answer, options, expected",
    [
        # 340B NIM: the card's weights over the five trained attributes.
        ("nim", nim_answer(), dict(attributes=NIM_ATTRIBUTES, attribute_weights=[0.3, 0.74, 0.46, 0.47, -0.33]),
         lambda p, c: sum(w * v for w, v in zip([0.3, 0.74, 0.46, 0.47, -0.33], nim_values(p, c)))),
        ("nim", nim_answer(message_as_list=True), dict(attributes=NIM_ATTRIBUTES, attribute_weights={"helpfulness": 1.0}),
         lambda p, c: len(c) / 10),  # `message` as a list, as one hosted endpoint sends it
        ("nim", nim_answer(scalar=True), {}, lambda p, c: len(c) / 10),  # 70B: 'reward:<float>'
        # The preset by model name alone: NIM's five attributes and the card's weights.
        ("nim", nim_answer(), dict(model_name="nvidia/nemotron-4-340b-reward"),
         lambda p, c: sum(w * v for w, v in zip([0.3, 0.74, 0.46, 0.47, -0.33], nim_values(p, c)))),
        ("vllm", vllm_answer, {"render": "text"}, lambda p, c: len(p + c) / 100),  # render='text': prompt + completion
        ("openrlhf", openrlhf_answer, {}, lambda p, c: len(p + c) / 100),
        ("triton", triton_answer(1), {}, lambda p, c: len(steerlm(p, c)) / 100),  # SteerLM-rendered sentences
        # [B, 9] without names: Nemotron-4-340B's attributes; helpfulness is column 4 -> +4.
        ("triton", triton_answer(9), dict(attribute_weights={"helpfulness": 1.0}, attributes=[
            "quality", "toxicity", "humor", "creativity", "helpfulness", "correctness", "coherence", "complexity", "verbosity"]),
         lambda p, c: len(steerlm(p, c)) / 100 + 4),
    ],
    ids=["nim-340b", "nim-message-list", "nim-70b", "nim-340b-preset", "vllm", "openrlhf", "triton", "triton-9"],
)
def test_each_protocol_reads_its_peers_answers(serve, protocol, answer, options, expected):
    server = serve(answer)
    reward = load_reward(server.url, protocol=protocol, request_batch_size=3, **options, **FAST)
    out = reward(prompts=PROMPTS, completions=COMPLETIONS)
    # NIM prints 4 decimals; float32 on the Triton wire.
    assert out == pytest.approx([expected(p, c) for p, c in zip(PROMPTS, COMPLETIONS)], abs=1e-3)
    per_request = 1 if protocol == "nim" else 3  # NIM has no batch; others split 4 into 3 + 1
    assert len(server.requests) == -(-len(PROMPTS) // per_request)


def test_triton_nine_columns_without_names_give_nemotron_attributes(serve):
    server = serve(triton_answer(9))
    scores = load_reward(server.url, protocol="triton", **FAST).scorer.score(
        [__import__("rewardbridge").Conversation("Hi", "Yo")]
    )
    assert list(scores.attributes)[4] == "helpfulness" and scores.values is None
    assert float(scores.attributes["verbosity"][0]) == pytest.approx(len(steerlm("Hi", "Yo")) / 100 + 8, abs=1e-4)


def test_load_is_spread_over_endpoints_and_a_dead_one_fails_over(serve):
    a, b = serve(nim_answer(scalar=True)), serve(nim_answer(scalar=True))
    reward = load_reward([a.url, b.url], protocol="nim", **FAST)
    assert reward(prompts=PROMPTS * 2, completions=COMPLETIONS * 2) == pytest.approx([len(c) / 10 for c in COMPLETIONS * 2], abs=1e-4)
    assert len(a.requests) == len(b.requests) == 4  # 8 one-conversation requests, round-robin
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    # retry_wait=2: a backoff would take >= 1 s; failing over to a live endpoint waits for nothing.
    reward = load_reward(f"{dead}, {a.url}", protocol="nim", timeout=2.0, max_retries=3, retry_wait=2.0)  # comma-separated
    began = time.monotonic()
    assert reward(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx([len(c) / 10 for c in COMPLETIONS], abs=1e-4)
    assert time.monotonic() - began < 1.0


@pytest.mark.parametrize(
    "faults, retries",
    [
        ([Fault(status=503)] * 3, 3),  # a 5xx burst within max_retries=3
        ([Fault(status=502, body=b"<html>bad gateway</html>")], 1),
        ([Fault(sleep=1.0)], 1),  # slower than timeout=0.3: the request is abandoned and retried
    ],
    ids=["5xx-burst", "502-html", "slow"],
)
def test_transient_faults_are_retried_and_counted(serve, faults, retries):
    server = serve(nim_answer(scalar=True))
    server.script += faults
    reward = load_reward(server.url, protocol="nim", max_concurrency=1, **{**FAST, "timeout": 0.3})
    logged = {}
    out = reward(prompts=PROMPTS[:1], completions=COMPLETIONS[:1], log_metric=logged.__setitem__)
    assert out == pytest.approx([len(COMPLETIONS[0]) / 10], abs=1e-4)
    name = reward.__name__
    assert logged[f"{name}/retries"] == retries and logged[f"{name}/failed_frac"] == 0
    assert logged[f"{name}/latency_ms_p50"] <= logged[f"{name}/latency_ms_p95"] < 300  # successful requests only


def test_429_waits_as_long_as_retry_after_says(serve):
    server = serve(nim_answer(scalar=True))
    server.script.append(Fault(status=429, headers={"Retry-After": "1"}))
    reward = load_reward(server.url, protocol="nim", **FAST)
    began = time.monotonic()
    assert reward(prompts=["p"], completions=["abc"]) == pytest.approx([0.3], abs=1e-4)
    assert time.monotonic() - began >= 1.0  # retry_wait is 0.01 s: only Retry-After explains a 1 s wait


def test_connection_refused_until_the_server_comes_back(serve):
    port = free_port()
    threading.Timer(0.5, lambda: serve(nim_answer(scalar=True), port=port)).start()
    reward = load_reward(f"http://127.0.0.1:{port}", protocol="nim", timeout=2.0, max_retries=6, retry_wait=0.2)
    # Backoff 0.1-0.2, 0.2-0.4, 0.4-0.8 s...: within six retries the server is up.
    assert reward(prompts=["p"], completions=["abcd"]) == pytest.approx([0.4], abs=1e-4)


@pytest.mark.parametrize(
    "fault, options, message, attempts",
    [
        (Fault(status=503), {}, "HTTP 503", 4),  # 1 try + max_retries=3, then give up
        (Fault(body=b"{not json"), {}, "cannot read", 1),  # malformed: never retried
        (Fault(status=400, body=b'{"error": "bad"}'), {}, "HTTP 400", 1),  # other 4xx: never retried
        (None, dict(attributes=["helpfulness", "safety"]), "attributes= expects", 1),  # wrong attribute names
        (Fault(sleep=1.0), dict(timeout=0.3), "timeout=0.3", 4),  # always slower than the timeout
    ],
    ids=["5xx-persistent", "malformed-json", "4xx", "wrong-attributes", "timeout"],
)
def test_failures_raise_by_default_and_skip_as_none(serve, fault, options, message, attempts):
    options = {"attributes": NIM_ATTRIBUTES, **options, "attribute_weights": {"helpfulness": 1.0}}
    server = serve(nim_answer())
    if fault is not None:
        server.script += [fault] * 100
    reward = load_reward(server.url, protocol="nim", **{**FAST, **options})
    with pytest.raises(RemoteError) as caught:
        reward(prompts=PROMPTS[:1], completions=COMPLETIONS[:1])
    text = str(caught.value)
    assert message in text and server.url in text and "sample 0" in text  # endpoint, status, which sample
    assert len(server.requests) == attempts
    skip = load_reward(server.url, protocol="nim", on_error="skip", **{**FAST, **options})
    logged = {}
    assert skip(prompts=PROMPTS[:2], completions=COMPLETIONS[:2], log_metric=logged.__setitem__) == [None, None]
    assert logged[f"{skip.__name__}/failed_frac"] == 1.0  # 2 of 2 failed, none made up


@pytest.mark.parametrize("protocol, body", [
    ("rewardbridge", {"rewards": [1.0, None], "attributes": {}}),  # a null is no score: never read as one
    ("rewardbridge", {"rewards": [1.0, True], "attributes": {}}),  # true is not 1.0
    ("openrlhf", {"rewards": [1.0, None]}),
    ("openrlhf", {"rewards": [False, 2.0]}),
], ids=["native-null", "native-bool", "openrlhf-null", "openrlhf-bool"])
def test_a_null_or_boolean_score_is_a_failure_not_a_number(serve, protocol, body):
    server = serve(lambda path, request, headers: (200, {"Content-Type": "application/json"}, json.dumps(body).encode()))
    reward = load_reward(server.url, protocol=protocol, **FAST)
    with pytest.raises(RemoteError, match="not a list of 2 numbers"):
        reward(prompts=PROMPTS[:2], completions=COMPLETIONS[:2])
    assert load_reward(server.url, protocol=protocol, on_error="skip", **FAST)(prompts=PROMPTS[:2], completions=COMPLETIONS[:2]) == [None, None]


def test_skip_keeps_the_samples_that_did_score(serve):
    scalar = nim_answer(scalar=True)

    def answer(path, body, headers):  # sample 2 ("Say hi.") always fails
        return (500, {}, b"{}") if b"Say hi." in body else scalar(path, body, headers)

    server = serve(answer)
    reward = load_reward(server.url, protocol="nim", on_error="skip", timeout=2.0, max_retries=1, retry_wait=0.01)
    logged = {}
    out = reward(prompts=PROMPTS, completions=COMPLETIONS, log_metric=logged.__setitem__)
    expected = [len(c) / 10 for c in COMPLETIONS]
    assert out[2] is None and out[:2] + out[3:] == pytest.approx(expected[:2] + expected[3:], abs=1e-4)
    assert logged[f"{reward.__name__}/failed_frac"] == 0.25  # 1 of 4


@pytest.mark.parametrize("key_state", ["missing", "wrong"])
def test_keys_are_sent_as_bearer_and_never_leak(serve, monkeypatch, caplog, key_state):
    secret = "sk-secret-0123456789"
    server = serve(nim_answer(scalar=True), api_key=secret)
    monkeypatch.setenv("NVIDIA_API_KEY", secret)
    reward = load_reward(server.url, protocol="nim", **FAST)  # nim reads NVIDIA_API_KEY by default
    assert reward(prompts=["p"], completions=["ab"]) == pytest.approx([0.2], abs=1e-4)
    assert server.requests[-1][1]["authorization"] == f"Bearer {secret}"
    assert secret not in str(vars(reward.scorer.transport.key))  # read once per call, held only while it lasts
    blob = pickle.dumps(reward)
    assert secret.encode() not in blob and secret not in repr(reward) and secret not in repr(reward.scorer)
    assert pickle.loads(blob)(prompts=["p"], completions=["ab"]) == pytest.approx([0.2], abs=1e-4)

    if key_state == "missing":
        monkeypatch.delenv("NVIDIA_API_KEY")
    else:
        monkeypatch.setenv("NVIDIA_API_KEY", "sk-wrong-key-987")
    count = len(server.requests)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RemoteError, match="HTTP 401.*NVIDIA_API_KEY") as caught:
        reward(prompts=["p"], completions=["ab"])
    assert len(server.requests) == count + 1  # 401 is not retried
    skip = load_reward(server.url, protocol="nim", on_error="skip", **FAST)
    assert skip(prompts=["p"], completions=["ab"]) == [None]
    for text in (str(caught.value), caplog.text):
        assert secret not in text and "sk-wrong-key-987" not in text


def test_an_explicit_key_variable_that_is_unset_is_a_config_error(serve, monkeypatch):
    server = serve(nim_answer(scalar=True))
    monkeypatch.delenv("MY_RM_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_RM_KEY"):
        load_reward(server.url, protocol="nim", api_key_env="MY_RM_KEY", **FAST)(prompts=["p"], completions=["a"])


def test_works_from_threads_and_inside_a_running_event_loop(serve):
    server = serve(nim_answer(scalar=True))
    reward = load_reward(server.url, protocol="nim", **FAST)
    expected = [len(c) / 10 for c in COMPLETIONS]

    async def inside_a_loop():  # e.g. a notebook, or an async trainer calling a sync reward
        return reward(prompts=PROMPTS, completions=COMPLETIONS)

    assert asyncio.run(inside_a_loop()) == pytest.approx(expected, abs=1e-4)
    results = [None] * 4
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, reward(prompts=PROMPTS, completions=COMPLETIONS)))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r == pytest.approx(expected, abs=1e-4) for r in results)


@pytest.mark.parametrize(
    "source, options, message",
    [
        ("http://127.0.0.1:1", {}, "protocol="),
        ("http://127.0.0.1:1", dict(protocol="grpc"), "protocol"),
        ("http://127.0.0.1:1", dict(protocol="nim", max_retries=-1), "max_retries"),
        ("http://127.0.0.1:1", dict(protocol="nim", timeout=0), "timeout"),
        ("http://127.0.0.1:1", dict(protocol="nim", retry_budget=-1), "retry_budget must be 0 or more seconds"),
        ("http://127.0.0.1:1", dict(protocol="nim", retry_budget="2m"), "retry_budget must be a number of seconds"),
        ("http://127.0.0.1:1", dict(protocol="nim", max_retries=1.5), "max_retries must be a whole number, or None"),
        ("http://127.0.0.1:1,ftp://x", dict(protocol="nim"), "http(s)"),
        ("http://127.0.0.1:1", dict(protocol="nim", zero3=True), "zero3"),
    ],
)
def test_bad_remote_options_are_config_errors(source, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_reward(source, **options)


def test_chat_data_goes_to_vllm_as_messages_without_a_local_template(serve):
    def answer(path, body, headers):
        request = json.loads(body)
        assert "messages" in request and request["messages"][-1]["role"] == "assistant"
        data = [{"index": 0, "probs": [len(request["messages"][-1]["content"]) / 10], "num_classes": 1}]
        return 200, {}, json.dumps({"data": data}).encode()

    server = serve(answer)
    reward = load_reward(server.url, protocol="vllm", **FAST)
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    completions = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    assert reward(prompts=prompts, completions=completions) == pytest.approx([len(c) / 10 for c in COMPLETIONS], abs=1e-4)
    assert len(server.requests) == 4  # one chat per request: vLLM's /classify takes one `messages`
    # Text rows and a text prompt with a messages completion too (issue 15 review 8: they went as raw `input`).
    mixed = [COMPLETIONS[0], [{"role": "assistant", "content": COMPLETIONS[1]}]]
    assert reward(prompts=PROMPTS[:2], completions=mixed) == pytest.approx([len(c) / 10 for c in COMPLETIONS[:2]], abs=1e-4)
    sent = sorted(json.loads(body)["messages"][0]["content"] for _, _, body in server.requests[4:])  # in flight at once
    assert sent == sorted(PROMPTS[:2]) and all(json.loads(b)["messages"][0]["role"] == "user" for _, _, b in server.requests[4:])


# -- issue 15: endpoints written as their docs write them, answers that are no number ------------------

@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "/v1/chat/completions"])
def test_a_base_url_ending_in_v1_or_the_route_reaches_the_route(serve, suffix):
    server = serve(nim_answer(scalar=True))  # asserts the path is /v1/chat/completions, not /v1/v1/...
    reward = load_reward(server.url + suffix, protocol="nim", **FAST)
    assert reward(prompts=PROMPTS[:1], completions=COMPLETIONS[:1]) == pytest.approx([len(COMPLETIONS[0]) / 10], abs=1e-4)
    assert [path for path, _, _ in server.requests] == ["/v1/chat/completions"]


def test_inspect_says_which_route_was_cut_off(capsys):
    from rewardbridge.cli import main

    assert main(["inspect", "http://127.0.0.1:9/v2/models/reward_model/infer", "--option", "protocol=triton"]) == 0
    assert "http://127.0.0.1:9 (the route '/v2/models/reward_model/infer' cut off: requests add it)" in capsys.readouterr().out


def test_https_to_an_http_server_fails_at_once_and_says_use_http(serve):
    server = serve(nim_answer(scalar=True))
    reward = load_reward(server.url.replace("http://", "https://"), protocol="nim", timeout=5.0, max_retries=4, retry_wait=0.5)
    began = time.monotonic()
    with pytest.raises(RemoteError) as caught:
        reward(prompts=PROMPTS[:1], completions=COMPLETIONS[:1])
    message = str(caught.value)
    assert "could not make an https (TLS) connection" in message and f"use {server.url}" in message
    assert "attempts" not in message and time.monotonic() - began < 2  # not retried: it would say the same 5 times


def test_a_404_from_a_server_of_another_protocol_says_to_check_protocol(serve):
    server = serve(lambda path, body, headers: (404, {"Content-Type": "application/json"}, b'{"detail": "Not Found"}'))
    with pytest.raises(RemoteError, match=r"HTTP 404 .*/classify is not a route of this server: check that it speaks protocol='vllm'"):
        load_reward(server.url, protocol="vllm", **FAST)(prompts=PROMPTS[:1], completions=COMPLETIONS[:1])


# A 404 for a model the server does not serve (rewardbridge serve's and vLLM's wordings): the route is right.
@pytest.mark.parametrize("body", [b'{"error": {"message": "unknown model \'x\'; this server serves \'reward_model\'"}}',
                                  b'{"object": "error", "message": "The model `x` does not exist.", "code": 404}'])
def test_a_404_for_an_unserved_model_says_to_check_model_name(serve, body):
    server = serve(lambda path, b, headers: (404, {"Content-Type": "application/json"}, body))
    with pytest.raises(RemoteError, match=r"HTTP 404 .*check model_name=") as caught:
        load_reward(server.url, protocol="nim", model_name="x", **FAST)(prompts=PROMPTS[:1], completions=COMPLETIONS[:1])
    assert "is not a route" not in str(caught.value)


@pytest.mark.parametrize("protocol, body", [
    ("openrlhf", b'{"rewards": [NaN, 1.0]}'),  # Python's json reads NaN, Infinity and 1e400 (as inf)
    ("openrlhf", b'{"rewards": [1.0, Infinity]}'),
    ("rewardbridge", b'{"rewards": [1e400, 1.0], "attributes": {}}'),
    ("vllm", b'{"data": [{"index": 0, "probs": [-Infinity]}, {"index": 1, "probs": [1.0]}]}'),
    # Finite in JSON (float64), infinite as the float32 TRL gets (issue 15 review 6): a failure on every protocol.
    ("openrlhf", b'{"rewards": [1e308, 1.0]}'),
    ("rewardbridge", b'{"rewards": [1.0, -1e39], "attributes": {}}'),
    ("vllm", b'{"data": [{"index": 0, "probs": [1e308]}, {"index": 1, "probs": [1.0]}]}'),
    ("nim", b'{"choices": [{"message": {"content": "reward:1e308"}}]}'),
    ("triton", b'{"model_name": "reward_model", "outputs": [{"name": "rewards", "datatype": "FP32", "shape": [2, 1], "data": [1e308, 1.0]}]}'),
], ids=["nan", "infinity", "1e400", "vllm-minus-infinity", "openrlhf-1e308", "rewardbridge-minus-1e39", "vllm-1e308", "nim-1e308",
        "triton-1e308"])
def test_a_non_finite_score_from_an_endpoint_is_a_failure(serve, protocol, body, caplog):
    server = serve(lambda path, request, headers: (200, {"Content-Type": "application/json"}, body))
    batched = {"render": "text"} if protocol == "vllm" else {}  # vLLM: both rows in one `input` request
    with pytest.raises(RemoteError, match=r"the answer's reward for sample [01] is (-?(nan|inf), not a finite number|"
                                          r"-?1e\+(308|39), beyond float32's range)"):
        load_reward(server.url, protocol=protocol, **batched, **FAST)(prompts=PROMPTS[:2], completions=COMPLETIONS[:2])
    skip = load_reward(server.url, protocol=protocol, on_error="skip", **batched, **FAST)
    logged = {}
    with caplog.at_level("WARNING"):
        assert skip(prompts=PROMPTS[:2], completions=COMPLETIONS[:2], log_metric=logged.__setitem__) == [None, None]
    # Counted and warned (skip splits the request until each row stands alone; this fixed answer then reads wrong).
    assert logged[f"{skip.__name__}/failed_frac"] == 1.0 and "scored as failed" in caplog.text


def test_a_nim_scores_inf_for_one_sample_only_that_sample_fails(serve):
    scalar = nim_answer(scalar=True)

    def answer(path, body, headers):
        if b"Say hi." in body:
            return 200, {"Content-Type": "application/json"}, json.dumps({"choices": [{"message": {"content": "reward:inf"}}]}).encode()
        return scalar(path, body, headers)

    server = serve(answer)
    out = load_reward(server.url, protocol="nim", on_error="skip", **FAST)(prompts=PROMPTS, completions=COMPLETIONS)
    assert out[2] is None and out[:2] + out[3:] == pytest.approx([len(c) / 10 for i, c in enumerate(COMPLETIONS) if i != 2], abs=1e-4)


# -- the client's edges (issue 15 §6) and its per-request path (issue 18) -----------------------


def native_answer(path, body, headers):
    """rewardbridge serve's /v1/score: reward = len(completion) / 10; 422 for a completion 'bad'."""
    assert path == "/v1/score"
    rows = json.loads(body)["conversations"]
    if any(r["completion"] == "bad" for r in rows):
        return 422, {"Content-Type": "application/json"}, b'{"error": {"message": "conversation has a bad completion"}}'
    out = {"rewards": [len(r["completion"]) / 10 for r in rows], "attributes": {}}
    return 200, {"Content-Type": "application/json"}, json.dumps(out).encode()


def call_from_threads(reward, completions):
    """Each completion scored by its own thread, all released at once; -> per thread, its result or error."""
    barrier, results = threading.Barrier(len(completions)), [None] * len(completions)

    def one(i):
        barrier.wait()
        try:
            results[i] = reward(prompts=[f"q{i}"], completions=[completions[i]])
        except Exception as error:  # noqa: BLE001: the test inspects it
            results[i] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(completions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_one_sample_calls_share_requests(serve):
    # 16 threads, one conversation each (OpenRLHF's executor, verl): pooled into requests of <= 8.
    server = serve(native_answer)
    server.script.append(Fault(sleep=0.5))  # a first request stays in flight while the 16 calls arrive...
    reward = load_reward(server.url, protocol="rewardbridge", request_batch_size=8, **FAST)
    reward.scorer.coalescer.wait_s = 0.2  # ...and they pool behind it (for 5 ms by default; 0.2 s on a busy CI machine)
    blocker = threading.Thread(target=lambda: reward(prompts=["q"], completions=["in flight"]))
    blocker.start()
    time.sleep(0.1)
    completions = ["x" * (i + 1) for i in range(16)]
    results = call_from_threads(reward, completions)
    blocker.join()
    assert results == [[pytest.approx((i + 1) / 10)] for i in range(16)]  # each thread got its own row
    sizes = [len(json.loads(body)["conversations"]) for _, _, body in server.requests[1:]]
    assert sizes == [8, 8]  # 16 calls, 2 requests of request_batch_size
    # A lone caller waits for no company: three calls in a row, three requests.
    before = len(server.requests)
    for text in ("a", "bb", "ccc"):
        assert reward(prompts=["q"], completions=[text]) == [pytest.approx(len(text) / 10)]
    assert len(server.requests) == before + 3


def test_a_refused_shared_request_fails_only_the_call_that_caused_it(serve):
    # One thread's conversation makes the endpoint answer 422 (final): the request it shared with
    # five other calls is sent again apart, so only that thread sees the error.
    server = serve(native_answer)
    server.script.append(Fault(sleep=0.5))  # a first request stays in flight while the six calls arrive...
    reward = load_reward(server.url, protocol="rewardbridge", request_batch_size=8, **FAST)
    reward.scorer.coalescer.wait_s = 0.2  # ...and they pool for up to 0.2 s behind it (5 ms by default)
    blocker = threading.Thread(target=lambda: reward(prompts=["q"], completions=["in flight"]))
    blocker.start()
    time.sleep(0.1)
    completions = ["ok", "okk", "bad", "okkk", "o", "okkkk"]
    results = call_from_threads(reward, completions)
    blocker.join()
    assert isinstance(results[2], RemoteError) and "HTTP 422" in str(results[2])
    sizes = [len(json.loads(body)["conversations"]) for _, _, body in server.requests[1:]]
    assert sizes[0] == 6 and sizes[1:] == [1] * 6  # pooled into one request, refused, then sent again one call each
    for i, text in enumerate(completions):
        if i != 2:
            assert results[i] == [pytest.approx(len(text) / 10)]


def test_a_hung_endpoint_stays_out_of_rotation_longer_than_its_timeout(serve):
    from rewardbridge.options import RewardOptions
    from rewardbridge.scorers.transport import Transport, _TransportError

    hung, healthy = serve(nim_answer(scalar=True)), serve(nim_answer(scalar=True))
    hung.script += [Fault(sleep=1.0)] * 100  # always slower than timeout=0.3
    reward = load_reward([hung.url, healthy.url], protocol="nim", **{**FAST, "timeout": 0.3})
    for _ in range(6):  # the first call meets the hung endpoint once, then it sits out
        assert reward(prompts=["p"], completions=["abc"]) == pytest.approx([0.3], abs=1e-4)
    assert len(hung.requests) == 1 and len(healthy.requests) == 6
    # With the default 60 s timeout, 5 s of cool-down would cost a full timeout every 5 s.
    transport = Transport(["http://a:1"], "nim", RewardOptions(protocol="nim"))
    assert transport.cooldown_s(_TransportError("hung", timed_out=True)) >= 2 * transport.timeout == 120
    assert transport.cooldown_s(_TransportError("refused")) == 5.0  # a refusal costs nothing to retry


def test_the_retry_budget_outlasts_a_restart_and_bounds_a_dead_endpoint(serve):
    from rewardbridge.options import RewardOptions

    # Defaults: no retry count, 120 s of retrying, so a 28 s server restart (measured) is survived.
    defaults = RewardOptions(protocol="rewardbridge")
    assert defaults.max_retries is None and defaults.retry_budget >= 4 * 28
    # Scaled down: the endpoint is down for 1.5 s (connection refused), then back.
    port = free_port()
    threading.Timer(1.5, lambda: serve(native_answer, port=port)).start()
    reward = load_reward(f"http://127.0.0.1:{port}", protocol="rewardbridge", timeout=2.0, retry_wait=0.1)
    logged = {}
    assert reward(prompts=["q"], completions=["abcd"], log_metric=logged.__setitem__) == [pytest.approx(0.4)]
    assert logged[f"{reward.__name__}/retries"] >= 3
    # A budget shorter than the outage gives up on time, naming the option that changes it.
    dead = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    with pytest.raises(RemoteError, match=r"retry_budget=0.5 s.*raise retry_budget"):
        load_reward(dead, protocol="rewardbridge", retry_wait=0.1, retry_budget=0.5)(prompts=["q"], completions=["a"])
    assert time.monotonic() - began < 1.5


def pooled_answer(delay_apart=0.0):
    """native_answer, but 'boom' makes a 500 (a server bug one row triggers) and a request of one
    conversation takes ``delay_apart`` seconds (to see whether requests sent apart overlap)."""

    def answer(path, body, headers):
        rows = json.loads(body)["conversations"]
        if any(r["completion"] == "boom" for r in rows):
            return 500, {"Content-Type": "application/json"}, b'{"error": {"message": "scoring failed"}}'
        if len(rows) == 1 and delay_apart:
            time.sleep(delay_apart)
        return native_answer(path, body, headers)

    return answer


def pooled_calls(server, completions, **options):
    """Six one-sample calls pooled into one request behind a first one still in flight."""
    server.script.append(Fault(sleep=0.5))
    reward = load_reward(server.url, protocol="rewardbridge", request_batch_size=8, **{**FAST, **options})
    reward.scorer.coalescer.wait_s = 0.2
    blocker = threading.Thread(target=lambda: reward(prompts=["q"], completions=["in flight"]))
    blocker.start()
    time.sleep(0.1)
    began = time.monotonic()
    results = call_from_threads(reward, completions)
    blocker.join()
    return results, time.monotonic() - began


@pytest.mark.parametrize("bad, status", [("bad", "HTTP 422"), ("boom", "HTTP 500")])
def test_a_pooled_request_that_fails_finally_is_resent_apart_concurrently(serve, bad, status):
    # Issue 18 review: after a final 5xx the pool failed every call in it (only a 4xx was sent
    # apart), and the calls sent apart went one after another (0.3 s -> 1.12 s for a step).
    server = serve(pooled_answer(delay_apart=0.3))
    completions = ["ok", "okk", bad, "okkk", "o", "okkkk"]
    results, seconds = pooled_calls(server, completions)
    assert isinstance(results[2], RemoteError) and status in str(results[2])
    assert [r for i, r in enumerate(results) if i != 2] == [[pytest.approx(len(c) / 10)] for i, c in enumerate(completions) if i != 2]
    assert seconds < 0.5 + 5 * 0.3  # the five good calls sent apart overlap (in series: >= 1.5 s after the blocker)


@pytest.mark.parametrize("bad", ["bad", "boom"])
@pytest.mark.parametrize("batch_size", [1, 8], ids=["unpooled", "pooled"])
def test_skip_fails_only_the_bad_rows_of_a_request(serve, bad, batch_size):
    # Issue 18 review: with on_error='skip' one bad row (a 4xx, or a 500 after its retries) made every
    # row of its request None; the request is split in halves until the bad row stands alone.
    server = serve(pooled_answer())
    reward = load_reward(server.url, protocol="rewardbridge", request_batch_size=8, on_error="skip", **FAST)
    if batch_size == 1:
        reward.scorer.coalescer = None  # the plain path: one call's chunks
    completions = ["a", "bb", "ccc", "dddd", bad, "ffffff", "g", "hh"]
    out = reward(prompts=["q"] * 8, completions=completions)
    assert out[4] is None  # only the bad row: 8 -> 4 -> 2 -> 1
    assert out[:4] + out[5:] == [pytest.approx(len(c) / 10) for i, c in enumerate(completions) if i != 4]


@pytest.mark.parametrize("batch_size", [1, 8], ids=["unpooled", "pooled"])
def test_a_wrong_key_under_skip_fails_the_request_once_not_row_by_row(serve, monkeypatch, caplog, batch_size):
    # Hostile check: a 401 was bisected down to single rows (~2N requests, one warning per row).
    server = serve(nim_answer(scalar=True), api_key="right-key")
    monkeypatch.setenv("REWARDBRIDGE_API_KEY", "wrong-key")
    reward = load_reward(server.url, protocol="rewardbridge", request_batch_size=8, on_error="skip", **FAST)
    if batch_size == 1:
        reward.scorer.coalescer = None
    with caplog.at_level("WARNING"):
        assert reward(prompts=["q"] * 8, completions=["a"] * 8) == [None] * 8
    assert len(server.requests) == 1 and caplog.text.count("answered HTTP 401") == 1


def test_a_key_with_a_trailing_newline_is_stripped_and_a_control_character_named(serve, monkeypatch, caplog):
    # Issue 18 review: a Kubernetes secret's trailing newline gave "could not be reached (Forbidden
    # control character...)", naming no variable. Whitespace around a key is stripped (and said once).
    server = serve(nim_answer(scalar=True), api_key="sk-k8s-key")
    monkeypatch.setenv("NVIDIA_API_KEY", "sk-k8s-key\n")
    reward = load_reward(server.url, protocol="nim", **FAST)
    with caplog.at_level("WARNING"):
        for _ in range(2):
            assert reward(prompts=["p"], completions=["ab"]) == pytest.approx([0.2], abs=1e-4)
    assert server.requests[-1][1]["authorization"] == "Bearer sk-k8s-key"
    assert caplog.text.count("NVIDIA_API_KEY holds whitespace around the key") == 1
    monkeypatch.setenv("NVIDIA_API_KEY", "sk-k8s\x07key")
    with pytest.raises(ConfigError, match=r"NVIDIA_API_KEY holds the character '\\x07' inside the key"):
        reward(prompts=["p"], completions=["ab"])


def test_a_retry_after_shorter_than_the_backoff_wins(serve):
    # Issue 18 review: after an 11.3 s outage the call took 23.7 s, the backoff (12.5 s) beating
    # the restarted server's "Retry-After: 1". Here the backoff would be 2, 4, 8 s; the server says 0.1 s.
    server = serve(nim_answer(scalar=True))
    server.script += [Fault(status=503, headers={"Retry-After": "0.1"})] * 3
    reward = load_reward(server.url, protocol="nim", timeout=2.0, retry_wait=4.0, retry_budget=60)
    began = time.monotonic()
    assert reward(prompts=["p"], completions=["abc"]) == pytest.approx([0.3], abs=1e-4)
    assert time.monotonic() - began < 1.5  # 3 x 0.1 s, not 2 + 4 + 8 s


def test_a_retry_after_beyond_the_budget_says_what_the_server_asked(serve):
    # Issue 18 review: Retry-After: 1000 with retry_budget=20 gave up at once saying only "gave up at retry_budget=20 s".
    server = serve(nim_answer(scalar=True))
    server.script.append(Fault(status=503, headers={"Retry-After": "1000"}))
    began = time.monotonic()
    with pytest.raises(RemoteError, match=r"the server asked to wait 1000 s \(Retry-After\).*beyond .*retry_budget=20 s"):
        load_reward(server.url, protocol="nim", timeout=2.0, retry_budget=20)(prompts=["p"], completions=["abc"])
    assert time.monotonic() - began < 1.0  # it does not sleep a wait it cannot finish


def test_an_endpoint_that_keeps_hanging_stays_out_longer_each_time(serve):
    # Issue 18 review: a hung endpoint cost a full timeout every cool-down (t = 0, 9.2, 18.3 s with
    # timeout=3). Its cool-down doubles each time it hangs again, and resets once it answers.
    from rewardbridge.options import RewardOptions
    from rewardbridge.scorers.transport import Request, Transport

    hung = serve(nim_answer(scalar=True))
    hung.script += [Fault(sleep=0.5)] * 3  # slower than timeout=0.2, three times; then it answers
    transport = Transport([hung.url], "nim", RewardOptions(protocol="nim", timeout=0.2, max_retries=0))
    request = Request("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "p"},
                                                                              {"role": "assistant", "content": "abc"}]})
    cooldowns = []
    for _ in range(4):
        try:
            transport.run(transport.exchange(request, lambda response: response.json(), [0]))
        except RemoteError:
            pass
        cooldowns.append(transport._down_until.get(hung.url, 0.0) - time.monotonic())
    assert cooldowns[0] == pytest.approx(5.0, abs=0.3)  # max(5 s, 2 x timeout)
    assert cooldowns[1] == pytest.approx(10.0, abs=0.3) and cooldowns[2] == pytest.approx(20.0, abs=0.3)
    assert transport._hangs[hung.url] == 0  # the fourth try was answered: the next hang starts again at 5 s
    transport.close()


def test_a_conversation_the_local_template_refuses_is_input_error_before_sending(serve, classifier_dir):
    # Issue 18 review: a template's raise_exception reached the caller as jinja2's TemplateError.
    from rewardbridge.errors import InputError

    server = serve(vllm_answer)
    refusing = "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tool turns') }}{% endif %}{{ m['content'] }}{% endfor %}"
    reward = load_reward(server.url, protocol="vllm", tokenizer=classifier_dir, chat_template=refusing, **FAST)
    with pytest.raises(InputError, match="chat template refuses this conversation.*no tool turns"):
        reward(prompts=[[{"role": "tool", "content": "t"}]], completions=[[{"role": "assistant", "content": "ok"}]])
    assert server.requests == []  # the caller's data: nothing was sent
