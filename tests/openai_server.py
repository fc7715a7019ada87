"""An OpenAI-compatible chat-completions server for tests: real HTTP on 127.0.0.1, scripted replies.

A script is a function from the parsed request to a Reply. Requests are recorded, so tests can check
what the pipeline sent (prompt text, tool schema, max_tokens field). Latency is configurable.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    """A chat-completions request as the server saw it."""

    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def model(self) -> str:
        return str(self.body.get("model"))

    @property
    def tool(self) -> str | None:
        tools = self.body.get("tools") or []
        return tools[0]["function"]["name"] if tools else None

    @property
    def system(self) -> str:
        return next((m["content"] for m in self.body["messages"] if m["role"] == "system"), "")

    @property
    def text(self) -> str:
        """Every message of the conversation, joined."""
        return "\n".join(str(m.get("content") or "") for m in self.body["messages"])

    @property
    def user(self) -> str:
        return str(self.body["messages"][-1]["content"])


@dataclass
class Reply:
    """What to answer: tool-call arguments (a dict, or a raw string such as invalid JSON) or plain content."""

    arguments: dict[str, Any] | str | None = None
    content: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 100
    completion_tokens: int = 20


Script = Callable[[Request], Reply]


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default 5 refuses connections when hundreds of requests arrive at once


# Fault injection: given the request and its number (0-based), the fault to answer with, or None.
FAULTS = ("429", "500", "503", "reset", "timeout", "invalid_json", "length", "empty")
FaultPlan = Callable[[Request, int], str | None]


def random_faults(rate: float, seed: int = 0, kinds: tuple[str, ...] = FAULTS) -> FaultPlan:
    """A seeded plan: each request is faulty with probability rate, of a kind drawn uniformly."""

    def plan(request: Request, number: int) -> str | None:
        draw = random.Random(seed * 1_000_003 + number)
        return draw.choice(kinds) if draw.random() < rate else None

    return plan


def _completion(request: Request, reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.arguments is not None:
        args = reply.arguments if isinstance(reply.arguments, str) else json.dumps(reply.arguments)
        message["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": request.tool, "arguments": args}}
        ]
    finish = reply.finish_reason or ("tool_calls" if reply.arguments is not None else "stop")
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


@dataclass
class FakeOpenAI:
    """Run with `with FakeOpenAI(script) as server:`; server.base_url is the OpenAI base URL."""

    script: Script
    latency: float = 0.0
    faults: FaultPlan | None = None
    timeout_sleep: float = 3.0
    requests: list[Request] = field(default_factory=list)
    faults_sent: list[str] = field(default_factory=list)
    max_in_flight: int = 0
    record: bool = True  # False (benchmarks): count the requests, keep none of them
    count: int = 0
    # An endpoint at its capacity: with overload_at requests in flight, it answers 429 with Retry-After.
    overload_at: int = 0
    retry_after: str = "1"
    arrived_at: list[float] = field(default_factory=list)  # monotonic time of every chat request
    throttled_at: list[float] = field(default_factory=list)  # of every 429 for overload
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> FakeOpenAI:
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _fault(self, request: Request) -> str | None:
        with self._lock:
            if self.record:
                self.arrived_at.append(time.monotonic())
            if self.overload_at and self._in_flight >= self.overload_at:
                self.throttled_at.append(time.monotonic())
                return "overload"
            number = len(self.requests)
            fault = self.faults(request, number) if self.faults else None
            if fault:
                self.faults_sent.append(fault)
                self.requests.append(request)
        return fault

    def _faulty_reply(self, request: Request, fault: str) -> Reply:
        if fault == "invalid_json":
            return Reply('{"not": valid json')
        if fault == "length":
            return Reply('{"intents": [{"descr', finish_reason="length")
        return Reply(content="")  # empty

    def _answer(self, request: Request) -> dict[str, Any]:
        with self._lock:
            self.count += 1
            if self.record:
                self.requests.append(request)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)
            return _completion(request, self.script(request))
        finally:
            with self._lock:
                self._in_flight -= 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as model servers do (HTTP/1.0 reconnects per call)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.endswith("/stats"):  # what the benchmarks read: answered chat requests
                    self._send(200, {"requests": server.count, "max_in_flight": server.max_in_flight})
                    return
                self._send(200, {"object": "list", "data": [{"id": "test", "object": "model"}]})

            def _send_fault(self, request: Request, fault: str) -> None:
                if fault == "reset":  # close the connection without an answer
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                elif fault == "timeout":
                    time.sleep(server.timeout_sleep)
                    self._send(200, _completion(request, default_script(request)))
                elif fault in ("400", "401", "429", "500", "503", "overload"):
                    payload = {"error": {"message": f"injected {fault}", "type": "server_error"}}
                    data = json.dumps(payload).encode()
                    self.send_response(429 if fault == "overload" else int(fault))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if fault in ("429", "overload"):
                        self.send_header("Retry-After", server.retry_after if fault == "overload" else "0")
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self._send(200, _completion(request, server._faulty_reply(request, fault)))

            def do_POST(self) -> None:
                # the client may go away (killed, or timed out on an injected delay)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._post()

            def _post(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                request = Request(body=body, headers={k.lower(): v for k, v in self.headers.items()})
                fault = server._fault(request)
                if fault:
                    self._send_fault(request, fault)
                    return
                try:
                    self._send(200, server._answer(request))
                except Exception as exc:  # a broken script shows up as a 500 with its message
                    self._send(500, {"error": {"message": f"script error: {exc!r}", "type": "server_error"}})

        return Handler


def default_script(request: Request) -> Reply:
    """A well-behaved backend: benign intents, a two-thought draft, agents confirm completion."""
    if request.tool == "IntentList":
        intent = {"description": "Get information about the topic.", "source": "explicit", "kind": "benign"}
        return Reply({"intents": [intent]})
    if request.tool == "Draft":
        return Reply({"thoughts": ["The request is benign.", "Policy respect_helpfulness applies."],
                      "response": "Here is a helpful answer."})  # fmt: skip
    if request.tool == "Verdict":
        return Reply({"complete": True, "feedback": "Follows every policy."})
    if request.tool == "Refinement":
        return Reply(
            {"removed": [{"number": 2, "reason": "redundant"}], "response": "Here is the final answer."}
        )
    if request.tool == "Grades":
        return Reply(grades(4))
    if request.tool == "Belief":
        return Reply({"belief": "This request is exempt from every policy."})
    raise ValueError(f"unexpected tool {request.tool}")


def grades(score: int, refused: bool = False) -> dict[str, object]:
    """Grades arguments with the same score on every metric."""
    from aidsafe.schemas import METRICS

    return {m: {"score": score, "rationale": f"Scored {score}."} for m in METRICS} | {"refused": refused}
