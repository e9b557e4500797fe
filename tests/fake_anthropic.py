"""A real local HTTP server that speaks the Anthropic Messages API (``POST /v1/messages``).

Point the real ``anthropic`` client at it (``base_url=fake.url``) to test LLM code paths without
the network and without monkeypatching. The server

- binds 127.0.0.1 on a free port, runs in a daemon thread (``ThreadingHTTPServer``), so it works
  from sync and async tests alike;
- validates the request shape the way the API does (headers, model, max_tokens, messages,
  system, tools, tool_choice) and answers ``400 invalid_request_error`` when it is wrong; every
  problem is also kept in ``fake.problems`` so a test can assert there were none;
- records every request (method, path, headers, JSON body) in ``fake.requests``;
- answers from a script: ``fake.push(reply, ...)`` queues replies, consumed one per request; when
  the queue is empty it asks ``fake.responder(request)`` if set; with neither it answers a
  non-retryable 500 that says the script ran out (so a test fails loudly, not by hanging).

Replies (build them with the helpers below):

    tool_use({"operations": []})            # a tool_use block (name: the forced tool_choice name)
    tool_use("not a dict")                  # malformed: ``input`` that is not an object
    text("I'd rather not")                  # a text-only answer (no tool call)
    rate_limited(retry_after=0)             # 429 rate_limit_error with retry-after headers
    server_error()                          # 500 api_error
    overloaded()                            # 529 overloaded_error
    error(400, "invalid_request_error", "...")
    delay(1.0, then=tool_use({...}))        # sleep first (to trip client timeouts)

Usage numbers are deterministic: ``input_tokens = len(json of system+messages+tools) // 4`` and
``output_tokens = len(json of content) // 4`` (both at least 1), so benches see growth.

As a pytest fixture::

    from tests.fake_anthropic import fake_anthropic, tool_use  # noqa: F401  (fixture import)

    async def test_x(fake_anthropic):
        fake_anthropic.push(tool_use({"ok": True}))
        client = anthropic.AsyncAnthropic(api_key="test", base_url=fake_anthropic.url)
        ...
        assert fake_anthropic.requests[0].body["tool_choice"] == {"type": "tool", "name": "x"}
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = [
    "FakeAnthropic",
    "RecordedRequest",
    "Reply",
    "delay",
    "error",
    "fake_anthropic",
    "overloaded",
    "rate_limited",
    "server_error",
    "text",
    "tool_use",
]


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Build with the helper functions, not directly."""

    kind: str  # "tool_use" | "text" | "error" | "delay"
    tool_input: Any = None
    tool_name: str | None = None
    text: str | None = None
    stop_reason: str | None = None
    status: int = 200
    error_type: str | None = None
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    then: Reply | None = None


def tool_use(
    tool_input: Any,
    *,
    name: str | None = None,
    text: str | None = None,
    stop_reason: str = "tool_use",
) -> Reply:
    """A reply with one ``tool_use`` block whose ``input`` is ``tool_input`` (sent as given, so a
    non-dict makes a malformed reply). ``name`` defaults to the request's forced tool. ``text``
    adds a text block before it."""
    return Reply("tool_use", tool_input=tool_input, tool_name=name, text=text, stop_reason=stop_reason)


def text(content: str, *, stop_reason: str = "end_turn") -> Reply:
    """A reply with one text block and no tool call."""
    return Reply("text", text=content, stop_reason=stop_reason)


def error(
    status: int,
    error_type: str,
    message: str,
    *,
    retry_after: float | None = None,
    retry_after_ms: float | None = None,
    should_retry: bool | None = None,
) -> Reply:
    """An HTTP error in Anthropic's format: ``{"type": "error", "error": {"type", "message"}}``."""
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["retry-after"] = _num(retry_after)
    if retry_after_ms is not None:
        headers["retry-after-ms"] = _num(retry_after_ms)
    if should_retry is not None:
        headers["x-should-retry"] = "true" if should_retry else "false"
    return Reply("error", status=status, error_type=error_type, message=message, headers=headers)


