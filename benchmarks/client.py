"""The remote client's cost per request: rewardbridge's transport vs a plain aiohttp loop.

The same requests, in the rewardbridge protocol's wire format (``POST /v1/score``), go to a
stub endpoint in another process that answers at once (a bare asyncio HTTP/1.1 server, far
cheaper than any client), so what differs between contenders is the client alone:

- ``aiohttp``: one ``aiohttp.ClientSession`` kept open, ``asyncio.gather`` of the posts;
  the floor a Python client can reach;
- ``httpx``: the same loop with one ``httpx.AsyncClient`` (its default pool);
- ``openrlhf``: OpenRLHF 0.11's reward client pattern, a new ``aiohttp.ClientSession`` per
  request (``openrlhf/utils/agent.py``);
- ``rewardbridge``: ``load_reward(url, protocol="rewardbridge", request_batch_size=...,
  max_concurrency=64)`` called from a thread, as TRL calls it.

Two shapes: 64 one-conversation requests in flight (NIM traffic, or ``request_batch_size=1``)
and 8 requests of 64 conversations; then the first shape again against a real
``rewardbridge serve`` of a tiny model with batching off (the issue's set-up: the server
shares the machine, so its cost is in every contender's figure). A last part calls the reward from 64 threads at
once with one conversation each and counts the requests that reached the stub (coalescing).
Each round runs every contender once (interleaved); figures are medians over rounds.
Prints requests/s, client CPU ms per request, and each contender's ratio to aiohttp.

    python benchmarks/client.py              # about two minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time

from rounds import free_port, interleaved, machine_line, timed, wait_until_up


# -- the stub endpoint (runs in its own process) --------------------------------------------------


class _Stub(asyncio.Protocol):
    """HTTP/1.1 keep-alive; ``POST /v1/score`` -> one reward per conversation; ``GET`` -> 200."""

    requests = 0

    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            if head.startswith(b"POST"):
                _Stub.requests += 1
                n = len(json.loads(body)["conversations"])
                out = json.dumps({"rewards": [0.5] * n, "attributes": {}}).encode()
            else:
                out = json.dumps({"ready": True, "requests": _Stub.requests}).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))


def serve_stub(port: int) -> None:
    async def main():
        server = await asyncio.get_running_loop().create_server(_Stub, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    asyncio.run(main())


def stub_requests(port: int) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count") as answer:
        return json.loads(answer.read())["requests"]


# -- the contenders ---------------------------------------------------------------------------------


def bodies(conversations: int, per_request: int) -> list[dict]:
    rows = [{"prompt": f"Question {i}: what is {i} + {i}?", "completion": f"It is {2 * i}."} for i in range(conversations)]
    return [{"model": "reward_model", "conversations": rows[i:i + per_request]} for i in range(0, conversations, per_request)]


class LoopThread:
    """One event loop on a thread, as a trainer's reward call would find it."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


def aiohttp_contender(url: str, payloads: list[dict], loop: LoopThread):
    import aiohttp

    session = loop.run(_make_aiohttp_session())
    _SESSIONS.append(session)

    async def post(body):
        async with session.post(url + "/v1/score", json=body) as response:
            return (await response.json())["rewards"]

    async def once():
        return await asyncio.gather(*(post(b) for b in payloads))

    return lambda: loop.run(once())


_SESSIONS: list = []  # closed at the end, so aiohttp has nothing to warn about


async def _make_aiohttp_session():
    import aiohttp

    # keepalive_timeout 4 s, as rewardbridge's transport: uvicorn drops idle connections after 5 s,
    # and a plain loop has no retry for a request sent on a socket being closed.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=4),
                                 timeout=aiohttp.ClientTimeout(total=60))


def httpx_contender(url: str, payloads: list[dict], loop: LoopThread):
    import httpx

    client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

    async def post(body):
        return (await client.post(url + "/v1/score", json=body)).json()["rewards"]

    async def once():
        return await asyncio.gather(*(post(b) for b in payloads))

    return lambda: loop.run(once())


def openrlhf_contender(url: str, payloads: list[dict], loop: LoopThread):
    import aiohttp

    async def post(body):  # OpenRLHF 0.11: a session per request (openrlhf/utils/agent.py)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as session:
            async with session.post(url + "/v1/score", json=body) as response:
                return (await response.json())["rewards"]

    async def once():
        return await asyncio.gather(*(post(b) for b in payloads))

    return lambda: loop.run(once())


def rewardbridge_contender(url: str, payloads: list[dict]):
    from rewardbridge import load_reward

    per_request = len(payloads[0]["conversations"])
    reward = load_reward(url, protocol="rewardbridge", request_batch_size=per_request, max_concurrency=64,
                         name=f"client_{per_request}")  # one name per shape: no duplicate-name warning
    rows = [row for body in payloads for row in body["conversations"]]
    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    return lambda: reward(prompts=prompts, completions=completions)


