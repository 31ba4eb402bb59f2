"""A loopback Alpaca-compatible server (REST + ``trade_updates`` websocket) for offline tests.

The real alpaca-py clients talk to it exactly as they would to Alpaca (see ``WIRE.md``,
section "Alpaca")::

    with FakeAlpaca() as srv:                      # key_id="PKTEST", secret="s3cret"
        srv.set_price("AAPL", 231.4)
        tc = TradingClient("PKTEST", "s3cret", paper=True, url_override=srv.trading_url)
        dc = StockHistoricalDataClient("PKTEST", "s3cret", url_override=srv.data_url)
        ts = TradingStream("PKTEST", "s3cret", paper=True, url_override=srv.stream_url)
        srv.faults.submit = ["504_after_create"]   # next POST /v2/orders creates, then 504s
        srv.faults.add("/v2/account", "429", count=3)
        ...
        assert len(srv.orders_by_client_id()["my-id"]) == 1

One HTTP port serves both the trading API and the market-data API (their paths do not
overlap); the websocket has its own port. All state lives behind one lock; HTTP requests
are served on one thread per connection, the websocket on its own asyncio loop.

Order lifecycle: a valid POST creates the order (reply status ``accepted``), moves it to
``new`` (event ``new``) and then fills according to ``fill_delay``:

* ``0`` (default): synchronously, *before* the POST reply is written — so the stream's
  ``fill`` event can reach a client before the submit call returns (as it can for real);
* ``> 0``: on a timer, one fill step per delay;
* ``None``: only when a test calls :meth:`FakeAlpaca.fill_pending`.

Market orders fill at the ask (buy) / bid (sell) around the set price; limit orders only
when marketable (re-checked on every :meth:`set_price`). Nothing fills while
``srv.is_open`` is false. With ``partial_fills`` an order fills in two steps
(``partial_fill`` then ``fill``).

Market hours: ``FakeAlpaca(is_open=True)`` (the default, what most tests want) keeps the
market open at any hour; ``False`` keeps it closed; ``None`` follows the fake's calendar
(NYSE 2026 holidays and early closes, weekends), so the clock, ``is_open`` and fills agree
with ``GET /v2/calendar``.

Price history: each symbol has a stored, seeded random walk at one-minute steps with
regimes (trends, ranges, volatile spells) ending at the price it was created with
(``seed``; the same seed gives the same history, and it is never re-anchored to later
prices). The newest regime is a trend, so the rules analyst has something to act on from
the first cycle. Bars after that are cut from the prices set since.

Run it as a process for end-to-end demos (the market follows the calendar unless
``--always-open``)::

    python -m tests.fakes.alpaca_server --port 18080 --stream-port 18081 --symbols AAPL,MSFT
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import fnmatch
import json
import math
import random
import signal
import socket
import sys
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

__all__ = [
    "DEFAULT_PRICES",
    "GET_FAULT_KINDS",
    "SUBMIT_FAULT_KINDS",
    "FakeAlpaca",
    "Faults",
    "PathFault",
    "RequestRecord",
    "main",
]

NY = ZoneInfo("America/New_York")

DEFAULT_PRICES: dict[str, float] = {
    "AAPL": 231.40,
    "MSFT": 415.20,
    "NVDA": 124.80,
    "SPY": 561.30,
    "QQQ": 482.10,
    "AMZN": 186.50,
    "GOOGL": 168.30,
    "META": 512.70,
    "TSLA": 248.90,
    "AMD": 158.40,
}

_EXCHANGES: dict[str, str] = {"SPY": "ARCA", "QQQ": "NASDAQ", "IWM": "ARCA", "DIA": "ARCA"}

# NYSE 2026 (checked against pandas-market-calendars): full holidays and 13:00 early closes.
_DEFAULT_CALENDAR_OVERRIDES: dict[date, tuple[str, str] | None] = {
    date(2026, 1, 1): None,
    date(2026, 1, 19): None,
    date(2026, 2, 16): None,
    date(2026, 4, 3): None,
    date(2026, 5, 25): None,
    date(2026, 6, 19): None,
    date(2026, 7, 3): None,
    date(2026, 9, 7): None,
    date(2026, 11, 26): None,
    date(2026, 11, 27): ("09:30", "13:00"),
    date(2026, 12, 24): ("09:30", "13:00"),
    date(2026, 12, 25): None,
}

TERMINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})

#: kinds accepted in ``srv.faults.submit`` (consumed one per ``POST /v2/orders``)
SUBMIT_FAULT_KINDS = frozenset(
    {
        "ok",  # no fault: lets a later list entry hit a later attempt
        "504_after_create",  # create (and maybe fill) the order, then 504 (HTML body)
        "500_after_create",  # create, then 500 JSON
        "drop_after_create",  # create, then close the socket without a response
        "hang_after_create",  # create, then never answer until stop()
        "drop_before_create",  # close the socket without creating anything
        "reject",  # create, then reject it asynchronously (event "rejected")
        "429",
        "403",
        "500",
        "502",
        "503",
        "504",
        "hang",
        "drop",
        "garbage",
    }
)
#: kinds accepted by ``srv.faults.add(path, kind)`` (plus ``"slow:SECONDS"``)
GET_FAULT_KINDS = frozenset(
    {"429", "401", "403", "404", "422", "500", "502", "503", "504", "hang", "drop", "garbage"}
)

_HTML_BODIES = {
    502: "<html><head><title>502 Bad Gateway</title></head><body>"
    "<center><h1>502 Bad Gateway</h1></center></body></html>",
    503: "<html><head><title>503 Service Temporarily Unavailable</title></head><body>"
    "<center><h1>503 Service Temporarily Unavailable</h1></center></body></html>",
    504: "<html><head><title>504 Gateway Time-out</title></head><body>"
    "<center><h1>504 Gateway Time-out</h1></center></body></html>",
}
_JSON_ERRORS: dict[int, tuple[int, str]] = {
    401: (40110000, "request is not authorized"),
    403: (40310000, "insufficient buying power"),
    404: (40410000, "resource not found"),
    422: (40010001, "invalid request"),
    429: (42910000, "rate limit exceeded"),
    500: (50010000, "internal server error"),
}


# --------------------------------------------------------------------------- records


@dataclass
class RequestRecord:
    """One HTTP request as the fake saw it (appended before it is answered)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    time: float
    status: int | None = None  # None while pending, or when the connection was dropped
    fault: str | None = None
    reply_headers: dict[str, str] = field(default_factory=dict)  # beyond the usual ones


@dataclass
class PathFault:
    """A fault for requests whose path matches ``path`` (an fnmatch pattern)."""

    path: str
    kind: str
    method: str = "GET"  # "*" for any method
    remaining: int | None = 1  # None = until removed

    def matches(self, method: str, path: str) -> bool:
        if self.method != "*" and self.method.upper() != method:
            return False
        return fnmatch.fnmatchcase(path, self.path)


def _check_kind(kind: str, allowed: frozenset[str]) -> None:
    if kind.startswith("slow:"):
        float(kind[5:])
        return
    if kind not in allowed:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(allowed)}")


@dataclass
class Faults:
    """Fault injection, settable from tests at any time.

    ``submit`` is consumed one entry per ``POST /v2/orders`` (see SUBMIT_FAULT_KINDS).
    ``paths`` are matched (first match wins) against every other request — and against a
    submit when the submit list is empty.
    """

    submit: list[str] = field(default_factory=list)
    paths: list[PathFault] = field(default_factory=list)

    def add(self, path: str, kind: str, *, count: int | None = 1, method: str = "GET") -> PathFault:
        """Inject ``kind`` for the next ``count`` requests matching ``method path``.

        ``path`` is an fnmatch pattern (``"/v2/stocks/*"``); ``count=None`` means forever.
        Kinds: 429, 401, 403, 404, 422, 500 (JSON bodies), 502/503/504 (nginx-style HTML
        bodies, so ``APIError.code`` raises), ``hang`` (no answer until stop), ``drop``
        (close without a response), ``garbage`` (200 with a non-JSON body),
        ``slow:SECONDS`` (delay, then answer normally).
        """
        _check_kind(kind, GET_FAULT_KINDS)
        fault = PathFault(path=path, kind=kind, method=method, remaining=count)
        self.paths.append(fault)
        return fault

    def clear(self) -> None:
        self.submit.clear()
        self.paths.clear()


# --------------------------------------------------------------------------- helpers


class _HttpError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json_reply(status: int, payload: Any) -> _Reply:
    return _Reply(status, json.dumps(payload).encode())