def rate_limited(*, retry_after: float = 0, retry_after_ms: float | None = 1) -> Reply:
    """429 ``rate_limit_error``. The API sends ``retry-after`` (seconds); the SDK prefers the
    more precise ``retry-after-ms``, kept tiny by default so tests stay fast."""
    return error(
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit",
        retry_after=retry_after,
        retry_after_ms=retry_after_ms,
    )


def server_error(*, retry_after_ms: float | None = 1) -> Reply:
    """500 ``api_error``. (The real API sends no retry header here; the default tiny
    ``retry-after-ms`` only keeps tests fast — pass ``None`` to get the SDK's own back-off.)"""
    return error(500, "api_error", "Internal server error", retry_after_ms=retry_after_ms)


def overloaded(*, retry_after_ms: float | None = 1) -> Reply:
    """529 ``overloaded_error``."""
    return error(529, "overloaded_error", "Overloaded", retry_after_ms=retry_after_ms)


def delay(seconds: float, then: Reply | None = None) -> Reply:
    """Wait ``seconds`` before answering ``then`` (default: a text reply). If the client gave up
    meanwhile, the late answer is dropped."""
    return Reply("delay", seconds=seconds, then=then or text("(late reply)"))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# --------------------------------------------------------------------------- requests


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON (or the raw text when it was not JSON)
    raw: bytes

    @property
    def forced_tool(self) -> str | None:
        """The tool named by ``tool_choice: {"type": "tool", "name": ...}``, if any."""
        choice = self.body.get("tool_choice") if isinstance(self.body, dict) else None
        if isinstance(choice, dict) and choice.get("type") == "tool":
            return choice.get("name")
        return None


Responder = Callable[[RecordedRequest], Reply]


def validate_messages_request(req: RecordedRequest) -> list[str]:
    """The problems the real API would reject (a useful subset). Empty when the shape is fine."""
    problems: list[str] = []
    if req.method != "POST" or req.path.split("?")[0] != "/v1/messages":
        return [f"unsupported endpoint {req.method} {req.path}"]
    h = req.headers
    if "x-api-key" not in h and not h.get("authorization", "").startswith("Bearer "):
        problems.append("missing x-api-key (or Authorization: Bearer) header")
    if "anthropic-version" not in h:
        problems.append("missing anthropic-version header")
    if "application/json" not in h.get("content-type", ""):
        problems.append("content-type is not application/json")
    b = req.body
    if not isinstance(b, dict):
        return problems + ["body is not a JSON object"]
    if not isinstance(b.get("model"), str) or not b["model"]:
        problems.append("model: required string")
    mt = b.get("max_tokens")
    if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
        problems.append("max_tokens: required integer >= 1")
    msgs = b.get("messages")
    if not isinstance(msgs, list) or not msgs:
        problems.append("messages: required non-empty list")
    else:
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                problems.append(f"messages.{i}.role: must be 'user' or 'assistant'")
                continue
            c = m.get("content")
            if isinstance(c, str):
                if not c:
                    problems.append(f"messages.{i}.content: must not be empty")
            elif isinstance(c, list) and c:
                for j, blk in enumerate(c):
                    if not isinstance(blk, dict) or not isinstance(blk.get("type"), str):
                        problems.append(f"messages.{i}.content.{j}: block needs a type")
            else:
                problems.append(f"messages.{i}.content: string or non-empty list of blocks")
        if isinstance(msgs[0], dict) and msgs[0].get("role") != "user":
            problems.append("messages.0.role: first message must be 'user'")
    if "system" in b:
        s = b["system"]
        ok = isinstance(s, str) or (
            isinstance(s, list) and all(isinstance(x, dict) and x.get("type") == "text" for x in s)
        )
        if not ok:
            problems.append("system: string or list of text blocks")
    names: list[str] = []
    if "tools" in b:
        tools = b["tools"]
        if not isinstance(tools, list):
            problems.append("tools: must be a list")
            tools = []
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                problems.append(f"tools.{i}.name: required string")
                continue
            names.append(t["name"])
            schema = t.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                problems.append(f"tools.{i}.input_schema: must be a JSON schema with type 'object'")
    if "tool_choice" in b:
        tc = b["tool_choice"]
        if not isinstance(tc, dict) or tc.get("type") not in ("auto", "any", "tool", "none"):
            problems.append("tool_choice.type: one of auto, any, tool, none")
        elif tc["type"] == "tool" and tc.get("name") not in names:
            problems.append(f"tool_choice.name: {tc.get('name')!r} is not one of the tools")
    return problems