def measure(contenders: dict, requests: int, rounds: int) -> dict:
    for run in contenders.values():  # warm-up: connections open, imports done
        run()
    results = interleaved({name: (lambda run=run: timed(run)) for name, run in contenders.items()}, rounds)
    for figures in results.values():
        figures["req_per_s"] = requests / figures["wall_s"]
        figures["cpu_ms_per_req"] = 1000 * figures["cpu_s"] / requests
        figures["cpu_ms_per_req_min"] = 1000 * figures["cpu_s_min"] / requests  # the least disturbed round
    return results


def coalescing(url: str, port: int, threads: int) -> tuple[int, float]:
    """64 threads call the reward at once with one conversation each: requests that reached the stub."""
    from concurrent.futures import ThreadPoolExecutor

    from rewardbridge import load_reward

    reward = load_reward(url, protocol="rewardbridge", name="coalesced")  # request_batch_size 64 (the default)
    barrier = threading.Barrier(threads)

    def one(i):
        barrier.wait()
        return reward(prompts=[f"Question {i}"], completions=[f"Answer {i}"])

    before = stub_requests(port)
    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        out = list(pool.map(one, range(threads)))
    wall = time.perf_counter() - began
    assert all(o == [0.5] for o in out)
    return stub_requests(port) - before, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10, help="calls per contender per round")
    parser.add_argument("--no-serve", action="store_true", help="skip the shape against a real rewardbridge serve")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)  # the stub's own process
    args = parser.parse_args()
    if args.serve is not None:
        return serve_stub(args.serve)

    port = free_port()
    stub = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        wait_until_up(port, stub, path="/count")
        url = f"http://127.0.0.1:{port}"
        loop = LoopThread()
        print(f"client benchmark: {machine_line()}; stub endpoint in its own process")
        print(f"{'shape':<26}{'client':<14}{'req/s':>9}{'vs aiohttp':>12}{'CPU ms/req':>12}{'min':>7}{'CPU vs aiohttp':>16}")
        for label, conversations, per_request in [("64 x 1 conversation", 64, 1), ("8 x 64 conversations", 512, 64)]:
            payloads = bodies(conversations, per_request)
            contenders = {
                "aiohttp": aiohttp_contender(url, payloads, loop),
                "httpx": httpx_contender(url, payloads, loop),
                "openrlhf": openrlhf_contender(url, payloads, loop),
                "rewardbridge": rewardbridge_contender(url, payloads),
            }
            repeated = {name: (lambda run=run: [run() for _ in range(args.calls)]) for name, run in contenders.items()}
            results = measure(repeated, len(payloads) * args.calls, args.rounds)
            report(label, results)
        if not args.no_serve:
            report("64 x 1, serve (1 per fwd)", served_shape(loop, args))
        sent, wall = coalescing(url, port, 64)
        print(f"coalescing: 64 threads x 1 conversation each -> {sent} requests ({wall * 1000:.0f} ms)")
    finally:
        for session in _SESSIONS:
            loop.run(session.close())
        stub.terminate()
        stub.wait()


def report(label: str, results: dict) -> None:
    """One line per client: throughput and CPU per request (median, min), each against aiohttp's
    (the CPU ratio is aiohttp's CPU over the client's: 1.0 = as cheap)."""
    base = results["aiohttp"]
    for name, f in results.items():
        print(f"{label:<26}{name:<14}{f['req_per_s']:>9.0f}{f['req_per_s'] / base['req_per_s']:>11.2f}x"
              f"{f['cpu_ms_per_req']:>12.3f}{f['cpu_ms_per_req_min']:>7.3f}{base['cpu_ms_per_req_min'] / f['cpu_ms_per_req_min']:>15.2f}x")


def served_shape(loop: LoopThread, args) -> dict:
    """64 x 1 conversation against a real `rewardbridge serve` of the tests' tiny classifier."""
    import tempfile

    import torch
    from transformers import LlamaForSequenceClassification

    from rewardbridge.testing import build_tokenizer, llama_config, save_model

    workdir = tempfile.mkdtemp()
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    source = save_model(f"{workdir}/reward", LlamaForSequenceClassification(llama_config(tokenizer, num_labels=1)), tokenizer)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REWARDBRIDGE_API_KEY"}
    # Batching off: each request is scored as it comes. With batching on, whether a burst of 64
    # lands within one --max-wait-ms window (one round) or two decides the figure, not the client.
    server = subprocess.Popen([sys.executable, "-m", "rewardbridge.cli", "serve", source, "--port", str(port),
                               "--max-batch-size", "1", "--max-wait-ms", "0"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(port, server)
        url = f"http://127.0.0.1:{port}"
        payloads = bodies(64, 1)
        contenders = {"aiohttp": aiohttp_contender(url, payloads, loop), "openrlhf": openrlhf_contender(url, payloads, loop),
                      "rewardbridge": rewardbridge_contender(url, payloads)}
        repeated = {name: (lambda run=run: [run() for _ in range(args.calls)]) for name, run in contenders.items()}
        return measure(repeated, 64 * args.calls, args.rounds)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