def _error_reply(status: int, code: int, message: str) -> _Reply:
    return _json_reply(status, {"code": code, "message": message})


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _iso_s(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _num(x: float, places: int = 9) -> str:
    s = f"{x:.{places}f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _parse_number(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _HttpError(422, 40010001, f"invalid {name}") from None
    if not math.isfinite(number):
        raise _HttpError(422, 40010001, f"invalid {name}")
    return number


def _parse_time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace(" ", "+"))
    except ValueError:
        raise _HttpError(422, 42210000, f"invalid {name}: {value}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def _parse_hhmm(day: date, hhmm: str) -> datetime:
    hh, mm = hhmm.split(":")
    return datetime(day.year, day.month, day.day, int(hh), int(mm), tzinfo=NY)


def _noise(*parts: object) -> float:
    """Deterministic noise in [-0.5, 0.5) from the given parts."""
    return (zlib.crc32(":".join(map(str, parts)).encode()) % 100_003) / 100_003 - 0.5


@dataclass
class _Order:
    id: str
    client_order_id: str
    symbol: str
    asset_id: str
    side: str
    type: str
    time_in_force: str
    qty: float | None
    notional: float | None
    limit_price: float | None
    extended_hours: bool
    position_intent: str
    created_at: datetime
    status: str = "accepted"
    updated_at: datetime | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None
    total_qty: float | None = None  # resolved qty (notional orders: at first fill)
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    timer_pending: bool = False
    reply_snapshot: dict[str, Any] = field(default_factory=dict)  # the POST reply body

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL_STATUSES


@dataclass
class _Position:
    symbol: str
    asset_id: str
    qty: float  # signed: negative = short
    avg_entry_price: float


class _StreamConn:
    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.authed = False
        self.listening = False


# --------------------------------------------------------------------------- price history


SessionHours = Callable[[date], "tuple[datetime, datetime] | None"]


@dataclass(frozen=True)
class _Day:
    """One generated session: minute ``i`` runs [opens + 60 i, opens + 60 (i + 1))."""

    opens: float  # epoch seconds
    open_price: float
    closes: np.ndarray  # the close of every minute


@dataclass(frozen=True)
class _Regime:
    name: str
    drift: float  # log-return per minute
    vol: float  # standard deviation of the log-return per minute


class _PricePath:
    """One symbol's price history, stored: what every bars request is cut from.

    Up to ``t0`` (when the symbol was created at ``anchor``) it is a seeded random walk
    at one-minute steps over the regular sessions, in regimes — trends up or down, quiet
    ranges, volatile spells — with overnight gaps. It is generated backward from the
    anchor, one session at a time as older bars are asked for, and kept: the same seed
    gives the same history, and a price set later never re-anchors the past. After
    ``t0`` the path is the tape of prices set since (``FakeAlpaca.set_price``).

    The newest regime is always a trend of at least one and a half sessions, so indicators
    over the last day of bars (a 5- against a 20-bar average of 15-minute bars) show a
    clear direction from the first cycle; which direction is up to the seed.
    """

    MAX_SESSIONS = 5000  # generated backward at most (about 20 years)

    def __init__(
        self, symbol: str, anchor: float, t0: datetime, seed: int, sessions: SessionHours
    ) -> None:
        self.symbol = symbol
        self.t0 = t0
        self.anchor = anchor
        self._sessions = sessions
        self._rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(symbol.encode())])
        self._t0 = t0.timestamp()
        self._days: dict[date, _Day] = {}
        self._oldest: date | None = None  # oldest generated session
        self._oldest_open = anchor  # the price at that session's open
        self._regime: _Regime | None = None
        self._regime_left = 0  # minutes
        self._tape_t: list[float] = []  # prices set after t0: epoch seconds, sorted
        self._tape_p: list[float] = []
        self._first_regime = True

    # -- regimes -------------------------------------------------------------------------

    def _next_regime(self) -> None:
        rng = self._rng
        session = 390.0
        if self._first_regime:
            self._first_regime = False
            up = rng.random() < 0.65
            move = rng.uniform(0.03, 0.045) * (1 if up else -1)  # per session
            self._regime = _Regime("up" if up else "down", move / session, 0.0007)
            self._regime_left = int(rng.uniform(1.5, 3.0) * session)
            return
        kind = rng.choice(["up", "down", "range", "volatile"], p=[0.3, 0.3, 0.25, 0.15])
        if kind in ("up", "down"):
            move = rng.uniform(0.01, 0.035) * (1 if kind == "up" else -1)
            regime = _Regime(str(kind), move / session, 0.0006)
        elif kind == "range":
            regime = _Regime("range", 0.0, 0.0004)
        else:
            regime = _Regime("volatile", 0.0, 0.0012)
        self._regime = regime
        self._regime_left = int(rng.uniform(0.6, 2.5) * session)

    def _returns(self, n: int) -> np.ndarray:
        """Log-returns of ``n`` minutes, newest last, continuing the walk backward."""
        drift = np.empty(n)
        vol = np.empty(n)
        end = n
        while end > 0:
            if self._regime is None or self._regime_left <= 0:
                self._next_regime()
            assert self._regime is not None
            take = min(end, self._regime_left)
            drift[end - take : end] = self._regime.drift
            vol[end - take : end] = self._regime.vol
            self._regime_left -= take
            end -= take
        return drift + vol * self._rng.standard_normal(n)

    # -- generation ----------------------------------------------------------------------

    def _previous_session(self, before: date) -> tuple[date, datetime, datetime] | None:
        day = before
        for _ in range(30):
            day -= timedelta(days=1)
            hours = self._sessions(day)
            if hours is not None:
                return day, hours[0], hours[1]
        return None

    def _generate_one(self) -> bool:
        """Generate the session before the oldest one; False when there is none."""
        if self._oldest is None:
            start = self.t0.astimezone(NY).date() + timedelta(days=1)
            found = self._previous_session(start)
            while found is not None and found[1] > self.t0:  # t0 before that day's open
                found = self._previous_session(found[0])
            if found is None:
                return False
            day, opens, closes = found
            end_at = min(closes, self.t0)
            minutes = max(1, math.ceil((end_at - opens).total_seconds() / 60))
            end_price = self.anchor
        else:
            found = self._previous_session(self._oldest)
            if found is None:
                return False
            day, opens, closes = found
            minutes = max(1, round((closes - opens).total_seconds() / 60))
            gap = float(self._rng.normal(0.0, 0.004))  # overnight
            end_price = self._oldest_open / math.exp(gap)
        returns = self._returns(minutes)
        back = np.concatenate(([0.0], np.cumsum(returns[::-1])))  # log(end / price) newest→
        closes_log = math.log(end_price) - back[:-1][::-1]
        open_price = end_price / math.exp(float(back[-1]))
        self._days[day] = _Day(opens.timestamp(), open_price, np.exp(closes_log))
        self._oldest = day
        self._oldest_open = open_price
        return True

    def _ensure(self, day: date) -> None:
        """Generate sessions back to ``day`` (inclusive) if not done yet."""
        while (self._oldest is None or self._oldest > day) and len(self._days) < self.MAX_SESSIONS:
            if not self._generate_one():
                return

    def record(self, at: datetime, price: float) -> None:
        """A price set at ``at`` (ignored at or before t0: the past is generated)."""
        if at <= self.t0:
            return
        ts = at.timestamp()
        i = bisect.bisect_right(self._tape_t, ts)
        self._tape_t.insert(i, ts)
        self._tape_p.insert(i, price)

    # -- reading -------------------------------------------------------------------------

    def price_before(self, t: datetime) -> float | None:
        """The last price strictly before ``t`` (None before the path's start)."""
        ts = t.timestamp()
        if ts > self._t0:
            i = bisect.bisect_left(self._tape_t, ts)
            return self._tape_p[i - 1] if i else self.anchor
        day = t.astimezone(NY).date()
        self._ensure(day)
        for _ in range(30):
            d = self._days.get(day)
            if d is not None and d.opens < ts:
                i = int((ts - d.opens) // 60)  # minutes completed
                return d.open_price if i <= 0 else float(d.closes[min(i, len(d.closes)) - 1])
            if self._oldest is None or day < self._oldest:
                return None
            day -= timedelta(days=1)
        return None

    def span(self, start: datetime, end: datetime) -> tuple[float, float, float, float] | None:
        """(first, high, low, last) of the prices in ``[start, end)`` — minute closes
        before t0, prices set after — or None when there are none."""
        first = last = high = low = math.nan

        def take(f: float, h: float, lo: float, la: float) -> None:
            nonlocal first, last, high, low
            if math.isnan(first):
                first = f
            last = la
            high = h if math.isnan(high) else max(high, h)
            low = lo if math.isnan(low) else min(low, lo)

        s_ts, e_ts = start.timestamp(), end.timestamp()
        if s_ts <= self._t0:
            day = start.astimezone(NY).date()
            self._ensure(day)
            stop = min(end, self.t0 + timedelta(minutes=1)).astimezone(NY).date()
            while day <= stop:
                d = self._days.get(day)
                if d is not None:
                    lo = max(0, math.ceil((s_ts - d.opens) / 60))
                    hi = min(len(d.closes), math.ceil((e_ts - d.opens) / 60))
                    if hi > lo:
                        part = d.closes[lo:hi]
                        take(float(part[0]), float(part.max()), float(part.min()), float(part[-1]))
                day += timedelta(days=1)
        lo = bisect.bisect_left(self._tape_t, s_ts)
        hi = bisect.bisect_left(self._tape_t, e_ts)
        if hi > lo:
            tape = self._tape_p[lo:hi]
            take(tape[0], max(tape), min(tape), tape[-1])
        if math.isnan(first):
            return None
        return first, high, low, last


# --------------------------------------------------------------------------- HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeAlpaca) -> None:
        self.fake = fake
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) or self.fake.stopping:
            return
        super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.fake._serve(self, "GET")

    def do_POST(self) -> None:
        self.server.fake._serve(self, "POST")

    def do_DELETE(self) -> None:
        self.server.fake._serve(self, "DELETE")

    def do_PATCH(self) -> None:
        self.server.fake._serve(self, "PATCH")

    def do_PUT(self) -> None:
        self.server.fake._serve(self, "PUT")

    def send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        for key, value in reply.headers.items():
            self.send_header(key, value)
        if reply.status == 204:
            self.end_headers()
        else:
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        self.wfile.flush()

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------- the fake


