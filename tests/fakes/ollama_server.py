"""A loopback HTTP server that speaks Ollama's wire format, for offline tests.

The real ``ollama.AsyncClient(host=srv.url, timeout=...)`` talks to it exactly as it would
to an Ollama server (see ``WIRE.md``, section "Ollama")::

    with FakeOllama(models=["qwen3:8b"]) as srv:
        srv.script(Reply(content='{"market_view": "calm", "signals": []}', thinking="hmm"))
        srv.script(HttpError(500, "boom"), Hang())
        ...  # point the client at srv.url
        assert srv.chat_bodies[0]["format"] == schema

Chat requests are answered from a FIFO of scripted outcomes (:class:`Reply` or a fault:
:class:`HttpError`, :class:`StreamError`, :class:`Hang`, :class:`Disconnect`); when the
queue is empty, ``default_reply`` answers (a ``Reply``, or a callable that gets the request
JSON). A request for a missing model gets 404 before the queue is looked at, and does not
consume a scripted outcome.

Run it as a process for end-to-end demos::

    python -m tests.fakes.ollama_server --port 11499 --buy AAPL
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, NamedTuple, TypeAlias
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_MODEL",
    "Disconnect",
    "FakeOllama",
    "Fault",
    "Hang",
    "HttpError",
    "Outcome",
    "RecordedRequest",
    "Reply",
    "Responder",
    "StreamError",
    "buy_document",
    "hold_document",
    "main",
]

DEFAULT_MODEL = "qwen3:8b"
DEFAULT_CAPABILITIES: tuple[str, ...] = ("completion", "thinking", "tools")

_CHAT = "/api/chat"
_PULL = "/api/pull"
_MODEL_SIZE = 5_225_388_164
_PULL_TOTAL = 5_225_376_047


# ---------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Reply:
    """A successful chat answer.

    ``thinking`` is streamed first (only when the request did not send ``think: false``),
    then ``content``; each is split into deltas of ``chunk_chars`` characters, with
    ``chunk_delay`` seconds between streamed lines. Counts default to rough estimates
    (characters / 4). ``done_reason="length"`` marks a reply cut by ``num_predict``.
    """

    content: str = ""
    thinking: str = ""
    done_reason: str = "stop"
    chunk_chars: int = 12
    chunk_delay: float = 0.0
    prompt_eval_count: int | None = None
    eval_count: int | None = None

    @classmethod
    def truncated(cls, content: str, *, keep: float = 0.5, thinking: str = "") -> Reply:
        """The first ``keep`` fraction of ``content``, with ``done_reason="length"``."""
        return cls(
            content=content[: int(len(content) * keep)], thinking=thinking, done_reason="length"
        )


@dataclass(frozen=True)
class HttpError:
    """Answer with an HTTP error status and ``{"error": error}``, before any streaming."""

    status: int = 500
    error: str = "internal server error"


@dataclass(frozen=True)
class StreamError:
    """Stream ``after_chunks`` lines of ``reply`` (default: the default reply), then an
    ``{"error": ...}`` line, then end the stream. The client raises ``ResponseError`` with
    status -1. A non-streaming request gets HTTP 500 with the error instead."""

    error: str = "an error was encountered while running the model: unexpected EOF"
    after_chunks: int = 2
    reply: Reply | None = None


@dataclass(frozen=True)
class Hang:
    """Accept the request and never answer until the server stops (then drop the
    connection). With ``after_chunks > 0`` a streaming answer sends its headers and that
    many lines first, then stalls."""

    after_chunks: int = 0
    reply: Reply | None = None


@dataclass(frozen=True)
class Disconnect:
    """Close the connection after ``after_chunks`` streamed lines (0: before any response
    bytes). The client sees a raw ``httpx.RemoteProtocolError``."""

    after_chunks: int = 2
    reply: Reply | None = None


Fault: TypeAlias = HttpError | StreamError | Hang | Disconnect
Outcome: TypeAlias = Reply | Fault
Responder: TypeAlias = Callable[[dict[str, Any]], Outcome]
Scripted: TypeAlias = Outcome | Responder

_FAULT_TYPES = (HttpError, StreamError, Hang, Disconnect)


class RecordedRequest(NamedTuple):
    """One request as received: unpack as ``method, path, body``."""

    method: str
    path: str
    body: Any  # parsed JSON, or None when there was no body (or it was not JSON)


def hold_document(market_view: str = "Markets look range-bound; no trade is compelling.") -> str:
    """A valid analyst reply proposing nothing."""
    return json.dumps({"market_view": market_view, "signals": []})


def buy_document(symbol: str, confidence: float = 0.9) -> str:
    """A valid analyst reply with one buy signal for ``symbol``."""
    return json.dumps(
        {
            "market_view": f"Constructive tape; {symbol} shows relative strength.",
            "signals": [
                {
                    "symbol": symbol,
                    "action": "buy",
                    "confidence": confidence,
                    "rationale": f"{symbol} broke out above resistance on rising volume.",
                }
            ],
        }
    )


_DEFAULT_REPLY = Reply(
    content=hold_document(),
    thinking="The prices move sideways and nothing stands out, so I propose no trade.",
)


# ---------------------------------------------------------------------------- helpers


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _normalize(model: str) -> str:
    """``qwen3`` → ``qwen3:latest``, as Ollama resolves names."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


