"""A stand-in for vLLM's OpenAI-compatible server (``vllm serve MODEL``), on 127.0.0.1, that
generates deterministic text: the policy engine ``rewardbridge pairs --engine`` talks to.

Wire format as vLLM's (and NIM's) OpenAI API: ``GET /health``, ``GET /v1/models``,
``POST /v1/completions`` {"model", "prompt", "n", "max_tokens", "temperature", "top_p",
"seed"} -> {"object": "text_completion", "choices": [{"index", "text", "logprobs",
"finish_reason"}], "usage"}; ``POST /v1/chat/completions`` {"model", "messages", ...} ->
{"object": "chat.completion", "choices": [{"index", "message": {"role", "content"},
"finish_reason"}], "usage"}; an unknown model is a 404 ``{"object": "error", "type":
"NotFoundError", ...}``. The text of choice i is a function of (prompt, seed, i): a word
count of 1-8 drawn from a hash, cut at ``max_tokens`` words ("length"), else "stop".

In process: ``GenerationServer(model="policy").start()``; as a program (a recipe's
``engine_command``): ``python tests/servers/generation.py --model NAME --port PORT [--dump-env PATH]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = ("paris eight legs sea foam tide reward model road joke haiku waves capital city spider gradient loss "
         "answer yes no maybe four twelve red blue green fast slow").split()


def respond(prompt_key: str, seed: int, index: int, max_tokens: int) -> tuple[str, str]:
    """The deterministic completion of one choice: (text, finish_reason)."""
    digest = hashlib.sha256(f"{prompt_key}|{seed}|{index}".encode()).digest()
    count = 1 + digest[0] % 8
    words = [WORDS[b % len(WORDS)] for b in digest[1:1 + min(count, max_tokens)]]
    return " " + " ".join(words), "length" if count > max_tokens else "stop"


class GenerationServer:
    def __init__(self, model: str = "policy", port: int = 0, delay: float = 0.0, fail_first: int = 0, ignore_n: bool = False):
        self.model, self.delay, self.fail_first, self.ignore_n = model, delay, fail_first, ignore_n
        self.requests: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", port), self._handler())
        self.port = self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GenerationServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def answer(self, path: str, body: dict) -> tuple[int, dict]:
        with self._lock:
            self.requests.append((path, body))
            failing = self.fail_first > 0
            self.fail_first -= 1 if failing else 0
        if self.delay:
            time.sleep(self.delay)
        if failing:
            return 503, _error("The server is loading the model.", "ServiceUnavailableError", 503)
        if path not in ("/v1/completions", "/v1/chat/completions"):
            return 404, {"detail": "Not Found"}
        chat = path.endswith("chat/completions")
        if body.get("model") != self.model:
            return 404, _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404)
        field = "messages" if chat else "prompt"
        value = body.get(field)
        if chat and not (isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)):
            return 400, _error("messages: a list of {role, content} objects is required", "BadRequestError", 400)
        if not chat and not isinstance(value, str):
            return 400, _error("prompt: a string is required", "BadRequestError", 400)
        n, max_tokens, seed = int(body.get("n", 1)), int(body.get("max_tokens", 16)), int(body.get("seed") or 0)
        if n < 1 or max_tokens < 1:
            return 400, _error("n and max_tokens must be at least 1", "BadRequestError", 400)
        key = json.dumps(value, sort_keys=True)
        choices = []
        for index in range(1 if self.ignore_n else n):
            text, finish = respond(key, seed, index, max_tokens)
            content = {"message": {"role": "assistant", "content": text, "tool_calls": []}} if chat else {"text": text}
            choices.append({"index": index, **content, "logprobs": None, "finish_reason": finish, "stop_reason": None})
        tokens = sum(len(c.get("text", c.get("message", {}).get("content", "")).split()) for c in choices)
        return 200, {"id": f"{'chatcmpl' if chat else 'cmpl'}-{len(self.requests)}", "object": "chat.completion" if chat else "text_completion",
                     "created": int(time.time()), "model": self.model, "choices": choices,
                     "usage": {"prompt_tokens": len(key.split()), "completion_tokens": tokens, "total_tokens": len(key.split()) + tokens}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/health":
                    return self._send(200, {})
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model", "owned_by": "vllm"}]})
                self._send(404, {"detail": "Not Found"})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    return self._send(400, _error("request body is not JSON", "BadRequestError", 400))
                self._send(*server.answer(self.path, body))

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client killed mid-request (the SIGKILL test) is expected, not news


def _error(message: str, kind: str, code: int) -> dict:
    return {"object": "error", "message": message, "type": kind, "param": None, "code": code}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--dump-env", default=None, metavar="PATH", help="write the environment it started with here (JSON)")
    args = parser.parse_args()
    if args.dump_env:
        import os

        with open(args.dump_env, "w") as f:
            json.dump(dict(os.environ), f)
    server = GenerationServer(args.model, args.port, delay=args.delay)
    print(f"serving {args.model} on {server.url}", flush=True)
    server._httpd.serve_forever()