# --------------------------------------------------------------------------- server


class FakeAnthropic:
    """The scripted server. Use as a context manager or through the ``fake_anthropic`` fixture."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder = responder
        self.requests: list[RecordedRequest] = []
        self.problems: list[str] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> FakeAnthropic:
        fake = self

        class Handler(_Handler):
            server_ref = fake

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-anthropic", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # wakes handlers sleeping in delay()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The base URL to give the client (``base_url=`` / ``ANTHROPIC_BASE_URL``)."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- script
    def push(self, *replies: Reply) -> FakeAnthropic:
        """Queue replies; each request consumes the next one."""
        with self._lock:
            self._queue.extend(replies)
        return self

    @property
    def pending(self) -> int:
        """Scripted replies not yet consumed."""
        with self._lock:
            return len(self._queue)

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies of all requests, in order."""
        return [r.body for r in self.requests]

    def _next_reply(self, req: RecordedRequest) -> Reply | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.responder is not None:
            return self.responder(req)
        return None

    # -- answering (runs in the handler thread)
    def _handle(self, req: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append(req)
        problems = validate_messages_request(req)
        if problems:
            with self._lock:
                self.problems.extend(problems)
            return self._error_response(
                error(400, "invalid_request_error", "; ".join(problems), should_retry=False)
            )
        reply = self._next_reply(req)
        if reply is None:
            return self._error_response(
                error(500, "api_error", "fake_anthropic: no scripted reply left", should_retry=False)
            )
        while reply.kind == "delay":
            if self._closing.wait(reply.seconds):
                return self._error_response(error(503, "api_error", "fake_anthropic: closing", should_retry=False))
            assert reply.then is not None
            reply = reply.then
        if reply.kind == "error":
            return self._error_response(reply)
        return self._message_response(req, reply)

    def _error_response(self, reply: Reply) -> tuple[int, dict[str, str], bytes]:
        rid = f"req_fake{next(self._ids):06d}"
        body = {
            "type": "error",
            "error": {"type": reply.error_type, "message": reply.message},
            "request_id": rid,
        }
        return reply.status, {**reply.headers, "request-id": rid}, json.dumps(body).encode()

    def _message_response(self, req: RecordedRequest, reply: Reply) -> tuple[int, dict[str, str], bytes]:
        n = next(self._ids)
        content: list[dict[str, Any]] = []
        if reply.text is not None:
            content.append({"type": "text", "text": reply.text})
        if reply.kind == "tool_use":
            content.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_fake{n:06d}",
                    "name": reply.tool_name or req.forced_tool or "tool",
                    "input": reply.tool_input,
                }
            )
        b = req.body
        prompt = json.dumps([b.get("system"), b.get("messages"), b.get("tools")], separators=(",", ":"))
        body = {
            "id": f"msg_fake{n:06d}",
            "type": "message",
            "role": "assistant",
            "model": b.get("model"),
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": max(1, len(prompt) // 4),
                "output_tokens": max(1, len(json.dumps(content, separators=(",", ":"))) // 4),
            },
        }
        return 200, {"request-id": f"req_fake{n:06d}"}, json.dumps(body).encode()


class _Handler(BaseHTTPRequestHandler):
    server_ref: FakeAnthropic
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    # Headers and body go out in two writes; with Nagle's algorithm on, the second waits ~40 ms
    # for the client's delayed ACK, which would dwarf everything a benchmark means to measure.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        req = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw=raw,
        )
        status, headers, payload = self.server_ref._handle(req)
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and went away

    do_POST = _serve
    do_GET = _serve


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A started :class:`FakeAnthropic`; closed after the test."""
    with FakeAnthropic() as fake:
        yield fake
