"""A scripted stand-in for the Anthropic Messages API, for driving the real Claude Code CLI offline.

Stdlib only. Start it, point the CLI at it with ``ANTHROPIC_BASE_URL=server.url``, and give it a
``responder(request_body) -> blocks`` callable that decides what "the model" says::

    def responder(req):
        if is_subagent(req):
            return [text("DONE " + last_user_text(req)[:20])]
        if not tool_results(req):
            return [tool_use("Agent", {"description": "a", "prompt": "do A",
                                       "subagent_type": "general-purpose"})]
        return [text("MAIN FINISHED")]

    with MessagesAPIServer(responder) as server:
        run_claude("hi", api_url=server.url, ...)
        assert "do A" in server.all_request_texts()

A block is ``{"type": "text", "text": ...}`` or ``{"type": "tool_use", "name": ..., "input": {...}}``
(a bare string is shorthand for a text block). The server assigns tool_use ids and sets
``stop_reason`` to ``tool_use`` when any tool_use block is present, else ``end_turn``.

Side traffic (observed on 2.1.328 in ``-p`` mode): only ``HEAD /api/hello`` when
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC is unset (answered 200); no title / haiku / quota calls.
Should a request without tools ever come (``is_side_request``), it goes to ``side_responder``
(default: a short text) instead of ``responder``, unless ``route_side_requests=False``.
Unknown paths get a 404 JSON error; ``/v1/messages/count_tokens`` gets ``{"input_tokens": N}``.

Main agent vs subagent: ``is_subagent(req)`` (the subagent system prompt carries
``cc_is_subagent=true``). Background completions reach the main agent as user turns holding
``<task-notification>`` blocks: ``task_notifications(req)``.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

Block = dict
Responder = Callable[[dict], "Iterable[Block] | str | None"]

__all__ = [
    "MessagesAPIServer",
    "text",
    "tool_use",
    "agent_call",
    "message_text",
    "first_user_text",
    "last_user_text",
    "tool_results",
    "tool_result_texts",
    "system_text",
    "tool_names",
    "is_subagent",
    "is_side_request",
    "request_text",
    "strip_reminders",
    "task_notifications",
]


# --------------------------------------------------------------------------- block builders


def text(s: str) -> Block:
    return {"type": "text", "text": s}


def tool_use(name: str, input: dict) -> Block:  # noqa: A002 - mirrors the API field name
    return {"type": "tool_use", "name": name, "input": input}


def agent_call(
    prompt: str,
    *,
    description: str = "subtask",
    subagent_type: str = "general-purpose",
    run_in_background: bool | None = None,
    **extra: Any,
) -> Block:
    """An ``Agent`` tool call (the subagent tool; it was ``Task`` before CLI 2.1.63)."""
    inp: dict = {"description": description, "prompt": prompt, "subagent_type": subagent_type}
    if run_in_background is not None:
        inp["run_in_background"] = run_in_background
    inp.update(extra)
    return tool_use("Agent", inp)


def printed_agent_calls(output: str) -> list[Block]:
    """The Agent calls a command printed, one JSON line each (``execute``'s spawn list, ``merge``'s
    resolver), as the main agent sends them."""
    calls = []
    for line in output.splitlines():
        line = line.strip()
        if not (line.startswith("{") and '"subagent_type"' in line):
            continue
        try:
            c = json.loads(line)
        except ValueError:
            continue
        calls.append(agent_call(c["prompt"], description=c["description"], subagent_type=c["subagent_type"],
                                run_in_background=c.get("run_in_background")))
    return calls


# --------------------------------------------------------------------------- request helpers


def _content_text(content: Any) -> str:
    """All text inside a message ``content`` (string or list of blocks, incl. tool_result)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        t = block.get("type")
        if t == "text":
            parts.append(block.get("text", ""))
        elif t == "tool_result":
            parts.append(_content_text(block.get("content")))
        elif t == "tool_use":
            parts.append(json.dumps(block.get("input", {})))
    return "\n".join(p for p in parts if p)


def message_text(msg: dict) -> str:
    return _content_text(msg.get("content"))


def _user_messages(req: dict) -> list[dict]:
    return [m for m in req.get("messages", []) if m.get("role") == "user"]


def _is_tool_result_only(msg: dict) -> bool:
    c = msg.get("content")
    return isinstance(c, list) and bool(c) and all(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in c
    )


_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>\s*", re.S)


def strip_reminders(s: str) -> str:
    """Drop the ``<system-reminder>...</system-reminder>`` text the CLI injects into user turns."""
    return _REMINDER.sub("", s).strip()


def _human_text(msg: dict) -> str:
    """Text blocks of a user message, without tool_result blocks and system reminders."""
    c = msg.get("content")
    if isinstance(c, str):
        return strip_reminders(c)
    parts = [
        strip_reminders(b.get("text", ""))
        for b in (c or [])
        if isinstance(b, dict) and b.get("type") == "text"
    ]
    return "\n".join(p for p in parts if p)