def _digest(model: str) -> str:
    return hashlib.sha256(_normalize(model).encode()).hexdigest()


def _family(model: str) -> str:
    return _normalize(model).rsplit("/", 1)[-1].split(":", 1)[0]


def _details(model: str) -> dict[str, Any]:
    tag = _normalize(model).rsplit(":", 1)[1]
    size = tag.upper() if tag[:1].isdigit() else "8.2B"
    family = _family(model)
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": size,
        "quantization_level": "Q4_K_M",
    }


def _pieces(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _message_chars(body: dict[str, Any]) -> int:
    total = 0
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            total += len(str(message.get("content") or ""))
    return total


# ---------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], fake: FakeOllama) -> None:
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients going away (timeouts, cancelled streams) are normal here.
        pass

    def drop_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def open_connections(self) -> int:
        with self.connections_lock:
            return len(self.connections)


class _Aborted(Exception):
    """The connection was dropped on purpose; stop handling this request."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOllama/1.0"
    disable_nagle_algorithm = True  # headers and body go out separately: avoid ~40 ms stalls

    # -- plumbing

    @property
    def fake(self) -> FakeOllama:
        server = self.server
        assert isinstance(server, _Server)
        return server.fake

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> tuple[Any, bool]:
        """Returns (parsed JSON or None, whether the body was valid)."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if not raw.strip():
            return None, True
        try:
            return json.loads(raw), True
        except ValueError:
            return None, False

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        body, valid = self._read_body()
        fake = self.fake
        fake._record(RecordedRequest(method, path, body))
        try:
            self._route(method, path, body, valid)
        except _Aborted:
            self.close_connection = True
        except OSError:  # the client went away
            self.close_connection = True

    def _route(self, method: str, path: str, body: Any, valid: bool) -> None:
        routes: dict[tuple[str, str], Callable[[dict[str, Any]], None]] = {
            ("POST", "/api/chat"): self._chat,
            ("POST", "/api/show"): self._show,
            ("POST", "/api/pull"): self._pull,
            ("DELETE", "/api/delete"): self._delete,
            ("GET", "/api/tags"): lambda _: self._json(200, self.fake._tags()),
            ("GET", "/api/ps"): lambda _: self._json(200, self.fake._ps()),
            ("GET", "/api/version"): lambda _: self._json(200, {"version": self.fake.version}),
        }
        if path == "/" and method in ("GET", "HEAD"):
            self._text(200, "Ollama is running", head_only=method == "HEAD")
            return
        handler = routes.get((method, path))
        if handler is None:
            known = any(p == path for _, p in routes)
            if known:
                self._text(405, "405 method not allowed")
            else:
                self._text(404, "404 page not found")
            return
        if not valid:
            self._json(400, {"error": "invalid character in request body"})
            return
        request = body if isinstance(body, dict) else {}
        if path not in (_CHAT, _PULL):
            fault = self.fake._pop_fault(path)
            if fault is not None:
                self._plain_fault(fault)
                return
        handler(request)

    # -- response primitives

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _text(self, status: int, text: str, *, head_only: bool = False) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head_only:
            self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _line(self, payload: dict[str, Any]) -> None:
        if "created_at" in payload:
            payload = {**payload, "created_at": _now()}  # stamped when sent
        data = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _abort(self) -> None:
        """Drop the connection without finishing the response."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        raise _Aborted

    def _hang(self) -> None:
        self.fake._stopping.wait()
        self._abort()

    def _plain_fault(self, fault: Fault) -> None:
        """A fault on a non-streaming answer."""
        if isinstance(fault, HttpError):
            self._json(fault.status, {"error": fault.error})
        elif isinstance(fault, StreamError):
            self._json(500, {"error": fault.error})
        elif isinstance(fault, Hang):
            self._hang()
        else:
            self._abort()

    def _stream(
        self,
        lines: Sequence[dict[str, Any]],
        fault: Fault | None,
        delay: float,
        *,
        before_last: Callable[[], None] | None = None,
    ) -> None:
        """Stream NDJSON ``lines``, applying a mid-stream ``fault`` at its position."""
        if isinstance(fault, HttpError):
            self._plain_fault(fault)
            return
        at = -1 if fault is None else max(0, fault.after_chunks)
        if at == 0 and isinstance(fault, Hang | Disconnect):
            self._plain_fault(fault)  # before any response bytes
            return
        self._start_stream()
        for index, line in enumerate(lines):
            if index == at:
                break
            if delay > 0 and index > 0 and self.fake._stopping.wait(delay):
                self._abort()
            if before_last is not None and index == len(lines) - 1:
                before_last()
            self._line(line)
        if fault is not None:
            if isinstance(fault, StreamError):
                self._line({"error": fault.error})
            elif isinstance(fault, Hang):
                self._hang()
            else:
                self._abort()
        self._end_stream()

    # -- endpoints

    def _chat(self, request: dict[str, Any]) -> None:
        fake = self.fake
        model = request.get("model")
        if not isinstance(model, str) or not model:
            self._json(400, {"error": "model is required"})
            return
        if not fake.has_model(model):
            self._json(404, {"error": f"model '{model}' not found"})
            return
        think = request.get("think")
        thinking_capable = "thinking" in fake.capabilities
        if think not in (None, False) and not thinking_capable:
            self._json(400, {"error": f'"{model}" does not support thinking'})
            return
        outcome = fake._next_chat(request)
        fault: Fault | None = None
        if isinstance(outcome, Reply):
            reply = outcome
        else:
            fault = outcome
            reply = getattr(fault, "reply", None) or fake._default_for(request)
        if not isinstance(fault, HttpError):
            fake._mark_loaded(model, request.get("keep_alive"))
        show_thinking = think is not False and thinking_capable
        if request.get("stream", True) is False:
            if fault is not None:
                self._plain_fault(fault)
            else:
                self._json(200, _chat_single(model, reply, request, show_thinking))
            return
        lines = _chat_lines(model, reply, request, show_thinking)
        self._stream(lines, fault, reply.chunk_delay)

    def _show(self, request: dict[str, Any]) -> None:
        model = request.get("model") or request.get("name")
        if not isinstance(model, str) or not model:
            self._json(400, {"error": "model is required"})
            return
        if not self.fake.has_model(model):
            self._json(404, {"error": f"model '{model}' not found"})
            return
        self._json(200, self.fake._show(model))

    def _delete(self, request: dict[str, Any]) -> None:
        model = request.get("model") or request.get("name")
        if not isinstance(model, str) or not self.fake.has_model(model):
            self._json(404, {"error": f"model '{model}' not found"})
            return
        self.fake._remove_model(model)
        self._json(200, {})

    def _pull(self, request: dict[str, Any]) -> None:
        fake = self.fake
        model = request.get("model") or request.get("name")
        if not isinstance(model, str) or not model:
            self._json(400, {"error": "model is required"})
            return
        fault = fake._pop_fault(_PULL)
        pullable = fake.pullable is None or _normalize(model) in {
            _normalize(m) for m in fake.pullable
        }
        if not pullable:
            fault = StreamError(error="pull model manifest: file does not exist", after_chunks=1)
        if request.get("stream", True) is False:
            if fault is not None:
                self._plain_fault(fault)
                return
            fake._add_model(model)
            self._json(200, {"status": "success"})
            return
        digest = "sha256:" + _digest(model)
        total = _PULL_TOTAL
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
            lines.append(
                {
                    "status": f"pulling {digest[7:19]}",
                    "digest": digest,
                    "total": total,
                    "completed": int(total * fraction),
                }
            )
        lines += [
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "success"},
        ]
        # The model is present before the client sees "success".
        self._stream(lines, fault, fake.pull_delay, before_last=lambda: fake._add_model(model))


def _counts(reply: Reply, request: dict[str, Any], show_thinking: bool) -> dict[str, Any]:
    prompt = reply.prompt_eval_count
    if prompt is None:
        prompt = max(1, _message_chars(request) // 4)
    produced = len(reply.content) + (len(reply.thinking) if show_thinking else 0)
    evaluated = reply.eval_count if reply.eval_count is not None else max(1, produced // 4)
    load = 48_000_000
    prompt_ns = prompt * 400_000
    eval_ns = evaluated * 22_000_000
    return {
        "done_reason": reply.done_reason,
        "total_duration": load + prompt_ns + eval_ns + 3_000_000,
        "load_duration": load,
        "prompt_eval_count": prompt,
        "prompt_eval_duration": prompt_ns,
        "eval_count": evaluated,
        "eval_duration": eval_ns,
    }


def _chat_single(
    model: str, reply: Reply, request: dict[str, Any], show_thinking: bool
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if show_thinking and reply.thinking:
        message["thinking"] = reply.thinking
    return {
        "model": model,
        "created_at": _now(),
        "message": message,
        "done": True,
        **_counts(reply, request, show_thinking),
    }


def _chat_lines(
    model: str, reply: Reply, request: dict[str, Any], show_thinking: bool
) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    if show_thinking:
        for piece in _pieces(reply.thinking, reply.chunk_chars):
            message = {"role": "assistant", "content": "", "thinking": piece}
            lines.append({"model": model, "created_at": _now(), "message": message, "done": False})
    for piece in _pieces(reply.content, reply.chunk_chars):
        message = {"role": "assistant", "content": piece}
        lines.append({"model": model, "created_at": _now(), "message": message, "done": False})
    lines.append(
        {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            **_counts(reply, request, show_thinking),
        }
    )
    return lines


# ---------------------------------------------------------------------------- public API


class FakeOllama:
    """An Ollama look-alike on 127.0.0.1, served from a background thread.

    Mutable settings (read on every request): ``models``, ``capabilities``,
    ``default_reply``, ``pullable`` (None: any name can be pulled), ``pull_delay``,
    ``version``, ``context_length``. ``requests`` records every request received.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Iterable[str] = (DEFAULT_MODEL,),
        capabilities: Iterable[str] = DEFAULT_CAPABILITIES,
        default_reply: Reply | Responder = _DEFAULT_REPLY,
        pullable: Iterable[str] | None = None,
        pull_delay: float = 0.0,
        version: str = "0.12.6",
        context_length: int = 40960,
    ) -> None:
        self.host = host
        self.port = port
        self.models: list[str] = list(models)
        self.capabilities: list[str] = list(capabilities)
        self.default_reply: Reply | Responder = default_reply
        self.pullable: list[str] | None = None if pullable is None else list(pullable)
        self.pull_delay = pull_delay
        self.version = version
        self.context_length = context_length
        self.requests: list[RecordedRequest] = []
        self._loaded: dict[str, datetime] = {}
        self._queues: dict[str, deque[Scripted]] = {}
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> FakeOllama:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-ollama-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Stop serving; hanging requests are released and their connections dropped."""
        server, thread = self._server, self._thread
        if server is None:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        server.shutdown()
        server.drop_connections()
        while server.open_connections() and time.monotonic() < deadline:
            time.sleep(0.01)
        server.server_close()
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeOllama is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    # -- scripting

    def script(self, *outcomes: Scripted, path: str = _CHAT) -> None:
        """Queue outcomes for the next requests to ``path`` (FIFO).

        For ``/api/chat``: a ``Reply``, a fault, or a callable ``(request) -> outcome``.
        For other endpoints (``/api/pull``, ``/api/show``, ``/api/tags``, ...): faults only.
        """
        if path != _CHAT:
            for outcome in outcomes:
                if not isinstance(outcome, _FAULT_TYPES):
                    raise TypeError(f"only faults can be scripted for {path}, got {outcome!r}")
        with self._lock:
            self._queues.setdefault(path, deque()).extend(outcomes)

    def pending(self, path: str = _CHAT) -> int:
        """How many scripted outcomes are still queued for ``path``."""
        with self._lock:
            return len(self._queues.get(path, ()))

    def clear_script(self) -> None:
        with self._lock:
            self._queues.clear()

    # -- inspection

    @property
    def chat_bodies(self) -> list[dict[str, Any]]:
        """JSON bodies of the ``/api/chat`` requests received, oldest first."""
        with self._lock:
            return [r.body for r in self.requests if r.path == _CHAT and isinstance(r.body, dict)]

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for_requests(
        self, count: int, *, path: str | None = None, timeout: float = 2.0
    ) -> bool:
        """Block until ``count`` requests (to ``path``, if given) were received."""

        def enough() -> bool:
            return sum(1 for r in self.requests if path is None or r.path == path) >= count

        with self._lock:
            return self._lock.wait_for(enough, timeout)

    @property
    def loaded(self) -> list[str]:
        """Models currently "in memory" (what ``/api/ps`` lists)."""
        with self._lock:
            return list(self._loaded)

    def has_model(self, model: str) -> bool:
        wanted = _normalize(model)
        return any(_normalize(m) == wanted for m in self.models)

    # -- used by the handler threads

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()

    def _resolve(self, item: Scripted, request: dict[str, Any]) -> Outcome:
        if isinstance(item, Reply | HttpError | StreamError | Hang | Disconnect):
            return item
        return item(request)

    def _next_chat(self, request: dict[str, Any]) -> Outcome:
        with self._lock:
            queue = self._queues.get(_CHAT)
            item: Scripted = queue.popleft() if queue else self.default_reply
        return self._resolve(item, request)

    def _default_for(self, request: dict[str, Any]) -> Reply:
        outcome = self._resolve(self.default_reply, request)
        return outcome if isinstance(outcome, Reply) else Reply()

    def _pop_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self._queues.get(path)
            item = queue.popleft() if queue else None
        return item if isinstance(item, _FAULT_TYPES) else None

    def _mark_loaded(self, model: str, keep_alive: Any) -> None:
        with self._lock:
            if keep_alive in (0, "0", "0s", "0m"):
                self._loaded.pop(_normalize(model), None)
            else:
                self._loaded[_normalize(model)] = datetime.now(UTC) + timedelta(minutes=5)

    def _add_model(self, model: str) -> None:
        if not self.has_model(model):
            self.models.append(model)

    def _remove_model(self, model: str) -> None:
        wanted = _normalize(model)
        self.models[:] = [m for m in self.models if _normalize(m) != wanted]
        with self._lock:
            self._loaded.pop(wanted, None)

    def _tags(self) -> dict[str, Any]:
        modified = (datetime.now(UTC) - timedelta(days=3)).isoformat()
        return {
            "models": [
                {
                    "name": m,
                    "model": m,
                    "modified_at": modified,
                    "size": _MODEL_SIZE,
                    "digest": _digest(m),
                    "details": _details(m),
                }
                for m in self.models
            ]
        }

    def _ps(self) -> dict[str, Any]:
        with self._lock:
            loaded = dict(self._loaded)
        return {
            "models": [
                {
                    "name": m,
                    "model": m,
                    "size": _MODEL_SIZE + 1_000_000_000,
                    "digest": _digest(m),
                    "details": _details(m),
                    "expires_at": expires.isoformat(),
                    "size_vram": _MODEL_SIZE + 1_000_000_000,
                    "context_length": 4096,
                }
                for m, expires in loaded.items()
            ]
        }

    def _show(self, model: str) -> dict[str, Any]:
        family = _family(model)
        return {
            "license": "Apache License 2.0",
            "modelfile": f"# Modelfile generated by FakeOllama\nFROM {model}\n",
            "parameters": "temperature 0.6\ntop_k 20\ntop_p 0.95",
            "template": "{{ .Prompt }}",
            "details": _details(model),
            "model_info": {
                "general.architecture": family,
                "general.parameter_count": 8_190_735_360,
                f"{family}.context_length": self.context_length,
                f"{family}.embedding_length": 4096,
            },
            "capabilities": list(self.capabilities),
            "modified_at": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
        }


# ---------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.ollama_server",
        description="Serve a fake Ollama on 127.0.0.1 until killed.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434, help="0 picks a free port")
    parser.add_argument("--buy", metavar="SYM", help="answer every chat with a buy for SYM")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help=f"a model to serve (repeatable; default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds between streamed lines (default 0)"
    )
    args = parser.parse_args(argv)

    content = buy_document(args.buy) if args.buy else hold_document()
    thinking = (
        f"{args.buy} shows relative strength; I will propose a buy."
        if args.buy
        else "Nothing stands out; I will propose no trade."
    )
    srv = FakeOllama(
        host=args.host,
        port=args.port,
        models=args.models or [DEFAULT_MODEL],
        default_reply=Reply(content=content, thinking=thinking, chunk_delay=args.delay),
    )
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    srv.start()
    print(f"listening on {srv.url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
