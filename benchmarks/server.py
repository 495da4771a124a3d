"""The server's cost per request: `rewardbridge serve` vs a minimal ASGI app that scores the same way.

Three servers, each a subprocess on 127.0.0.1 under the same uvicorn (httptools parser), all
serving the same tiny reward model through the same ``ServedModel.score``:

- ``minimal``: a bare ASGI app: read the body, ``json.loads``, one ``Conversation``, score it
  on one worker thread (as the server does: forwards never overlap), ``json.dumps`` a NIM
  answer. No auth, limits, routing, metrics or batching: the floor for a Python server that
  scores each request on its own;
- ``serve, batching off``: ``rewardbridge serve --max-batch-size 1``;
- ``serve, batching on``: ``rewardbridge serve`` (``--max-batch-size 64 --max-wait-ms 5``).

Traffic: NIM requests (one conversation each), 64 in flight, from an aiohttp loop in this
process; and, for the batching-on server, the same conversations 64 per request
(``/v1/score``). Each round sends every server its requests in turn (interleaved); figures
are medians over rounds. The server's own CPU time per request (from /proc, all its
threads) is the steadiest figure on a shared machine; "overhead" is a server's CPU per
request minus the minimal app's.

    python benchmarks/server.py              # about two minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

from rounds import free_port, interleaved, machine_line, wait_until_up


# -- the minimal app (its own process) ---------------------------------------------------------


def serve_minimal(source: str, port: int) -> None:
    import uvicorn

    from rewardbridge.conversation import Conversation
    from rewardbridge.server import ServedModel

    from concurrent.futures import ThreadPoolExecutor

    model = ServedModel(source, {})
    worker = ThreadPoolExecutor(max_workers=1)  # one scoring thread, as the server has: forwards never overlap

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        if scope["method"] == "GET":
            out = b'{"ready": true}'
        else:
            messages = json.loads(body)["messages"]
            conversation = Conversation.from_trl(messages[:-1], messages[-1:])
            scores = await asyncio.get_running_loop().run_in_executor(worker, model.score, "chat", [conversation])
            out = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                    "content": f"reward:{float(scores.values[0])!r}"}}]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, http="httptools", lifespan="off")


# -- the benchmark ------------------------------------------------------------------------------


def build_reward(workdir: str) -> str:
    import torch
    from transformers import LlamaForSequenceClassification

    from rewardbridge.testing import build_tokenizer, llama_config, save_model

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    return save_model(f"{workdir}/reward", LlamaForSequenceClassification(llama_config(tokenizer, num_labels=1)), tokenizer)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(command: list[str], port: int) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if k != "REWARDBRIDGE_API_KEY"}, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_up(port, process)
    return process


def conversations(n: int) -> list[tuple[str, str]]:
    return [(f"Question {i}: what is {i} + {i}?", f"It is {2 * i}, since {i} + {i} = {2 * i}.") for i in range(n)]


async def fire(session, url: str, path: str, bodies: list[dict], in_flight: int) -> None:
    semaphore = asyncio.Semaphore(in_flight)

    async def one(body):
        async with semaphore:
            async with session.post(url + path, json=body) as answer:
                assert answer.status == 200, await answer.text()
                await answer.read()

    await asyncio.gather(*(one(b) for b in bodies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=512, help="one-conversation requests per server per round")
    parser.add_argument("--minimal", nargs=2, metavar=("SOURCE", "PORT"), help=argparse.SUPPRESS)  # the minimal app's process
    args = parser.parse_args()
    if args.minimal:
        return serve_minimal(args.minimal[0], int(args.minimal[1]))

    import aiohttp

    workdir = tempfile.mkdtemp()
    source = build_reward(workdir)
    cli = [sys.executable, "-m", "rewardbridge.cli", "serve", source]
    ports = {name: free_port() for name in ("minimal", "off", "on")}
    processes = {
        "minimal": start([sys.executable, __file__, "--minimal", source, str(ports["minimal"])], ports["minimal"]),
        "off": start([*cli, "--port", str(ports["off"]), "--max-batch-size", "1", "--max-wait-ms", "0"], ports["off"]),
        "on": start([*cli, "--port", str(ports["on"]), "--max-batch-size", "64", "--max-wait-ms", "5"], ports["on"]),
    }
    pairs = conversations(args.requests)
    nim = [{"model": "reward_model", "messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]} for p, c in pairs]
    native = [{"model": "reward_model", "conversations": [{"prompt": p, "completion": c} for p, c in pairs[i:i + 64]]}
              for i in range(0, len(pairs), 64)]
    loop = asyncio.new_event_loop()
    session = loop.run_until_complete(_session())
    try:
        def contender(name: str, path: str, bodies: list[dict]):
            url, pid = f"http://127.0.0.1:{ports[name]}", processes[name].pid

            def run():
                cpu, wall = cpu_seconds(pid), time.perf_counter()
                loop.run_until_complete(fire(session, url, path, bodies, 64))
                return {"wall_s": time.perf_counter() - wall, "server_cpu_s": cpu_seconds(pid) - cpu}

            return run

        contenders = {
            "minimal ASGI app, 1 per request": contender("minimal", "/v1/chat/completions", nim),
            "serve, batching off, 1 per request": contender("off", "/v1/chat/completions", nim),
            "serve, batching on, 1 per request": contender("on", "/v1/chat/completions", nim),
            "serve, batching on, 64 per request": contender("on", "/v1/score", native),
        }
        for run in contenders.values():
            run()  # warm-up
        results = interleaved(contenders, args.rounds)
    finally:
        loop.run_until_complete(session.close())
        for process in processes.values():
            process.terminate()
            process.wait()

    n = args.requests
    print(f"server benchmark: {machine_line()}; {n} conversations per server per round, 64 requests in flight, "
          f"{args.rounds} interleaved rounds (medians)")
    print(f"{'server and traffic':<38}{'conv/s':>9}{'server CPU ms/conv':>20}{'vs minimal':>12}")
    base = results["minimal ASGI app, 1 per request"]
    for name, figures in results.items():
        rate, cpu_ms = n / figures["wall_s"], 1000 * figures["server_cpu_s"] / n
        print(f"{name:<38}{rate:>9.0f}{cpu_ms:>20.2f}{rate / (n / base['wall_s']):>11.2f}x")
    base_cpu = 1000 * base["server_cpu_s"] / n
    off = 1000 * results["serve, batching off, 1 per request"]["server_cpu_s"] / n
    on = 1000 * results["serve, batching on, 1 per request"]["server_cpu_s"] / n
    print(f"per-request overhead over the minimal app (server CPU): batching off {off - base_cpu:+.2f} ms, "
          f"batching on {on - base_cpu:+.2f} ms")
    one, many = results["serve, batching on, 1 per request"]["wall_s"], results["serve, batching on, 64 per request"]["wall_s"]
    print(f"batching on: 1-per-request traffic gets {many / one:.2f}x of its 64-per-request throughput")


async def _session():
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=4))  # under uvicorn's 5 s


if __name__ == "__main__":
    main()