def first_user_text(req: dict) -> str:
    """Text of the first user message (for a subagent: contains the prompt of its Agent call).

    The CLI prepends ``<system-reminder>`` text blocks (context, CLAUDE.md, ...), so use
    ``in`` rather than ``==`` when matching.
    """
    users = _user_messages(req)
    return _human_text(users[0]) if users else ""


def last_user_text(req: dict) -> str:
    """Text blocks of the most recent user message that has any (skips pure tool_result turns)."""
    for m in reversed(_user_messages(req)):
        if not _is_tool_result_only(m):
            return _human_text(m)
    return ""


_NOTIFICATION = re.compile(r"<task-notification>(.*?)</task-notification>", re.S)
_TAG = re.compile(r"<([a-z-]+)>(.*?)</\1>", re.S)


def task_notifications(req: dict, *, last_turn_only: bool = False) -> list[dict]:
    """Background-subagent completions told to the main agent, oldest first.

    2.1.328 sends each as its own user turn: ``<system-reminder>[SYSTEM NOTIFICATION ...]
    <task-notification><task-id>..</task-id><tool-use-id>..</tool-use-id><output-file>..
    </output-file><status>completed</status><summary>Agent "DESC" finished</summary><note>..
    </note><result>FINAL TEXT</result><usage>..</usage></task-notification></system-reminder>``.
    Returns dicts keyed by tag name with dashes as underscores (task_id, tool_use_id, status,
    summary, result, ...).
    """
    users = _user_messages(req)
    if last_turn_only:
        users = users[-1:]
    out = []
    for m in users:
        for body in _NOTIFICATION.findall(_content_text(m.get("content"))):
            out.append({k.replace("-", "_"): v.strip() for k, v in _TAG.findall(body)})
    return out


def tool_results(req: dict, *, last_turn_only: bool = False) -> list[dict]:
    """tool_result blocks in the request, as ``{"tool_use_id", "name", "content", "is_error"}``.

    ``name`` is resolved from the matching tool_use block of an earlier assistant turn.
    ``content`` is flattened to text.
    """
    names: dict[str, str] = {}
    out: list[dict] = []
    msgs = req.get("messages", [])
    if last_turn_only:
        users = [i for i, m in enumerate(msgs) if m.get("role") == "user"]
        start = users[-1] if users else len(msgs)
    else:
        start = 0
    for i, m in enumerate(msgs):
        c = m.get("content")
        if not isinstance(c, list):
            continue
        for b in c:
            if not isinstance(b, dict):
                continue
            if b.get("type") == "tool_use":
                names[b.get("id", "")] = b.get("name", "")
            elif b.get("type") == "tool_result" and i >= start:
                out.append(
                    {
                        "tool_use_id": b.get("tool_use_id"),
                        "name": names.get(b.get("tool_use_id", ""), ""),
                        "content": _content_text(b.get("content")),
                        "is_error": bool(b.get("is_error")),
                    }
                )
    return out


def tool_result_texts(req: dict) -> list[str]:
    return [r["content"] for r in tool_results(req)]


def system_text(req: dict) -> str:
    s = req.get("system")
    if isinstance(s, str):
        return s
    return "\n".join(b.get("text", "") for b in (s or []) if isinstance(b, dict))


def tool_names(req: dict) -> list[str]:
    return [t.get("name", "") for t in req.get("tools") or []]


def is_side_request(req: dict) -> bool:
    """Not part of an agent conversation (title generation, quota probe, summaries...)."""
    return not req.get("tools")


def is_subagent(req: dict) -> bool:
    """True for a subagent's conversation, False for the main agent's.

    Observed on 2.1.328: a subagent's system prompt starts with the billing header
    ``x-anthropic-billing-header: cc_version=...; cc_entrypoint=sdk-cli; cc_is_subagent=true;``.
    (Tool lists are NOT a reliable signal: a general-purpose subagent is offered ``Agent`` too.)
    """
    return "cc_is_subagent=true" in system_text(req)


def request_text(req: dict) -> str:
    """Everything searchable in one request: system prompt, all messages, tool descriptions."""
    parts = [system_text(req)]
    parts += [message_text(m) for m in req.get("messages", [])]
    return "\n".join(p for p in parts if p)


# --------------------------------------------------------------------------- server


def _default_side_responder(req: dict) -> list[Block]:
    # Title / summary generators want a short JSON-ish or plain answer; plain text is accepted.
    return [text("Scripted session")]


def _default_responder(req: dict) -> list[Block]:
    return [text("OK")]


