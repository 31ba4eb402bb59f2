"""A scripted "model" for the loopback Ollama server that trades a lot, and its faults.

The fault harness needs orders at a high rate so that kills land inside submissions. The
rules analyst is too careful for that; this responder reads the table in Perun's prompt
(``sym|price|...|maxbuy|sell|note``) and answers like a restless model: buys where
``maxbuy > 0``, sells where ``sell = y``, with confidences on both sides of the
auto-approval threshold so that some signals submit at once and others wait as pending.
It stays within what the prompt allows, so the replies validate — unless a fault is
scripted on purpose (:func:`ollama_fault`).
"""

from __future__ import annotations

import json
import random
import threading
from typing import Any

from tests.fakes.ollama_server import (
    Disconnect,
    Hang,
    HttpError,
    Outcome,
    Reply,
    StreamError,
)

#: kinds of Ollama fault the soak injects (what a user sees: an analysis error, then rules)
OLLAMA_FAULTS: tuple[str, ...] = (
    "http_500",
    "stream_error",
    "disconnect",
    "garbage",
    "out_of_schema",
    "truncated",
    "hang",
)


def _user_text(request: dict[str, Any]) -> str:
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def read_table(prompt: str) -> list[dict[str, str]]:
    """The per-symbol rows of Perun's prompt table, as dicts keyed by the header."""
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for line in prompt.splitlines():
        cells = line.split("|")
        if cells and cells[0] == "sym" and "maxbuy" in cells:
            header = cells
            continue
        if header is not None:
            if len(cells) != len(header):
                if rows:
                    break
                continue
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


class Trader:
    """The responder: ``Trader(seed)`` is callable as a FakeOllama ``default_reply``."""

    def __init__(self, seed: int = 0, *, trade_prob: float = 0.6) -> None:
        self.rng = random.Random(seed)
        self.trade_prob = trade_prob
        self.lock = threading.Lock()
        self.replies = 0

    def document(self, prompt: str) -> dict[str, Any]:
        signals: list[dict[str, Any]] = []
        with self.lock:
            self.replies += 1
            for row in read_table(prompt):
                sym = row.get("sym", "")
                try:
                    maxbuy = float(row.get("maxbuy") or 0)
                except ValueError:
                    maxbuy = 0.0
                can_sell = row.get("sell") == "y"
                if self.rng.random() > self.trade_prob:
                    continue
                action = None
                if can_sell and (maxbuy <= 0 or self.rng.random() < 0.5):
                    action = "sell"
                elif maxbuy > 0:
                    action = "buy"
                if action is None:
                    continue
                signals.append(
                    {
                        "symbol": sym,
                        "action": action,
                        "confidence": round(self.rng.uniform(0.6, 0.97), 2),
                        "rationale": f"{sym}: scripted {action} for the fault harness",
                    }
                )
        return {"market_view": "restless scripted trader", "signals": signals}

    def __call__(self, request: dict[str, Any]) -> Outcome:
        doc = self.document(_user_text(request))
        return Reply(content=json.dumps(doc), thinking="Looking at the table.", chunk_chars=64)


def ollama_fault(kind: str) -> Outcome:
    """One scripted failure of the model server (see :data:`OLLAMA_FAULTS`)."""
    if kind == "http_500":
        return HttpError(500, "llama runner process has terminated: signal: killed")
    if kind == "stream_error":
        return StreamError(after_chunks=2)
    if kind == "disconnect":
        return Disconnect(after_chunks=1)
    if kind == "garbage":
        return Reply(content="Sure! Here are my thoughts: BUY EVERYTHING {not json")
    if kind == "out_of_schema":
        bad = {"market_view": 3, "signals": [{"symbol": "AAPL", "action": "long",
                                              "confidence": 80}]}
        return Reply(content=json.dumps(bad))
    if kind == "truncated":
        return Reply.truncated(json.dumps({"market_view": "cut", "signals": []}), keep=0.4)
    if kind == "hang":
        return Hang(after_chunks=1)
    raise ValueError(f"unknown Ollama fault {kind!r}")
