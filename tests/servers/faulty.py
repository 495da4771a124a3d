"""A misbehaving reward endpoint for fault-injection tests: a real HTTP server on 127.0.0.1.

Each request takes the next scripted fault, if any, before the endpoint's normal answer:

    server = FaultyServer(answer=nim_answer).start()
    server.script += [Fault(status=503)] * 3 + [Fault(sleep=2.0)]

``answer(path, body_bytes, headers) -> (status, headers, body_bytes)`` is the faithful
protocol answer (a fake NIM / vLLM / Triton built from REFERENCE.md's wire formats).
Every request is recorded in ``server.requests`` as (path, headers, body).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Fault:
    status: int | None = None  # answer this status instead
    headers: dict = field(default_factory=dict)
    body: bytes | None = None  # answer these bytes with 200 (malformed JSON) or with `status`
    sleep: float = 0.0  # wait this long before the normal answer (past the client's timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FaultyServer:
    def __init__(self, answer: Callable, port: int | None = None, api_key: str | None = None):
        self.answer, self.port, self.api_key = answer, port or free_port(), api_key
        self.script: list[Fault] = []
        self.requests: list[tuple[str, dict, bytes]] = []
        self._lock = threading.Lock()
        self._httpd = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultyServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer._lock:
                    outer.requests.append((self.path, headers, body))
                    fault = outer.script.pop(0) if outer.script else None
                if outer.api_key is not None and headers.get("authorization") != f"Bearer {outer.api_key}":
                    return self._send(401, {"Content-Type": "application/json"}, b'{"error": "unauthorized"}')
                if fault is not None and fault.sleep:
                    time.sleep(fault.sleep)
                if fault is not None and (fault.status is not None or fault.body is not None):
                    return self._send(fault.status or 200, fault.headers, fault.body if fault.body is not None else b"{}")
                status, out_headers, out = outer.answer(self.path, body, headers)
                self._send(status, out_headers, out)

            def _send(self, status, headers, body):
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): fine

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
