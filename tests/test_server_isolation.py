"""`rewardbridge serve` keeps one client from hurting another (issue 15 §2), against a real
subprocess on 127.0.0.1: a failing request fails alone, a big one cannot starve small ones,
an abandoned one is not scored, bodies and slow senders are bounded while being read, and
start-up refuses a key that would turn authentication off."""

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from rewardbridge import load_reward
from servers.process import start_server, stop

KEY = "rb-isolation-key-91c2"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def strict_server(classifier_dir):
    """truncation=error over 40 tokens; batches wait 300 ms for company; 1 s to send headers or a body;
    bodies of 100 kB, 250 kB of them at once."""
    process, url = start_server(
        classifier_dir, "--option", "truncation=error", "--option", "max_length=40", "--max-wait-ms", "300",
        "--max-batch-size", "8", "--max-body-bytes", "100000", "--read-timeout", "1",
        "--max-body-bytes-in-flight", "250000", env={"REWARDBRIDGE_API_KEY": KEY},
    )
    yield process, url
    stop(process)


def metric(url, name):
    text = httpx.get(url + "/metrics", headers=AUTH).text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def nim_body(prompt, completion):
    return {"model": "reward_model", "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]}


def test_one_bad_request_in_a_batch_fails_alone(strict_server, classifier_dir):
    # Issue 15 §2: with truncation=error, one over-long conversation gave its batch-mates 422.
    _, url = strict_server
    completions = ["Paris.", "Eight legs.", "word " * 80, "Blue.", "Yes.", "Four."]  # the third is over 40 tokens
    rounds_before = metric(url, "rewardbridge_batch_size_count")

    async def fire():
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
            return await asyncio.gather(*[client.post("/v1/chat/completions", json=nim_body("A question?", c)) for c in completions])

    answers = asyncio.run(fire())
    assert [a.status_code for a in answers] == [200, 200, 422, 200, 200, 200]
    assert "max_length 40" in answers[2].json()["error"]["message"]
    expected = load_reward(classifier_dir)(prompts=["A question?"] * 6, completions=completions)
    got = [float(a.json()["choices"][0]["message"]["content"].split(":")[1]) for i, a in enumerate(answers) if i != 2]
    assert got == pytest.approx([e for i, e in enumerate(expected) if i != 2], abs=1e-5)  # their real scores
    # Issue 18 review: checked per request, so the round is not split and scored again (it was 1 + halves).
    assert metric(url, "rewardbridge_batch_size_count") - rounds_before == 1


def test_a_big_request_cannot_starve_a_small_one(strict_server):
    # 1,000 conversations in rounds of 8: a one-conversation request sent once the big one is
    # being scored rides in one of the next rounds instead of waiting for all 125.
    _, url = strict_server
    big = {"conversations": [{"prompt": f"Question {i}?", "completion": f"Answer {i}."} for i in range(1000)]}
    done = {}

    def post(name, path, body):
        response = httpx.post(url + path, json=body, headers=AUTH, timeout=120)
        done[name] = (time.monotonic(), response.status_code)

    rounds = metric(url, "rewardbridge_batch_size_count")
    first = threading.Thread(target=post, args=("big", "/v1/score", big))
    first.start()
    while metric(url, "rewardbridge_batch_size_count") < rounds + 2 and first.is_alive():
        time.sleep(0.01)  # wait until the big request is being scored, round after round
    post("small", "/v1/chat/completions", nim_body("Hi?", "Hello."))
    first.join()
    assert done["small"][1] == done["big"][1] == 200
    assert done["small"][0] < done["big"][0]
    assert metric(url, "rewardbridge_batch_size_count") - rounds >= 125  # the big one was spread over rounds of 8


def test_an_abandoned_request_is_dropped_unscored(strict_server):
    # The client gives up (timeout) while the request waits for company: it is never scored.
    _, url = strict_server
    rows_before, dropped_before = metric(url, "rewardbridge_batch_size_sum"), metric(url, "rewardbridge_abandoned_conversations_total")
    with pytest.raises(httpx.TimeoutException):
        httpx.post(url + "/v1/score", json={"conversations": [{"prompt": "a", "completion": "b"}] * 3}, headers=AUTH, timeout=0.1)
    time.sleep(0.6)  # past --max-wait-ms 300: its round would have run by now
    assert metric(url, "rewardbridge_abandoned_conversations_total") - dropped_before == 3
    assert metric(url, "rewardbridge_batch_size_sum") == rows_before


def rss_bytes(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_chunked_body_over_the_limit_is_refused_while_it_is_read(strict_server):
    # Issue 15 §2: a chunked body (no Content-Length) of 1 GiB was read whole (47 s, +1.5 GB RSS).
    process, url = strict_server
    port = int(url.rsplit(":", 1)[1])
    rss_before = rss_bytes(process.pid)
    chunk = b"x" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {KEY}\r\n\r\n".encode())
        sock.setblocking(False)
        answer = b""
        deadline = time.monotonic() + 20
        while sent < 1024 * 2**20 and time.monotonic() < deadline:  # up to 1 GiB, as in the report
            try:
                answer += sock.recv(65536)
                if answer:
                    break
            except BlockingIOError:
                pass
            try:
                sent += sock.send(b"10000\r\n" + chunk + b"\r\n")
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.setblocking(True)
        while b"\r\n\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # The limit is 100,000 bytes: what got through is that, plus what the sockets' buffers held.
    assert sent < 16 * 2**20
    assert rss_bytes(process.pid) - rss_before < 64 * 2**20


def test_memory_comes_back_after_big_bad_bodies(classifier_dir):
    # Issue 15 §2: RSS grew from 0.4 to 2.1 GB over the bad-body cases and was never returned.
    # Bodies just under the default 16 MiB limit, each refused with a 422 naming its field.
    process, url = start_server(classifier_dir)
    try:
        bodies = {
            "/v1/score": json.dumps({"conversations": [{"prompt": "a" * 10, "completion": 5}] * 300_000}).encode(),
            "/v1/chat/completions": json.dumps({"messages": [{"role": "user", "content": "x"}] * 400_000}).encode(),
            "/get_reward": json.dumps({"query": ["\ud800" + "y" * 20] * 500_000}).encode(),
        }
        before = rss_bytes(process.pid)
        for _ in range(3):
            for path, body in bodies.items():
                assert 10 * 2**20 < len(body) < 16 * 2**20
                assert httpx.post(url + path, content=body, timeout=120).status_code == 422
        # Measured here: 372 -> 382 MB over 20 such bodies (the 1 GiB chunked body is the test above).
        assert rss_bytes(process.pid) - before < 128 * 2**20
    finally:
        stop(process)


def test_slow_senders_are_cut_off(strict_server):
    _, url = strict_server
    port = int(url.rsplit(":", 1)[1])
    # Headers that never finish: the connection is closed after --read-timeout (1 s).
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\n")
        began = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server
        assert time.monotonic() - began < 5
    # A body that stops halfway: 408, naming the flag.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
                     + f"Authorization: Bearer {KEY}\r\n\r\n".encode() + b'{"conversations": [')
        answer = b""
        while chunk := sock.recv(65536):  # the server answers, then closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"--read-timeout" in answer


def test_health_probes_answer_without_the_key(strict_server):
    _, url = strict_server
    # Issue 18 review: KServe's per-model readiness probe needed the key.
    for path in ("/health", "/v2/health/live", "/v2/health/ready", "/v2/models/reward_model/ready",
                 "/v2/models/reward_model/versions/1/ready"):
        assert httpx.get(url + path).status_code == 200, path  # liveness/readiness probes carry no key
    for path in ("/ready", "/metrics", "/v2/models/reward_model"):
        assert httpx.get(url + path).status_code == 401, path  # what says anything about the model still needs it


@pytest.mark.parametrize("value", ["", "   "], ids=["empty", "blank"])
def test_an_empty_api_key_refuses_to_start(classifier_dir, monkeypatch, capsys, value):
    from rewardbridge.cli import main

    monkeypatch.setenv("REWARDBRIDGE_API_KEY", value)
    assert main(["serve", classifier_dir]) == 2
    err = capsys.readouterr().err
    assert "REWARDBRIDGE_API_KEY is set but empty" in err and "unset it" in err


@pytest.mark.parametrize("value", ["key-91c2\n", " key-91c2", "key\x0791c2"], ids=["newline", "space", "control"])
def test_an_api_key_no_client_could_send_refuses_to_start(classifier_dir, monkeypatch, capsys, value):
    # Issue 18 review: the server stripped clients' tokens but not its own key, locking every client out.
    from rewardbridge.cli import main

    monkeypatch.setenv("REWARDBRIDGE_API_KEY", value)
    assert main(["serve", classifier_dir]) == 2
    assert "REWARDBRIDGE_API_KEY holds whitespace around the key or a control character" in capsys.readouterr().err


def test_graceful_timeout_bounds_shutdown(classifier_dir):
    # A request waits 20 s for company (--max-wait-ms 20000); SIGTERM with --graceful-timeout 1
    # stops the server in about a second instead of 20 (the default waits 30 s).
    process, url = start_server(classifier_dir, "--max-wait-ms", "20000", "--graceful-timeout", "1")
    answers = []
    try:
        thread = threading.Thread(target=lambda: answers.append(_quietly(lambda: httpx.post(
            url + "/v1/score", json={"conversations": [{"prompt": "a", "completion": "b"}]}, timeout=30))))
        thread.start()
        time.sleep(0.5)
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        assert time.monotonic() - began < 8
        thread.join()
        # Issue 18 review: the interrupted request got uvicorn's plain-text 500 (clients retry a 503
        # by its Retry-After) and the log an ERROR CancelledError traceback.
        assert answers[0].status_code == 503 and answers[0].headers["retry-after"] == "1"
        assert "--graceful-timeout" in answers[0].json()["error"]["message"]
        log = open(process.own_log).read()
        assert "CancelledError" not in log and "Exception in ASGI application" not in log
    finally:
        stop(process)


def _quietly(fn):
    try:
        return fn()
    except httpx.HTTPError as error:
        return error


def test_bodies_in_flight_share_one_budget(strict_server):
    # Issue 18 review: 40 connections each holding 15 MB of a 16 MB body grew RSS from 385 to 979 MB.
    # Here 3 connections hold 80 kB each (240 kB of the 250 kB budget); a 4th passing it gets 503.
    _, url = strict_server
    port = int(url.rsplit(":", 1)[1])
    head = (b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 90000\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {KEY}\r\n\r\n".encode())
    holders = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        for sock in holders:
            sock.sendall(head + b" " * 80000)  # 10 kB short of its Content-Length: the server waits for the rest
        deadline = time.monotonic() + 0.5
        while metric(url, "rewardbridge_body_bytes_in_flight") < 240000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert metric(url, "rewardbridge_body_bytes_in_flight") == 240000
        with socket.create_connection(("127.0.0.1", port), timeout=5) as fourth:
            try:
                fourth.sendall(head + b" " * 80000)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused while sending: the answer is already there
            answer = b""
            while more := fourth.recv(65536):  # the server closes the connection after its answer
                answer += more
        assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower()
        assert b"--max-body-bytes-in-flight 250000" in answer
        # A small request still fits (the refused one gave its bytes back) and is scored.
        small = httpx.post(url + "/v1/score", json={"conversations": [{"prompt": "a", "completion": "b"}]}, headers=AUTH)
        assert small.status_code == 200
    finally:
        for sock in holders:
            sock.close()
    deadline = time.monotonic() + 2
    while metric(url, "rewardbridge_body_bytes_in_flight") > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metric(url, "rewardbridge_body_bytes_in_flight") == 0  # the holders' bytes came back when they left