class FakeAlpaca:
    """Alpaca trading + market-data REST API and ``trade_updates`` stream on 127.0.0.1.

    Public state (read/write from tests; guarded by ``srv.lock`` when you need atomicity):
    ``cash``, ``is_open``, ``fill_delay``, ``partial_fills``, ``spread_bps``,
    ``bars_page_size``, ``rate_limit_per_min``, ``shorting_enabled``, ``frozen_now``,
    ``calendar_overrides``, ``account_overrides``, ``stream_binary``,
    ``stream_reject_auth``; counters ``request_log``, ``submit_attempts``, ``events``,
    ``stream_connects``.
    """

    def __init__(
        self,
        key_id: str = "PKTEST",
        secret: str = "s3cret",
        *,
        port: int = 0,
        stream_port: int = 0,
        cash: float = 100_000.0,
        prices: dict[str, float] | None = None,
        fill_delay: float | None = 0.0,
        partial_fills: bool = False,
        spread_bps: float = 2.0,
        bars_page_size: int = 10_000,
        rate_limit_per_min: int | None = None,
        shorting_enabled: bool = False,
        is_open: bool | None = True,
        stream_binary: bool = True,
        seed: int = 7,
    ) -> None:
        self.key_id = key_id
        self.secret = secret
        self.lock = threading.RLock()
        self._port = port
        self._stream_port = stream_port

        # account / market state
        self.account_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fakealpaca:account:{key_id}"))
        self.account_number = "PA1"
        self.cash = float(cash)
        self.last_equity = float(cash)
        self.account_created_at = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
        self.account_overrides: dict[str, Any] = {}
        self.shorting_enabled = shorting_enabled
        self.spread_bps = spread_bps
        self._is_open = is_open  # None: open when the calendar has a session now
        self._was_open = False
        self.seed = seed
        self.frozen_now: datetime | None = None
        self.calendar_overrides: dict[date, tuple[str, str] | None] = dict(
            _DEFAULT_CALENDAR_OVERRIDES
        )
        self._prices: dict[str, float] = {}
        self._prev_close: dict[str, float] = {}
        self._explicit_bars: dict[str, list[dict[str, Any]]] = {}
        self._paths: dict[str, _PricePath] = {}
        self._positions: dict[str, _Position] = {}
        self._orders: dict[str, _Order] = {}
        self._by_client_id: dict[str, str] = {}

        # behaviour knobs
        self.fill_delay = fill_delay
        self.partial_fills = partial_fills
        self.bars_page_size = bars_page_size
        self.rate_limit_per_min = rate_limit_per_min
        self.stream_binary = stream_binary
        self.stream_reject_auth = False
        self.faults = Faults()

        # counters
        self.request_log: list[RequestRecord] = []
        self.submit_attempts: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []
        self.stream_connects = 0
        self._rate_window: deque[float] = deque()

        # runtime
        self._stopping = threading.Event()
        self._timers: set[threading.Timer] = set()
        self._httpd: _HTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._ws_loop: asyncio.AbstractEventLoop | None = None
        self._ws_thread: threading.Thread | None = None
        self._ws_server: Server | None = None
        self._ws_stop: asyncio.Future[None] | None = None
        self._stream_conns: set[_StreamConn] = set()
        self._conns_lock = threading.Lock()
        self._started = False

        for symbol, price in (prices or {}).items():
            self.set_price(symbol, price)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeAlpaca:
        if self._started:
            return self
        self._started = True
        self._httpd = _HTTPServer(("127.0.0.1", self._port), self)
        self._port = self._httpd.server_address[1]
        self._http_thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-alpaca-http",
            daemon=True,
        )
        self._http_thread.start()

        ready = threading.Event()
        errors: list[BaseException] = []
        self._ws_loop = asyncio.new_event_loop()
        self._ws_thread = threading.Thread(
            target=self._ws_thread_main, args=(ready, errors), name="fake-alpaca-ws", daemon=True
        )
        self._ws_thread.start()
        if not ready.wait(5) or errors:
            self.stop()
            raise RuntimeError(f"FakeAlpaca websocket server failed to start: {errors}")
        return self

    def stop(self) -> None:
        """Stop everything; pending (hanging) requests are released and their sockets closed."""
        self._stopping.set()
        with self.lock:
            timers = list(self._timers)
            self._timers.clear()
        for timer in timers:
            timer.cancel()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.drop_connections()
            self._httpd.server_close()
            if self._http_thread is not None:
                self._http_thread.join(1)
            self._httpd = None
        loop = self._ws_loop
        if loop is not None and self._ws_thread is not None:
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._ws_request_stop)
            self._ws_thread.join(2)
            self._ws_loop = None

    def __enter__(self) -> FakeAlpaca:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def port(self) -> int:
        return self._port

    @property
    def stream_port(self) -> int:
        return self._stream_port

    @property
    def trading_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def data_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self._stream_port}/stream"

    # ------------------------------------------------------------------ test API: market

    def _now(self) -> datetime:
        return self.frozen_now if self.frozen_now is not None else datetime.now(UTC)

    @property
    def is_open(self) -> bool:
        """Whether the market is open: as set, or (``None``) as the calendar says now."""
        if self._is_open is not None:
            return self._is_open
        session = self._session(self._now().astimezone(NY).date())
        return session is not None and session[0] <= self._now() < session[1]

    @is_open.setter
    def is_open(self, value: bool | None) -> None:
        """``True``/``False`` hold the market open/closed; ``None`` follows the calendar."""
        with self.lock:
            self._is_open = None if value is None else bool(value)
            self._check_opened()

    @property
    def always_open(self) -> bool:
        return self._is_open is True

    def _check_opened(self) -> None:
        """When the market has opened since the last look, open orders may fill now."""
        now_open = self.is_open
        if now_open and not self._was_open:
            for order in list(self._orders.values()):
                if order.is_open:
                    self._kick(order)
        self._was_open = now_open

    def set_price(self, symbol: str, price: float) -> None:
        """Set (or create) a symbol's last price; open limit orders are re-checked."""
        symbol = symbol.upper()
        with self.lock:
            price = round(float(price), 4)
            self._prices[symbol] = price
            self._prev_close.setdefault(symbol, price)
            path = self._paths.get(symbol)
            if path is None:
                self._paths[symbol] = _PricePath(
                    symbol, price, self._now(), self.seed, self._session
                )
            else:
                path.record(self._now(), price)
            for order in list(self._orders.values()):
                if order.is_open and order.symbol == symbol and order.type == "limit":
                    self._kick(order)

    def price(self, symbol: str) -> float | None:
        with self.lock:
            return self._prices.get(symbol.upper())

    @property
    def symbols(self) -> list[str]:
        with self.lock:
            return sorted(self._prices)

    def remove_symbol(self, symbol: str) -> None:
        with self.lock:
            self._prices.pop(symbol.upper(), None)
            self._paths.pop(symbol.upper(), None)

    def set_bars(self, symbol: str, bars: Iterable[dict[str, Any]]) -> None:
        """Serve exactly these bars for ``symbol`` (any timeframe), filtered by start/end.

        Each bar is ``{"t": datetime|str, "o", "h", "l", "c", "v"}`` (``n``/``vw`` optional).
        """
        out = []
        for bar in bars:
            t = _parse_time(bar["t"], "t") if isinstance(bar["t"], str) else bar["t"]
            assert isinstance(t, datetime)
            item = {"t": _iso_s(t), "o": bar["o"], "h": bar["h"], "l": bar["l"], "c": bar["c"]}
            item["v"] = bar.get("v", 0)
            item["n"] = bar.get("n")
            item["vw"] = bar.get("vw")
            out.append(item)
        out.sort(key=lambda b: b["t"])
        with self.lock:
            self._explicit_bars[symbol.upper()] = out

    def quote(self, symbol: str) -> tuple[float, float]:
        """(bid, ask) around the current price."""
        with self.lock:
            price = self._prices[symbol.upper()]
        half = max(0.01, price * self.spread_bps / 20_000)
        return round(price - half, 2), round(price + half, 2)

    # ------------------------------------------------------------------ test API: account

    def set_position(self, symbol: str, qty: float, avg_entry_price: float | None = None) -> None:
        """Put a position in place directly (no order, no cash change). qty 0 removes it."""
        symbol = symbol.upper()
        with self.lock:
            if symbol not in self._prices:
                self.set_price(symbol, avg_entry_price or 100.0)
            if qty == 0:
                self._positions.pop(symbol, None)
                return
            avg = avg_entry_price if avg_entry_price is not None else self._prices[symbol]
            self._positions[symbol] = _Position(symbol, self._asset_id(symbol), qty, avg)

    def positions(self) -> dict[str, float]:
        with self.lock:
            return {s: p.qty for s, p in self._positions.items()}

    def all_orders(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self._order_json(o) for o in self._orders.values()]

    def get_order(self, order_id_or_client_id: str) -> dict[str, Any] | None:
        with self.lock:
            order = self._orders.get(order_id_or_client_id)
            if order is None and order_id_or_client_id in self._by_client_id:
                order = self._orders[self._by_client_id[order_id_or_client_id]]
            return self._order_json(order) if order else None

    def orders_by_client_id(self) -> dict[str, list[dict[str, Any]]]:
        """Every order the fake holds, grouped by client_order_id (built from the id index)."""
        out: dict[str, list[dict[str, Any]]] = {}
        with self.lock:
            for order in self._orders.values():
                out.setdefault(order.client_order_id, []).append(self._order_json(order))
        return out

    def requests(self, method: str | None = None, path: str | None = None) -> list[RequestRecord]:
        """Logged requests filtered by method and fnmatch path pattern."""
        with self.lock:
            log = list(self.request_log)
        return [
            r
            for r in log
            if (method is None or r.method == method.upper())
            and (path is None or fnmatch.fnmatchcase(r.path, path))
        ]

    def fill_pending(self, *, one_step: bool = False) -> int:
        """Fill open marketable orders now (respects ``is_open``); returns how many moved.

        With ``one_step`` each order advances by a single fill (a partial one when
        ``partial_fills`` is set and nothing has filled yet).
        """
        moved = 0
        with self.lock:
            for order in list(self._orders.values()):
                stepped = False
                while self._fill_step(order):
                    stepped = True
                    if one_step:
                        break
                moved += stepped
        return moved

    def reject_order(self, order_id: str) -> None:
        """Reject an open order asynchronously (event ``rejected``)."""
        with self.lock:
            order = self._orders[order_id]
            now = self._now()
            order.status = "rejected"
            order.failed_at = order.updated_at = now
            self._emit("rejected", order)

    def expire_day_orders(self) -> int:
        """Expire every open ``day`` order (as at the close); emits ``expired`` events."""
        count = 0
        with self.lock:
            for order in list(self._orders.values()):
                if order.is_open and order.time_in_force == "day":
                    now = self._now()
                    order.status = "expired"
                    order.expired_at = order.updated_at = now
                    self._emit("expired", order)
                    count += 1
        return count

    # ------------------------------------------------------------------ test API: stream

    def _conns(self) -> list[_StreamConn]:
        with self._conns_lock:
            return list(self._stream_conns)

    def listening_count(self) -> int:
        """Stream connections currently listening to trade_updates."""
        return sum(1 for c in self._conns() if c.listening)

    def wait_listening(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` stream clients listen to trade_updates."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.listening_count() >= n:
                return True
            time.sleep(0.01)
        return self.listening_count() >= n

    def drop_streams(self) -> int:
        """Abort every stream connection (no close frame); returns how many were dropped."""
        loop = self._ws_loop
        if loop is None or loop.is_closed():
            return 0

        async def _drop() -> int:
            conns = self._conns()
            for conn in conns:
                conn.ws.transport.abort()
            return len(conns)

        return asyncio.run_coroutine_threadsafe(_drop(), loop).result(2)

    def push_event(self, payload: dict[str, Any]) -> None:
        """Send an arbitrary ``trade_updates`` data payload to listening clients."""
        self._broadcast({"stream": "trade_updates", "data": payload})

    # ------------------------------------------------------------------ HTTP dispatch

    def _serve(self, h: _Handler, method: str) -> None:
        path, _, qs = h.path.partition("?")
        query = {k: v[-1] for k, v in parse_qs(qs, keep_blank_values=True).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        rec = RequestRecord(method, path, query, body, time.time())
        with self.lock:
            self.request_log.append(rec)

        reply, action = self._decide(method, path, query, body, bad_json, rec, h)
        if action in ("drop", "hang"):
            if action == "hang":
                self._stopping.wait()
            h.drop()
            return
        assert reply is not None
        rec.status = reply.status
        rec.reply_headers = dict(reply.headers)
        try:
            h.send(reply)
        except OSError:
            h.close_connection = True

    def _decide(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: Any,
        bad_json: bool,
        rec: RequestRecord,
        h: _Handler,
    ) -> tuple[_Reply | None, str | None]:
        if (
            h.headers.get("APCA-API-KEY-ID") != self.key_id
            or h.headers.get("APCA-API-SECRET-KEY") != self.secret
        ):
            return _error_reply(401, 40110000, "request is not authorized"), None
        limited = self._rate_limited()
        if limited is not None:
            return limited, None

        is_submit = method == "POST" and path == "/v2/orders"
        fault: str | None = None
        with self.lock:
            if is_submit:
                coid = body.get("client_order_id") if isinstance(body, dict) else None
                self.submit_attempts[str(coid)] += 1
                if self.faults.submit:
                    fault = self.faults.submit.pop(0)
                    try:
                        _check_kind(fault, SUBMIT_FAULT_KINDS)
                    except ValueError as e:
                        rec.fault = fault
                        return _error_reply(500, 50010000, f"FakeAlpaca: {e}"), None
            if fault is None:
                for pf in list(self.faults.paths):
                    if pf.matches(method, path):
                        fault = pf.kind
                        if pf.remaining is not None:
                            pf.remaining -= 1
                            if pf.remaining <= 0:
                                self.faults.paths.remove(pf)
                        break
        rec.fault = fault

        passthrough = ("ok", "reject")
        if fault is not None and not fault.endswith("_after_create") and fault not in passthrough:
            if fault.startswith("slow:"):
                self._stopping.wait(float(fault[5:]))
            else:
                return self._fault_reply(fault)

        if bad_json:
            return _error_reply(400, 40010000, "request body format is invalid"), None
        try:
            reply = self._route(method, path, query, body, reject=fault == "reject")
        except _HttpError as e:
            reply = _error_reply(e.status, e.code, e.message)
        except Exception as e:  # a bug in the fake: say so loudly
            reply = _error_reply(500, 50010000, f"FakeAlpaca internal error: {e!r}")

        if fault == "504_after_create":
            return self._fault_reply("504")
        if fault == "500_after_create":
            return self._fault_reply("500")
        if fault == "drop_after_create":
            return None, "drop"
        if fault == "hang_after_create":
            return None, "hang"
        return reply, None

    def _fault_reply(self, kind: str) -> tuple[_Reply | None, str | None]:
        if kind in ("hang", "drop"):
            return None, kind
        if kind == "drop_before_create":
            return None, "drop"
        if kind == "garbage":
            return _Reply(200, b"<html>upstream hiccup</html>", "text/html"), None
        try:
            status = int(kind)
        except ValueError:
            return _error_reply(500, 50010000, f"FakeAlpaca: unknown fault kind {kind!r}"), None
        if status in _HTML_BODIES:
            return _Reply(status, _HTML_BODIES[status].encode(), "text/html"), None
        code, message = _JSON_ERRORS.get(status, (status * 100_000, "error"))
        return _error_reply(status, code, message), None

    def _rate_limited(self) -> _Reply | None:
        limit = self.rate_limit_per_min
        if not limit:
            return None
        now = time.monotonic()
        with self.lock:
            while self._rate_window and now - self._rate_window[0] >= 60:
                self._rate_window.popleft()
            if len(self._rate_window) >= limit:
                reset = int(time.time() + 60 - (now - self._rate_window[0]))
                reply = _error_reply(429, 42910000, "rate limit exceeded")
                reply.headers = {
                    "X-RateLimit-Limit": str(limit),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(reset),
                }
                return reply
            self._rate_window.append(now)
        return None

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any, *, reject: bool = False
    ) -> _Reply:
        parts = path.rstrip("/").split("/")
        if len(parts) < 3 or parts[1] != "v2":
            raise _HttpError(404, 40410000, "endpoint not found")
        rest = parts[2:]
        head = rest[0]
        with self.lock:
            self._check_opened()
            if method == "GET" and rest == ["account"]:
                return _json_reply(200, self._account_json())
            if head == "positions":
                return self._positions_route(method, rest, query)
            if method == "GET" and rest == ["clock"]:
                return _json_reply(200, self._clock_json())
            if method == "GET" and rest == ["calendar"]:
                return _json_reply(200, self._calendar_json(query))
            if head == "orders:by_client_order_id" and method == "GET":
                coid = query.get("client_order_id", "")
                if coid not in self._by_client_id:
                    raise _HttpError(404, 40410000, "order not found")
                return _json_reply(200, self._order_json(self._orders[self._by_client_id[coid]]))
            if head == "orders":
                return self._orders_route(method, rest, query, body, reject)
            if method == "GET" and head == "assets" and len(rest) == 2:
                return _json_reply(200, self._asset_json(rest[1]))
            if head == "stocks" and method == "GET":
                return self._stocks_route(rest, query)
        raise _HttpError(404, 40410000, "endpoint not found")

    # ------------------------------------------------------------------ trading endpoints

    def _asset_id(self, symbol: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fakealpaca:asset:{symbol}"))

    def _asset_json(self, symbol: str) -> dict[str, Any]:
        symbol = symbol.upper()
        if symbol not in self._prices:
            raise _HttpError(404, 40410000, "asset not found")
        return {
            "id": self._asset_id(symbol),
            "class": "us_equity",
            "exchange": _EXCHANGES.get(symbol, "NASDAQ"),
            "symbol": symbol,
            "name": f"{symbol} Fake Inc. Common Stock",
            "status": "active",
            "tradable": True,
            "marginable": True,
            "shortable": True,
            "easy_to_borrow": True,
            "fractionable": True,
            "attributes": [],
        }

    def _market_values(self) -> tuple[float, float]:
        long_mv = short_mv = 0.0
        for pos in self._positions.values():
            value = pos.qty * self._prices.get(pos.symbol, pos.avg_entry_price)
            if pos.qty >= 0:
                long_mv += value
            else:
                short_mv += value
        return long_mv, short_mv

    def _reserved(self) -> float:
        """Buying power held by open buy orders."""
        total = 0.0
        for order in self._orders.values():
            if order.is_open and order.side == "buy":
                total += self._order_cost(order) * (1 - self._filled_fraction(order))
        return total

    def _filled_fraction(self, order: _Order) -> float:
        if not order.total_qty:
            return 0.0
        return min(1.0, order.filled_qty / order.total_qty)

    def _order_cost(self, order: _Order) -> float:
        if order.notional is not None:
            return order.notional
        qty = order.qty or 0.0
        if order.type == "limit" and order.limit_price is not None:
            return qty * order.limit_price
        _, ask = self.quote(order.symbol)
        return qty * ask

    def buying_power(self) -> float:
        with self.lock:
            return max(0.0, self.cash - self._reserved())

    def _account_json(self) -> dict[str, Any]:
        long_mv, short_mv = self._market_values()
        equity = self.cash + long_mv + short_mv
        bp = _num(max(0.0, self.cash - self._reserved()), 2)
        data: dict[str, Any] = {
            "id": self.account_id,
            "account_number": self.account_number,
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "cash": _num(self.cash, 2),
            "buying_power": bp,
            "regt_buying_power": bp,
            "daytrading_buying_power": "0",
            "non_marginable_buying_power": bp,
            "effective_buying_power": bp,
            "equity": _num(equity, 2),
            "last_equity": _num(self.last_equity, 2),
            "portfolio_value": _num(equity, 2),
            "long_market_value": _num(long_mv, 2),
            "short_market_value": _num(short_mv, 2),
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "multiplier": "1",
            "daytrade_count": 0,
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "trade_suspended_by_user": False,
            "shorting_enabled": self.shorting_enabled,
            "accrued_fees": "0",
            "pending_transfer_in": "0",
            "pending_transfer_out": "0",
            "created_at": _iso(self.account_created_at),
            "options_approved_level": 0,
            "options_trading_level": 0,
        }
        data.update(self.account_overrides)
        return data

    def _position_json(self, pos: _Position) -> dict[str, Any]:
        price = self._prices.get(pos.symbol, pos.avg_entry_price)
        prev = self._prev_close.get(pos.symbol, price)
        market_value = pos.qty * price
        cost_basis = pos.qty * pos.avg_entry_price
        upl = market_value - cost_basis
        held = sum(
            (o.total_qty or o.qty or 0.0) - o.filled_qty
            for o in self._orders.values()
            if o.is_open and o.symbol == pos.symbol and o.side == "sell"
        )
        intraday = pos.qty * (price - prev)
        return {
            "asset_id": pos.asset_id,
            "symbol": pos.symbol,
            "exchange": _EXCHANGES.get(pos.symbol, "NASDAQ"),
            "asset_class": "us_equity",
            "asset_marginable": True,
            "qty": _num(pos.qty),
            "qty_available": _num(max(0.0, pos.qty - held) if pos.qty > 0 else pos.qty),
            "avg_entry_price": _num(pos.avg_entry_price, 4),
            "side": "long" if pos.qty > 0 else "short",
            "market_value": _num(market_value, 2),
            "cost_basis": _num(cost_basis, 2),
            "unrealized_pl": _num(upl, 2),
            "unrealized_plpc": _num(upl / abs(cost_basis), 6) if cost_basis else "0",
            "unrealized_intraday_pl": _num(intraday, 2),
            "unrealized_intraday_plpc": _num(intraday / abs(pos.qty * prev), 6) if prev else "0",
            "current_price": _num(price, 4),
            "lastday_price": _num(prev, 4),
            "change_today": _num(price / prev - 1, 6) if prev else "0",
        }

    def _positions_route(self, method: str, rest: list[str], query: dict[str, str]) -> _Reply:
        if method == "GET" and len(rest) == 1:
            return _json_reply(
                200, [self._position_json(p) for _, p in sorted(self._positions.items())]
            )
        if method == "GET" and len(rest) == 2:
            pos = self._positions.get(rest[1].upper())
            if pos is None:
                raise _HttpError(404, 40410000, "position does not exist")
            return _json_reply(200, self._position_json(pos))
        if method == "DELETE" and len(rest) == 2:
            return _json_reply(200, self._order_json(self._close_position(rest[1], query)))
        if method == "DELETE" and len(rest) == 1:
            if query.get("cancel_orders") == "true":
                for order in list(self._orders.values()):
                    if order.is_open:
                        self._cancel(order)
            out = []
            for symbol in sorted(self._positions):
                order = self._close_position(symbol, {})
                out.append({"symbol": symbol, "status": 200, "body": self._order_json(order)})
            return _json_reply(207, out)
        raise _HttpError(404, 40410000, "endpoint not found")

    def _close_position(self, symbol: str, query: dict[str, str]) -> _Order:
        symbol = symbol.upper()
        pos = self._positions.get(symbol)
        if pos is None:
            raise _HttpError(404, 40410000, "position does not exist")
        qty = abs(pos.qty)
        if query.get("qty"):
            qty = min(qty, _parse_number(query["qty"], "qty") or 0.0)
        elif query.get("percentage"):
            qty = round(qty * (_parse_number(query["percentage"], "percentage") or 0.0) / 100, 9)
        if qty <= 0:
            raise _HttpError(422, 40010001, "invalid qty")
        side = "sell" if pos.qty > 0 else "buy"
        order = self._create_order(
            symbol=symbol,
            side=side,
            type_="market",
            tif="day",
            qty=qty,
            notional=None,
            limit_price=None,
            client_order_id=str(uuid.uuid4()),
            extended_hours=False,
        )
        return order

    def _clock_json(self) -> dict[str, Any]:
        now = self._now()
        next_open = next_close = None
        day = now.astimezone(NY).date()
        for i in range(0, 30):
            session = self._session(day + timedelta(days=i))
            if session is None:
                continue
            opens, closes = session
            if next_open is None and opens > now:
                next_open = opens
            if next_close is None and closes > now:
                next_close = closes
            if next_open and next_close:
                break
        fallback = now + timedelta(days=1)
        return {
            "timestamp": (now.astimezone(NY)).isoformat(),
            "is_open": self.is_open,
            "next_open": (next_open or fallback).astimezone(NY).isoformat(),
            "next_close": (next_close or fallback).astimezone(NY).isoformat(),
        }

    def _session(self, day: date) -> tuple[datetime, datetime] | None:
        if day in self.calendar_overrides:
            hours = self.calendar_overrides[day]
        else:
            hours = ("09:30", "16:00") if day.weekday() < 5 else None
        if hours is None:
            return None
        return _parse_hhmm(day, hours[0]), _parse_hhmm(day, hours[1])

    def _calendar_json(self, query: dict[str, str]) -> list[dict[str, Any]]:
        today = self._now().astimezone(NY).date()
        try:
            start = date.fromisoformat(query["start"][:10]) if query.get("start") else today
            end = (
                date.fromisoformat(query["end"][:10])
                if query.get("end")
                else start + timedelta(days=30)
            )
        except ValueError:
            raise _HttpError(422, 40010001, "invalid date") from None
        out: list[dict[str, Any]] = []
        day = start
        while day <= end and len(out) < 10_000:
            session = self._session(day)
            if session is not None:
                settle = day + timedelta(days=1)
                while self._session(settle) is None:
                    settle += timedelta(days=1)
                out.append(
                    {
                        "date": day.isoformat(),
                        "open": session[0].strftime("%H:%M"),
                        "close": session[1].strftime("%H:%M"),
                        "session_open": "0400",
                        "session_close": "2000",
                        "settlement_date": settle.isoformat(),
                    }
                )
            day += timedelta(days=1)
        return out

    # ------------------------------------------------------------------ orders

    def _order_json(self, o: _Order) -> dict[str, Any]:
        return {
            "id": o.id,
            "client_order_id": o.client_order_id,
            "created_at": _iso(o.created_at),
            "updated_at": _iso(o.updated_at or o.created_at),
            "submitted_at": _iso(o.created_at),
            "filled_at": _iso(o.filled_at),
            "expired_at": _iso(o.expired_at),
            "canceled_at": _iso(o.canceled_at),
            "failed_at": _iso(o.failed_at),
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": o.asset_id,
            "symbol": o.symbol,
            "asset_class": "us_equity",
            "notional": _num(o.notional, 2) if o.notional is not None else None,
            "qty": _num(o.qty) if o.qty is not None else None,
            "filled_qty": _num(o.filled_qty),
            "filled_avg_price": (
                _num(o.filled_avg_price, 4) if o.filled_avg_price is not None else None
            ),
            "order_class": "simple",
            "order_type": o.type,
            "type": o.type,
            "side": o.side,
            "position_intent": o.position_intent,
            "time_in_force": o.time_in_force,
            "limit_price": _num(o.limit_price, 4) if o.limit_price is not None else None,
            "stop_price": None,
            "status": o.status,
            "extended_hours": o.extended_hours,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "subtag": None,
            "source": None,
            "expires_at": None,
        }

    def _orders_route(
        self, method: str, rest: list[str], query: dict[str, str], body: Any, reject: bool
    ) -> _Reply:
        if method == "POST" and len(rest) == 1:
            return _json_reply(200, self._submit(body, reject))
        if method == "GET" and len(rest) == 1:
            return _json_reply(200, self._list_orders(query))
        if method == "GET" and len(rest) == 2:
            order = self._orders.get(rest[1])
            if order is None:
                raise _HttpError(404, 40410000, "order not found")
            return _json_reply(200, self._order_json(order))
        if method == "DELETE" and len(rest) == 2:
            order = self._orders.get(rest[1])
            if order is None:
                raise _HttpError(404, 40410000, "order not found")
            if not order.is_open:
                raise _HttpError(422, 42210000, f'order is already in "{order.status}" state')
            self._cancel(order)
            return _Reply(204)
        if method == "DELETE" and len(rest) == 1:
            out = []
            for order in list(self._orders.values()):
                if order.is_open:
                    self._cancel(order)
                    out.append({"id": order.id, "status": 200, "body": None})
            return _json_reply(207, out)
        raise _HttpError(404, 40410000, "endpoint not found")

    def _list_orders(self, query: dict[str, str]) -> list[dict[str, Any]]:
        status = query.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise _HttpError(422, 40010001, "invalid status")
        limit = int(_parse_number(query.get("limit"), "limit") or 50)
        if not 0 < limit <= 500:
            raise _HttpError(422, 40010001, "limit must be between 1 and 500")
        after = _parse_time(query.get("after"), "after")
        until = _parse_time(query.get("until"), "until")
        symbols = {s.strip().upper() for s in query.get("symbols", "").split(",") if s.strip()}
        side = query.get("side")
        orders = []
        for o in self._orders.values():
            if status == "open" and not o.is_open:
                continue
            if status == "closed" and o.is_open:
                continue
            if symbols and o.symbol not in symbols:
                continue
            if side and o.side != side:
                continue
            if after and o.created_at <= after:
                continue
            if until and o.created_at >= until:
                continue
            orders.append(o)
        orders.sort(key=lambda o: o.created_at, reverse=query.get("direction", "desc") != "asc")
        return [self._order_json(o) for o in orders[:limit]]

    def _submit(self, body: Any, reject: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _HttpError(422, 40010001, "request body must be an object")
        symbol = str(body.get("symbol") or "").upper()
        if not symbol:
            raise _HttpError(422, 40010001, "symbol is required")
        side = body.get("side")
        if side not in ("buy", "sell"):
            raise _HttpError(422, 40010001, "invalid side")
        type_ = body.get("type") or body.get("order_type")
        if type_ not in ("market", "limit", "stop", "stop_limit", "trailing_stop"):
            raise _HttpError(422, 40010001, "invalid order type")
        if type_ not in ("market", "limit"):
            raise _HttpError(422, 40010001, f"order type {type_} is not supported by FakeAlpaca")
        tif = body.get("time_in_force")
        if tif not in ("day", "gtc", "opg", "cls", "ioc", "fok"):
            raise _HttpError(422, 40010001, "invalid time_in_force")
        qty = _parse_number(body.get("qty"), "qty")
        notional = _parse_number(body.get("notional"), "notional")
        if qty is None and notional is None:
            raise _HttpError(422, 40010001, "qty or notional is required")
        if qty is not None and notional is not None:
            raise _HttpError(422, 40010001, "only one of qty or notional can be specified")
        if (qty is not None and qty <= 0) or (notional is not None and notional <= 0):
            raise _HttpError(422, 40010001, "qty and notional must be > 0")
        fractional = notional is not None or (qty is not None and qty != int(qty))
        if fractional and (type_ != "market" or tif != "day"):
            raise _HttpError(
                422, 40010001, "fractional orders must be market orders with time_in_force=day"
            )
        limit_price = _parse_number(body.get("limit_price"), "limit_price")
        if type_ == "limit" and (limit_price is None or limit_price <= 0):
            raise _HttpError(422, 40010001, "limit_price is required for limit orders")
        if type_ == "market" and limit_price is not None:
            raise _HttpError(422, 40010001, "limit_price must not be set for market orders")
        extended_hours = bool(body.get("extended_hours") or False)
        if extended_hours and (type_ != "limit" or tif != "day"):
            raise _HttpError(422, 40010001, "extended hours order must be DAY limit orders")
        coid = body.get("client_order_id")
        if coid is None or coid == "":
            coid = str(uuid.uuid4())
        coid = str(coid)
        if len(coid) > 128:
            raise _HttpError(422, 40010001, "client_order_id must be no more than 128 characters")
        if coid in self._by_client_id:
            raise _HttpError(422, 40010001, "client_order_id must be unique")
        if symbol not in self._prices:
            raise _HttpError(422, 40010001, f'asset "{symbol}" not found')

        held = self._positions.get(symbol)
        held_qty = held.qty if held else 0.0
        if side == "buy":
            if notional is not None:
                cost = notional
            elif type_ == "limit":
                cost = (qty or 0.0) * (limit_price or 0.0)
            else:
                cost = (qty or 0.0) * self.quote(symbol)[1]
            if cost > self.cash - self._reserved() + 1e-9:
                raise _HttpError(403, 40310000, "insufficient buying power")
        else:
            pending_sells = sum(
                (o.total_qty or o.qty or 0.0) - o.filled_qty
                for o in self._orders.values()
                if o.is_open and o.symbol == symbol and o.side == "sell"
            )
            available = max(0.0, held_qty - pending_sells)
            wanted = qty if qty is not None else (notional or 0.0) / self.quote(symbol)[0]
            if wanted > available + 1e-9:
                if not self.shorting_enabled or fractional:
                    raise _HttpError(
                        403,
                        40310000,
                        f"insufficient qty available for order (requested: {_num(wanted)}, "
                        f"available: {_num(available)})",
                    )
                if held_qty > 0 or pending_sells > 0:
                    raise _HttpError(
                        403, 40310000, "cannot open a short position while a long position is held"
                    )

        order = self._create_order(
            symbol=symbol,
            side=side,
            type_=type_,
            tif=tif,
            qty=qty,
            notional=notional,
            limit_price=limit_price,
            client_order_id=coid,
            extended_hours=extended_hours,
            reject=reject,
        )
        return order.reply_snapshot

    def _create_order(
        self,
        *,
        symbol: str,
        side: str,
        type_: str,
        tif: str,
        qty: float | None,
        notional: float | None,
        limit_price: float | None,
        client_order_id: str,
        extended_hours: bool,
        reject: bool = False,
    ) -> _Order:
        held = self._positions.get(symbol)
        held_qty = held.qty if held else 0.0
        if side == "buy":
            intent = "buy_to_close" if held_qty < 0 else "buy_to_open"
        else:
            intent = "sell_to_close" if held_qty > 0 else "sell_to_open"
        now = self._now()
        order = _Order(
            id=str(uuid.uuid4()),
            client_order_id=client_order_id,
            symbol=symbol,
            asset_id=self._asset_id(symbol),
            side=side,
            type=type_,
            time_in_force=tif,
            qty=qty,
            notional=notional,
            limit_price=limit_price,
            extended_hours=extended_hours,
            position_intent=intent,
            created_at=now,
            updated_at=now,
            total_qty=qty,
        )
        self._orders[order.id] = order
        self._by_client_id[client_order_id] = order.id
        # the POST reply shows the order as created; the lifecycle runs on after this
        order.reply_snapshot = self._order_json(order)
        if reject:
            order.status = "rejected"
            order.failed_at = order.updated_at = self._now()
            self._emit("rejected", order)
            return order
        order.status = "new"
        order.updated_at = self._now()
        self._emit("new", order)
        self._kick(order)
        return order

    def _cancel(self, order: _Order) -> None:
        now = self._now()
        order.status = "canceled"
        order.canceled_at = order.updated_at = now
        self._emit("canceled", order)

    # ------------------------------------------------------------------ fills

    def _kick(self, order: _Order) -> None:
        """Run the fill machinery for an order according to ``fill_delay``."""
        delay = self.fill_delay
        if delay is None or not order.is_open or self._stopping.is_set():
            return
        if delay <= 0:
            while self._fill_step(order):
                pass
            return
        if order.timer_pending:
            return
        order.timer_pending = True
        timer = threading.Timer(delay, self._timer_fire, args=(order.id,))
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _timer_fire(self, order_id: str) -> None:
        with self.lock:
            self._timers = {t for t in self._timers if t.is_alive()}
            order = self._orders.get(order_id)
            if order is None or self._stopping.is_set():
                return
            order.timer_pending = False
            if self._fill_step(order) and order.is_open:
                self._kick(order)

    def _exec_price(self, order: _Order) -> float | None:
        if order.symbol not in self._prices:
            return None
        bid, ask = self.quote(order.symbol)
        if order.type == "market":
            return ask if order.side == "buy" else bid
        limit = order.limit_price or 0.0
        if order.side == "buy":
            return min(limit, ask) if ask <= limit else None
        return max(limit, bid) if bid >= limit else None

    def _fill_step(self, order: _Order) -> bool:
        """Execute one fill for an open, marketable order; True if something filled."""
        if not order.is_open or not self.is_open or order.status == "accepted":
            return False
        price = self._exec_price(order)
        if price is None:
            return False
        if order.total_qty is None:
            order.total_qty = round((order.notional or 0.0) / price, 9)
        remaining = round(order.total_qty - order.filled_qty, 9)
        if remaining <= 0:
            return False
        qty = remaining
        if self.partial_fills and order.filled_qty == 0:
            total = order.total_qty
            half = math.floor(total / 2) if total == int(total) else round(total / 2, 9)
            if 0 < half < remaining:
                qty = half
        self._apply_fill(order, qty, price)
        return True

    def _apply_fill(self, order: _Order, qty: float, price: float) -> None:
        now = self._now()
        prev_filled = order.filled_qty
        order.filled_qty = round(prev_filled + qty, 9)
        prev_avg = order.filled_avg_price or 0.0
        order.filled_avg_price = round((prev_avg * prev_filled + price * qty) / order.filled_qty, 6)
        order.updated_at = now
        done = order.filled_qty >= (order.total_qty or 0.0) - 1e-9
        order.status = "filled" if done else "partially_filled"
        if done:
            order.filled_at = now

        signed = qty if order.side == "buy" else -qty
        self.cash = round(self.cash - signed * price, 6)
        pos = self._positions.get(order.symbol)
        old_qty = pos.qty if pos else 0.0
        new_qty = round(old_qty + signed, 9)
        if abs(new_qty) < 1e-9:
            self._positions.pop(order.symbol, None)
        elif pos is None or old_qty == 0 or (old_qty > 0) != (new_qty > 0):
            self._positions[order.symbol] = _Position(
                order.symbol, self._asset_id(order.symbol), new_qty, price
            )
        elif abs(new_qty) > abs(old_qty):  # adding to the position
            pos.avg_entry_price = round(
                (pos.avg_entry_price * abs(old_qty) + price * qty) / abs(new_qty), 6
            )
            pos.qty = new_qty
        else:  # reducing: average entry unchanged
            pos.qty = new_qty
        self._emit(
            "fill" if done else "partial_fill",
            order,
            price=price,
            qty=qty,
            position_qty=new_qty,
            execution_id=str(uuid.uuid4()),
        )

    # ------------------------------------------------------------------ events

    def _emit(
        self,
        event: str,
        order: _Order,
        *,
        price: float | None = None,
        qty: float | None = None,
        position_qty: float | None = None,
        execution_id: str | None = None,
    ) -> None:
        data: dict[str, Any] = {
            "event": event,
            "timestamp": _iso(self._now()),
            "order": self._order_json(order),
        }
        if execution_id is not None:
            data["execution_id"] = execution_id
        if price is not None:
            data["price"] = _num(price, 4)
        if qty is not None:
            data["qty"] = _num(qty)
        if position_qty is not None:
            data["position_qty"] = _num(position_qty)
        self.events.append(data)
        self._broadcast({"stream": "trade_updates", "data": data})

    def _broadcast(self, message: dict[str, Any]) -> None:
        loop = self._ws_loop
        if loop is None or loop.is_closed():
            return
        frame = self._frame(message)
        with contextlib.suppress(RuntimeError):  # loop closing
            loop.call_soon_threadsafe(self._ws_fanout, frame)

    def _frame(self, message: dict[str, Any]) -> str | bytes:
        text = json.dumps(message)
        return text.encode() if self.stream_binary else text

    # ------------------------------------------------------------------ websocket (own loop)

    def _ws_thread_main(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = self._ws_loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._ws_main(ready))
        except BaseException as e:  # surfaced by start()
            errors.append(e)
            ready.set()
        finally:
            with contextlib.suppress(Exception):
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=0.5))
            loop.close()

    async def _ws_main(self, ready: threading.Event) -> None:
        self._ws_stop = asyncio.get_running_loop().create_future()
        server = await serve(self._ws_handler, "127.0.0.1", self._stream_port, ping_interval=None)
        self._ws_server = server
        self._stream_port = next(iter(server.sockets)).getsockname()[1]
        ready.set()
        await self._ws_stop
        for conn in self._conns():
            conn.ws.transport.abort()
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 1)

    def _ws_request_stop(self) -> None:
        if self._ws_stop is not None and not self._ws_stop.done():
            self._ws_stop.set_result(None)

    def _ws_fanout(self, frame: str | bytes) -> None:
        for conn in self._conns():
            if conn.listening:
                conn.queue.put_nowait(frame)

    async def _ws_sender(self, conn: _StreamConn) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = await conn.queue.get()
                await conn.ws.send(frame)

    async def _ws_handler(self, ws: ServerConnection) -> None:
        conn = _StreamConn(ws)
        with self._conns_lock:
            self._stream_conns.add(conn)
            self.stream_connects += 1
        sender = asyncio.create_task(self._ws_sender(conn))
        try:
            async for raw in ws:
                try:
                    msg = json.loads(raw)
                    action = msg.get("action")
                    data = msg.get("data") or {}
                except (ValueError, AttributeError):
                    conn.queue.put_nowait(
                        self._frame({"stream": "error", "data": {"error": "invalid syntax"}})
                    )
                    continue
                if action in ("authenticate", "auth"):
                    ok = (
                        not self.stream_reject_auth
                        and data.get("key_id") == self.key_id
                        and data.get("secret_key") == self.secret
                    )
                    conn.authed = ok
                    status = "authorized" if ok else "unauthorized"
                    reply = {
                        "stream": "authorization",
                        "data": {"action": "authenticate", "status": status},
                    }
                    conn.queue.put_nowait(self._frame(reply))
                elif action == "listen":
                    if not conn.authed:
                        reply = {
                            "stream": "authorization",
                            "data": {"action": "listen", "status": "unauthorized"},
                        }
                        conn.queue.put_nowait(self._frame(reply))
                        continue
                    streams = [s for s in data.get("streams") or [] if s == "trade_updates"]
                    conn.listening = bool(streams)
                    reply = {"stream": "listening", "data": {"streams": streams}}
                    conn.queue.put_nowait(self._frame(reply))
                else:
                    conn.queue.put_nowait(
                        self._frame({"stream": "error", "data": {"error": "invalid action"}})
                    )
        except ConnectionClosed:
            pass
        finally:
            with self._conns_lock:
                self._stream_conns.discard(conn)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    # ------------------------------------------------------------------ market data

    def _symbols_param(self, query: dict[str, str]) -> list[str]:
        raw = query.get("symbols", "")
        symbols = [s.strip().upper() for s in raw.split(",") if s.strip()]
        if not symbols:
            raise _HttpError(400, 40010001, "missing symbols")
        return symbols

    def _bar_at(self, symbol: str, start: datetime, end: datetime) -> dict[str, Any]:
        """The bar over ``[start, end)`` cut from the symbol's stored price path."""
        path = self._paths[symbol]
        end = min(end, self._now())
        prev = path.price_before(start)
        span = path.span(start, end) if end > start else None
        if span is None:
            flat = prev if prev is not None else path.anchor
            open_ = high = low = close = flat
        else:
            first, high, low, close = span
            open_ = prev if prev is not None else first
            high, low = max(high, open_), min(low, open_)
        epoch = int(start.timestamp())
        minutes = max(1.0, (end - start).total_seconds() / 60)
        volume = int((0.6 + _noise(symbol, epoch, "v")) * 2_000 * min(minutes, 390.0))
        return {
            "t": _iso_s(start),
            "o": round(open_, 2),
            "h": round(high, 2),
            "l": round(low, 2),
            "c": round(close, 2),
            "v": volume,
            "n": max(1, volume // 90),
            "vw": round((open_ + high + low + close) / 4, 4),
        }

    @staticmethod
    def _timeframe(value: str) -> tuple[str, int]:
        units = {
            "Min": "min",
            "T": "min",
            "Hour": "hour",
            "H": "hour",
            "Day": "day",
            "D": "day",
            "Week": "week",
            "W": "week",
            "Month": "month",
            "M": "month",
        }
        digits = "".join(ch for ch in value if ch.isdigit())
        unit = value[len(digits) :]
        if not digits or unit not in units or value[: len(digits)] != digits:
            raise _HttpError(400, 42210000, f"invalid timeframe: {value}")
        amount = int(digits)
        kind = units[unit]
        limits = {"min": 59, "hour": 23, "day": 1, "week": 1, "month": 1}
        if not 1 <= amount <= limits[kind]:
            raise _HttpError(400, 42210000, f"invalid timeframe: {value}")
        return kind, amount

    def _bar_times(
        self, kind: str, amount: int, start: datetime, end: datetime
    ) -> Iterator[tuple[datetime, datetime]]:
        """(bar start, bar end) of every bar that can hold session prices in the range."""
        day = start.astimezone(NY).date() - timedelta(days=1)
        last = end.astimezone(NY).date()
        seen: set[date] = set()
        while day <= last:
            session = self._session(day)
            if session is not None:
                opens, closes = session
                midnight = datetime(day.year, day.month, day.day, tzinfo=NY)
                if kind in ("min", "hour"):
                    step = amount * (60 if kind == "min" else 3600)
                    offset = (opens - midnight).total_seconds() // step * step
                    t = midnight + timedelta(seconds=offset)
                    while t < closes:
                        yield t, t + timedelta(seconds=step)
                        t += timedelta(seconds=step)
                else:
                    if kind == "day":
                        bucket, after = day, day + timedelta(days=1)
                    elif kind == "week":
                        bucket = day - timedelta(days=day.weekday())
                        after = bucket + timedelta(days=7)
                    else:
                        bucket = day.replace(day=1)
                        after = (bucket + timedelta(days=32)).replace(day=1)
                    if bucket not in seen:
                        seen.add(bucket)
                        yield (
                            datetime(bucket.year, bucket.month, bucket.day, tzinfo=NY),
                            datetime(after.year, after.month, after.day, tzinfo=NY),
                        )
            day += timedelta(days=1)

    def _series(
        self, symbol: str, kind: str, amount: int, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        if symbol in self._explicit_bars:
            s, e = _iso_s(start), _iso_s(end)
            return [dict(b) for b in self._explicit_bars[symbol] if s <= b["t"] <= e]
        now = self._now()
        out = []
        for t, t_end in self._bar_times(kind, amount, start, end):
            if t < start or t > end or t > now:
                continue
            out.append(self._bar_at(symbol, t, t_end))
            if len(out) >= 200_000:
                break
        return out

    def _bars(self, query: dict[str, str]) -> dict[str, Any]:
        symbols = self._symbols_param(query)
        kind, amount = self._timeframe(query.get("timeframe", ""))
        now = self._now()
        start = _parse_time(query.get("start"), "start") or datetime.combine(
            now.astimezone(NY).date(), datetime.min.time(), NY
        )
        end = _parse_time(query.get("end"), "end") or now
        limit = int(_parse_number(query.get("limit"), "limit") or 1000)
        if not 1 <= limit <= 10_000:
            raise _HttpError(422, 42210000, "invalid limit: must be between 1 and 10000")
        page = max(1, min(limit, self.bars_page_size))
        offset = 0
        token = query.get("page_token")
        if token:
            try:
                offset = int(base64.urlsafe_b64decode(token.encode()).decode())
            except ValueError:
                raise _HttpError(400, 42210000, "invalid page token") from None
        desc = query.get("sort") == "desc"
        flat: list[tuple[str, dict[str, Any]]] = []
        for symbol in sorted(set(symbols)):
            if symbol not in self._prices and symbol not in self._explicit_bars:
                continue
            series = self._series(symbol, kind, amount, start, end)
            if desc:
                series.reverse()
            flat.extend((symbol, bar) for bar in series)
        chunk = flat[offset : offset + page]
        bars: dict[str, list[dict[str, Any]]] = {}
        for symbol, bar in chunk:
            bars.setdefault(symbol, []).append(bar)
        next_offset = offset + len(chunk)
        next_token = (
            base64.urlsafe_b64encode(str(next_offset).encode()).decode()
            if next_offset < len(flat)
            else None
        )
        return {"bars": bars, "next_page_token": next_token, "currency": "USD"}

    def _last_trading_minute(self) -> datetime:
        """Start of the last complete minute bar (the last session minute when closed)."""
        now = self._now()
        minute = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
        if self.is_open:
            return minute
        day = now.astimezone(NY).date()
        for _ in range(30):
            session = self._session(day)
            if session is not None and session[0] <= now:
                return min(minute, session[1] - timedelta(minutes=1))
            day -= timedelta(days=1)
        return minute

    def _latest_bar(self, symbol: str) -> dict[str, Any]:
        minute = self._last_trading_minute()
        price = self._prices[symbol]
        epoch = int(minute.timestamp())
        open_ = price * (1 + 0.001 * _noise(symbol, epoch, "lo"))
        high = max(open_, price) * (1 + 0.0005 * abs(_noise(symbol, epoch, "lh")))
        low = min(open_, price) * (1 - 0.0005 * abs(_noise(symbol, epoch, "ll")))
        volume = int((0.6 + _noise(symbol, epoch, "lv")) * 2_000)
        return {
            "t": _iso_s(minute),
            "o": round(open_, 2),
            "h": round(high, 2),
            "l": round(low, 2),
            "c": round(price, 2),
            "v": volume,
            "n": max(1, volume // 90),
            "vw": round((open_ + high + low + price) / 4, 4),
        }

    def _latest_quote(self, symbol: str) -> dict[str, Any]:
        bid, ask = self.quote(symbol)
        epoch = int(self._now().timestamp())
        return {
            "t": _iso(self._now()),
            "ax": "V",
            "ap": ask,
            "as": 1 + int((_noise(symbol, epoch, "as") + 0.5) * 5),
            "bx": "V",
            "bp": bid,
            "bs": 1 + int((_noise(symbol, epoch, "bs") + 0.5) * 5),
            "c": ["R"],
            "z": "C" if _EXCHANGES.get(symbol) == "NASDAQ" or symbol not in _EXCHANGES else "B",
        }

    def _latest_trade(self, symbol: str) -> dict[str, Any]:
        epoch = int(self._now().timestamp())
        return {
            "t": _iso(self._now()),
            "x": "V",
            "p": round(self._prices[symbol], 2),
            "s": 1 + int((_noise(symbol, epoch, "ts") + 0.5) * 100),
            "c": ["@"],
            "i": zlib.crc32(f"{symbol}{epoch}".encode()),
            "z": "C",
        }

    def _daily_bar(self, symbol: str, day: date, close: float) -> dict[str, Any]:
        t = datetime(day.year, day.month, day.day, tzinfo=NY)
        epoch = int(t.timestamp())
        open_ = close * (1 + 0.008 * _noise(symbol, epoch, "do"))
        high = max(open_, close) * (1 + 0.006 * abs(_noise(symbol, epoch, "dh")))
        low = min(open_, close) * (1 - 0.006 * abs(_noise(symbol, epoch, "dl")))
        volume = int((0.6 + _noise(symbol, epoch, "dv")) * 900_000)
        return {
            "t": _iso_s(t),
            "o": round(open_, 2),
            "h": round(high, 2),
            "l": round(low, 2),
            "c": round(close, 2),
            "v": volume,
            "n": max(1, volume // 90),
            "vw": round((open_ + high + low + close) / 4, 4),
        }

    def _snapshot(self, symbol: str) -> dict[str, Any]:
        today = self._now().astimezone(NY).date()
        day = today
        while self._session(day) is None:
            day -= timedelta(days=1)
        prev = day - timedelta(days=1)
        while self._session(prev) is None:
            prev -= timedelta(days=1)
        return {
            "latestTrade": self._latest_trade(symbol),
            "latestQuote": self._latest_quote(symbol),
            "minuteBar": self._latest_bar(symbol),
            "dailyBar": self._daily_bar(symbol, day, self._prices[symbol]),
            "prevDailyBar": self._daily_bar(symbol, prev, self._prev_close[symbol]),
        }

    def _stocks_route(self, rest: list[str], query: dict[str, str]) -> _Reply:
        if rest == ["stocks", "bars"]:
            return _json_reply(200, self._bars(query))
        if len(rest) == 3 and rest[2] == "latest":
            symbols = [s for s in self._symbols_param(query) if s in self._prices]
            if rest[1] == "bars":
                return _json_reply(200, {"bars": {s: self._latest_bar(s) for s in symbols}})
            if rest[1] == "quotes":
                return _json_reply(200, {"quotes": {s: self._latest_quote(s) for s in symbols}})
            if rest[1] == "trades":
                return _json_reply(200, {"trades": {s: self._latest_trade(s) for s in symbols}})
        if rest == ["stocks", "snapshots"]:
            symbols = [s for s in self._symbols_param(query) if s in self._prices]
            return _json_reply(200, {s: self._snapshot(s) for s in symbols})
        raise _HttpError(404, 40410000, "endpoint not found")


# --------------------------------------------------------------------------- CLI


def _seed_price(symbol: str) -> float:
    if symbol in DEFAULT_PRICES:
        return DEFAULT_PRICES[symbol]
    return round(20 + (zlib.crc32(symbol.encode()) % 48_000) / 100, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Loopback Alpaca-compatible server (tests)")
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--stream-port", type=int, default=18081)
    parser.add_argument("--symbols", default="AAPL,MSFT,NVDA,SPY")
    parser.add_argument("--key-id", default="PKTEST")
    parser.add_argument("--secret", default="s3cret")
    parser.add_argument("--cash", type=float, default=100_000.0)
    parser.add_argument("--fault-submit", default="", help="comma list, e.g. 504_after_create")
    parser.add_argument("--fill-delay", type=float, default=0.0)
    parser.add_argument("--partial-fills", action="store_true")
    market = parser.add_mutually_exclusive_group()
    market.add_argument(
        "--always-open",
        action="store_true",
        help="the clock says open and orders fill at any hour (default: as the calendar says)",
    )
    market.add_argument("--closed", action="store_true", help="market closed (no fills)")
    parser.add_argument("--rate-limit", type=int, default=None, help="requests per minute")
    parser.add_argument("--walk-interval", type=float, default=1.0)
    parser.add_argument("--walk-vol", type=float, default=0.0005, help="per-step log stdev")
    parser.add_argument(
        "--seed", type=int, default=7, help="price history and walk (same seed, same market)"
    )
    args = parser.parse_args(argv)

    faults = [k.strip() for k in args.fault_submit.split(",") if k.strip()]
    for kind in faults:
        try:
            _check_kind(kind, SUBMIT_FAULT_KINDS)
        except ValueError as e:
            parser.error(str(e))
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    srv = FakeAlpaca(
        args.key_id,
        args.secret,
        port=args.port,
        stream_port=args.stream_port,
        cash=args.cash,
        prices={s: _seed_price(s) for s in symbols},
        fill_delay=args.fill_delay,
        partial_fills=args.partial_fills,
        rate_limit_per_min=args.rate_limit,
        is_open=True if args.always_open else False if args.closed else None,
        seed=args.seed,
    )
    srv.faults.submit.extend(faults)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    rng = random.Random(args.seed)
    with srv:
        print(f"trading {srv.trading_url} data {srv.data_url} stream {srv.stream_url}", flush=True)
        hours = "always open" if args.always_open else "closed" if args.closed else "calendar"
        state = "open" if srv.is_open else "closed"
        print(f"market {hours} (now {state}); seed {args.seed}", flush=True)
        while not stop.wait(args.walk_interval):
            for symbol in srv.symbols:
                price = srv.price(symbol)
                if price is not None:
                    srv.set_price(symbol, round(price * math.exp(rng.gauss(0, args.walk_vol)), 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