class MessagesAPIServer:
    """Scripted Messages API on 127.0.0.1:<ephemeral>. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        side_responder: Responder | None = None,
        route_side_requests: bool = True,
        model: str = "claude-sonnet-4-5",
        input_tokens: int = 100,
    ) -> None:
        self.responder = responder or _default_responder
        self.side_responder = side_responder or _default_side_responder
        self.route_side_requests = route_side_requests
        self.model = model
        self.input_tokens = input_tokens
        self.requests: list[dict] = []  # {"method", "path", "headers", "body"} for every request
        self.errors: list[str] = []  # exceptions raised by a responder
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle
    def start(self) -> "MessagesAPIServer":
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "MessagesAPIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- recorded traffic
    def message_requests(self, *, include_side: bool = False) -> list[dict]:
        """Bodies of POST /v1/messages requests, in arrival order."""
        with self._lock:
            bodies = [
                r["body"]
                for r in self.requests
                if r["method"] == "POST"
                and r["path"].split("?")[0] == "/v1/messages"
                and isinstance(r["body"], dict)
            ]
        return [b for b in bodies if include_side or not is_side_request(b)]

    def main_requests(self) -> list[dict]:
        return [b for b in self.message_requests() if not is_subagent(b)]

    def subagent_requests(self) -> list[dict]:
        return [b for b in self.message_requests() if is_subagent(b)]

    def all_request_texts(self) -> str:
        """Concatenated text of every recorded message request (system + messages)."""
        return "\n".join(request_text(b) for b in self.message_requests(include_side=True))

    def saw(self, needle: str) -> bool:
        return needle in self.all_request_texts()

    # ---- response building
    def _next_tool_id(self) -> str:
        return f"toolu_{next(self._ids):04d}{uuid.uuid4().hex[:16]}"

    def _blocks_for(self, body: dict) -> list[Block]:
        side = self.route_side_requests and is_side_request(body)
        fn = self.side_responder if side else self.responder
        try:
            out = fn(body)
        except Exception as e:  # surface in tests, answer something harmless
            import traceback

            with self._lock:
                self.errors.append(traceback.format_exc())
            out = [text(f"[scripted responder error: {e!r}]")]
        if out is None:
            out = []
        if isinstance(out, (str, dict)):
            out = [out]
        blocks: list[Block] = []
        for b in out:
            if isinstance(b, str):
                b = text(b)
            b = dict(b)
            if b.get("type") == "tool_use":
                b.setdefault("id", self._next_tool_id())
                b.setdefault("input", {})
            blocks.append(b)
        if not blocks:
            blocks = [text("")]
        return blocks

    def build_message(self, body: dict) -> tuple[dict, list[Block]]:
        blocks = self._blocks_for(body)
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        msg = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model") or self.model,
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_tokens,
                "output_tokens": 10,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        return msg, blocks


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    owner: MessagesAPIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _read_body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _record(self, body: Any) -> None:
        with self.owner._lock:
            self.owner.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }
            )

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:20]}")
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self) -> None:
        self._json(
            404,
            {"type": "error", "error": {"type": "not_found_error", "message": f"{self.command} {self.path}"}},
        )

    def do_GET(self) -> None:  # noqa: N802
        self._record(None)
        self._not_found()

    def do_HEAD(self) -> None:  # noqa: N802
        # Without CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC the CLI probes `HEAD /api/hello`.
        self._record(None)
        self.send_response(200 if self.path.split("?")[0] == "/api/hello" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        body = self._read_body()
        self._record(body)
        path = self.path.split("?")[0]
        if path == "/v1/messages/count_tokens":
            self._json(200, {"input_tokens": self.owner.input_tokens})
            return
        if path != "/v1/messages" or not isinstance(body, dict):
            self._not_found()
            return
        msg, blocks = self.owner.build_message(body)
        if not body.get("stream"):
            self._json(200, msg)
            return
        self._stream(msg, blocks)

    def _stream(self, msg: dict, blocks: list[Block]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:20]}")
        self.end_headers()
        self.close_connection = True
        start = dict(msg, content=[], stop_reason=None)
        start["usage"] = dict(msg["usage"], output_tokens=1)
        out = [_sse("message_start", {"type": "message_start", "message": start})]
        for i, b in enumerate(blocks):
            if b["type"] == "tool_use":
                head = {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(b.get("input", {}))}
            elif b["type"] == "text":
                head = {"type": "text", "text": ""}
                delta = {"type": "text_delta", "text": b.get("text", "")}
            else:  # pass anything else (e.g. thinking) through whole
                head, delta = b, None
            out.append(_sse("content_block_start", {"type": "content_block_start", "index": i, "content_block": head}))
            if delta is not None:
                out.append(_sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}))
            out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": i}))
        out.append(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": msg["usage"]["output_tokens"]},
                },
            )
        )
        out.append(_sse("message_stop", {"type": "message_stop"}))
        try:
            self.wfile.write(b"".join(out))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
