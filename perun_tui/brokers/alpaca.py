"""The Alpaca broker (paper and live) over the official ``alpaca-py`` SDK.

alpaca-py is synchronous, has no timeouts at all and retries 429/504 three times, 3 s
apart — a ``POST /v2/orders`` included. This adapter makes its calls safe to use from the
event loop and impossible to double:

* every SDK call runs in a worker thread (the broker's own small pool, as
  ``asyncio.to_thread`` would) under an overall deadline
  (``alpaca.request_timeout_s``), and the requests session underneath gets the same
  timeout, so an abandoned thread is released too instead of hanging forever;
* the SDK's own retries are switched off (private ``RESTClient`` attributes ``_retry``,
  ``_retry_codes``, checked at start-up); Perun owns retries;
* a client-side token bucket keeps the account under Alpaca's ~200 requests a minute;
* every failure is classified (``brokers/base.py``): 403/422 → ``BrokerRejected`` with
  Alpaca's own message; 429 and "connection refused" → ``BrokerRetryable``; on an order
  submission a timeout, a 5xx or a connection dropped after sending →
  ``BrokerUnknownOutcome`` (resolve with ``order_by_client_id``, never resubmit blindly);
  on reads and cancels the same failures are retryable, since repeating them is safe.

Market data is batched: ``latest()`` is one snapshots request for all symbols and
``history()`` one bars request (paginated by the SDK, sized to fit one page normally), so
the number of data requests per cycle does not grow with the number of symbols.

Order updates come from ``TradingStream``, run as a task on the caller's loop. The stream
does not replay what was missed while disconnected, so after every (re)connection the open
orders are re-read over REST and any change becomes an update (with a synthesised fill for
quantity filled in the gap).

The SDK is imported lazily (it costs ~0.45 s), when the broker is started or first used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import threading
import time
import warnings
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from perun_tui.brokers.base import (
    BrokerError,
    BrokerRejected,
    BrokerRetryable,
    BrokerUnknownOutcome,
    UnknownSymbol,
)
from perun_tui.brokers.ratelimit import TokenBucket
from perun_tui.config import ConfigError, Settings, mask_secret
from perun_tui.market_hours import TradingCalendar, default_calendar
from perun_tui.models import (
    FINAL_ORDER_STATUSES,
    Account,
    Bar,
    Fill,
    MarketClock,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    Side,
)

__all__ = [
    "AlpacaBroker",
    "BrokerStats",
    "CallKind",
    "alpaca_status",
    "check_urls",
    "classify_error",
    "history_start",
    "order_from_sdk",
    "quote_from_snapshot",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
CallKind = Literal["read", "write", "cancel"]
"""``write`` (order submission) is the only call whose outcome can be unknown."""

NY = ZoneInfo("America/New_York")
_SESSION_OPEN = dtime(9, 30)
_SESSION_MINUTES = 390
_PAPER_HOSTS = frozenset({"paper-api.alpaca.markets"})
_LIVE_HOSTS = frozenset({"api.alpaca.markets"})
_DEFAULT_RETRY_AFTER_S = 2.0
_MAX_CLIENT_ORDER_ID = 128
_WORKERS = 8  # concurrent SDK calls; the daemon gathers at most a handful
_UNKNOWN_SYMBOL_RE = re.compile(
    r"asset\b.*\bnot found|could not find asset|invalid symbol|unknown symbol"
    r"|symbol\b.*\bnot (found|valid)|no such symbol",
    re.IGNORECASE,
)
_TITLE_RE = re.compile(r"<title>\s*(.*?)\s*</title>", re.IGNORECASE | re.DOTALL)


# --------------------------------------------------------------------------- URLs


def check_urls(mode: str, trading_url: str, stream_url: str) -> None:
    """Refuse a configured URL that belongs to the other mode's Alpaca host.

    Paper keys against the live host (or the reverse) fail anyway, but a live-mode Perun
    pointed at the paper host would *look* like it trades real money while it does not —
    and the other way round is worse. Loopback and other hosts are allowed (tests,
    Alpaca-compatible endpoints).
    """
    for key, url, schemes in (
        ("trading_url", trading_url, ("http", "https")),
        ("stream_url", stream_url, ("ws", "wss")),
    ):
        if not url:
            continue
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in schemes:
            raise ConfigError(
                f"alpaca.{key} = {url!r}: expected a {' or '.join(schemes)} URL"
            )
        wrong = _LIVE_HOSTS if mode == "paper" else _PAPER_HOSTS
        if host in wrong:
            other = "live" if mode == "paper" else "paper"
            raise ConfigError(
                f"alpaca.{key} = {url!r} is Alpaca's {other.upper()} endpoint but "
                f'trading.mode is "{mode}"; paper and live endpoints are never mixed. '
                f"Leave alpaca.{key} empty to use Alpaca's {mode} endpoint."
            )


def _trading_override(url: str) -> str | None:
    """The SDK appends ``/v2`` itself: accept a URL given with or without it."""
    if not url:
        return None
    url = url.rstrip("/")
    return url[: -len("/v2")] if url.endswith("/v2") else url


# --------------------------------------------------------------------------- errors


def _api_error_details(exc: Any) -> tuple[int | None, Any, str]:
    """(status, code, message) of an ``APIError`` without trusting its body to be JSON.

    ``APIError.code``/``.message`` parse the body on every access and raise on an HTML
    gateway page or a missing key, so the body is parsed here once, defensively.
    """
    status: int | None = None
    with contextlib.suppress(Exception):
        status = exc.status_code
    text = str(exc)
    code: Any = None
    message = ""
    try:
        data = json.loads(text)
    except (ValueError, TypeError):
        data = None
    if isinstance(data, dict):
        code = data.get("code")
        message = str(data.get("message") or "").strip()
    if not message:
        reason = ""
        with contextlib.suppress(Exception):
            reason = str(exc.response.reason or "")
        match = _TITLE_RE.search(text)
        if match:
            reason = re.sub(r"^\d{3}\s*", "", match.group(1).strip()) or reason
        if status is not None:
            message = f"HTTP {status} {reason}".strip()
        else:
            message = (reason or text.strip()[:200] or "unknown error").strip()
    return status, code, message


def _retry_after(exc: Any) -> float:
    """Seconds to wait after a 429: ``Retry-After`` or Alpaca's ``X-RateLimit-Reset``."""
    headers: Any = {}
    with contextlib.suppress(Exception):
        headers = exc.response.headers or {}
    with contextlib.suppress(TypeError, ValueError):
        value = headers.get("Retry-After")
        if value is not None:
            return max(0.5, min(60.0, float(value)))
    with contextlib.suppress(TypeError, ValueError):
        reset = headers.get("X-RateLimit-Reset")
        if reset is not None:
            return max(0.5, min(60.0, float(reset) - time.time()))
    return _DEFAULT_RETRY_AFTER_S


def _never_sent(exc: BaseException) -> bool:
    """True when requests failed before any byte of the request reached the server."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    if isinstance(exc, requests.exceptions.ProxyError):
        return True
    inner: Any = exc.args[0] if exc.args else None
    if isinstance(inner, MaxRetryError):
        inner = inner.reason
    return isinstance(inner, NewConnectionError | ConnectTimeoutError)


def classify_error(
    exc: BaseException, *, op: str, kind: CallKind, timeout_s: float | None = None
) -> BrokerError:
    """Turn anything the SDK (or requests under it) raised into a classified BrokerError."""
    import requests
    from alpaca.common.exceptions import APIError

    if isinstance(exc, BrokerError):
        return exc
    write = kind == "write"
    if isinstance(exc, APIError):
        status, _code, message = _api_error_details(exc)
        if status == 429:
            wait = _retry_after(exc)
            return BrokerRetryable(
                f"{op}: Alpaca rate limit hit (429): {message}; waiting {wait:.0f}s",
                status=429,
                retry_after_s=wait,
            )
        if status is None or status >= 500:
            text = f"{op}: Alpaca answered {message}"
            if write:
                return BrokerUnknownOutcome(
                    f"{text}; the order may or may not have been placed", status=status
                )
            return BrokerRetryable(text, status=status, retry_after_s=_DEFAULT_RETRY_AFTER_S)
        if status == 401:
            return BrokerRejected(
                f"{op}: Alpaca refused the API keys (401 {message}); check "
                "APCA_API_KEY_ID / APCA_API_SECRET_KEY",
                status=401,
            )
        if status in (400, 404, 422) and _UNKNOWN_SYMBOL_RE.search(message):
            return UnknownSymbol(message, status=status)
        # 403 (buying power, PDT, not fractionable...), 422 (invalid, duplicate client
        # order id), 404...: final, with Alpaca's own words for the user.
        return BrokerRejected(message, status=status)
    if isinstance(exc, requests.exceptions.RequestException):
        if _never_sent(exc):
            return BrokerRetryable(
                f"{op}: cannot connect to Alpaca ({_short(exc)}); nothing was sent",
                retry_after_s=_DEFAULT_RETRY_AFTER_S,
            )
        if isinstance(exc, requests.exceptions.Timeout):
            limit = f" within {timeout_s:g}s" if timeout_s else ""
            text = f"{op}: no answer from Alpaca{limit}"
        elif isinstance(exc, requests.exceptions.ConnectionError):
            text = f"{op}: connection to Alpaca dropped after the request was sent"
        elif isinstance(exc, ValueError):
            text = f"{op}: Alpaca's reply could not be read (not JSON)"
        else:
            text = f"{op}: {_short(exc)}"
        if write:
            return BrokerUnknownOutcome(f"{text}; the order may or may not have been placed")
        return BrokerRetryable(text, retry_after_s=_DEFAULT_RETRY_AFTER_S)
    if isinstance(exc, ValueError | TypeError | KeyError):
        # a reply that does not fit the SDK's models (pydantic ValidationError is a
        # ValueError): the request was answered, so for a submit the order may exist.
        text = f"{op}: Alpaca's reply could not be understood ({_short(exc)})"
        if write:
            return BrokerUnknownOutcome(text)
        return BrokerRetryable(text, retry_after_s=_DEFAULT_RETRY_AFTER_S)
    if write:
        return BrokerUnknownOutcome(f"{op}: {_short(exc)}")
    return BrokerError(f"{op}: {_short(exc)}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # requests nests urllib3 reprs; the innermost reason is the readable part
    match = re.search(r"\[Errno [^\]]+\] ([^'\")]+)", text)
    if match:
        return match.group(1).strip()
    return text if len(text) <= 160 else text[:157] + "..."


def _deadline_error(op: str, kind: CallKind, timeout_s: float) -> BrokerError:
    text = f"{op}: no answer from Alpaca within {timeout_s:g}s"
    if kind == "write":
        return BrokerUnknownOutcome(f"{text}; the order may or may not have been placed")
    return BrokerRetryable(text, retry_after_s=_DEFAULT_RETRY_AFTER_S)


# --------------------------------------------------------------------------- mapping


def _value(x: Any) -> str:
    """The string value of an SDK enum (or the string itself)."""
    return str(getattr(x, "value", x) or "")


def _f(x: Any, default: float = 0.0) -> float:
    if x is None or x == "":
        return default
    try:
        value = float(x)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


def _opt_f(x: Any) -> float | None:
    if x is None or x == "":
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    if ts.tzinfo is None or ts.utcoffset() is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


_OPEN_STATUSES = frozenset(
    {
        "new",
        "accepted",
        "pending_new",
        "accepted_for_bidding",
        "pending_review",
        "pending_cancel",
        "pending_replace",
        "done_for_day",
        "stopped",
        "suspended",
        "held",
        "calculated",
    }
)
_FINAL_MAP = {
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
    "replaced": OrderStatus.CANCELED,  # this order ended; its replacement is a new order
}


def alpaca_status(status: str, filled_qty: float, qty: float | None) -> OrderStatus:
    """Map Alpaca's order status to ours.

    Every not-yet-final Alpaca state (accepted, pending_new, new, done_for_day, held...)
    is ``NEW``, or ``PARTIALLY_FILLED`` once something has filled. ``calculated`` with
    the whole quantity filled is ``FILLED``.
    """
    status = status.lower()
    if status == "partially_filled":
        return OrderStatus.PARTIALLY_FILLED
    if status in _FINAL_MAP:
        return _FINAL_MAP[status]
    if status == "calculated" and qty and filled_qty >= qty - 1e-9:
        return OrderStatus.FILLED
    if filled_qty > 0:
        return OrderStatus.PARTIALLY_FILLED
    return OrderStatus.NEW


_STATUS_REASON = {
    "replaced": "replaced by another order",
    "done_for_day": "done for the day",
    "pending_cancel": "cancel requested",
    "suspended": "suspended by Alpaca",
    "held": "held by Alpaca",
}


def order_from_sdk(o: Any) -> Order:
    """An alpaca-py ``Order`` as our ``Order`` (never raises on unusual order types)."""
    raw_status = _value(o.status)
    qty = _opt_f(o.qty)
    filled = _f(o.filled_qty)
    status = alpaca_status(raw_status, filled, qty)
    raw_type = _value(o.type or o.order_type) or "market"
    limit_price = _opt_f(o.limit_price)
    if raw_type == "limit":
        otype = OrderType.LIMIT
    elif raw_type == "market":
        otype = OrderType.MARKET
    else:  # stop / stop_limit / trailing_stop placed outside Perun
        otype = OrderType.LIMIT if limit_price is not None else OrderType.MARKET
    reason = _STATUS_REASON.get(raw_status, "")
    if raw_type not in ("market", "limit"):
        reason = (reason + "; " if reason else "") + f"{raw_type} order"
    if status is OrderStatus.REJECTED and not reason:
        reason = "rejected by Alpaca"
    avg = _opt_f(o.filled_avg_price)
    return Order(
        client_order_id=str(o.client_order_id),
        symbol=str(o.symbol or ""),
        side=Side.SELL if _value(o.side) == "sell" else Side.BUY,
        qty=qty,
        notional=_opt_f(o.notional),
        type=otype,
        limit_price=limit_price,
        status=status,
        broker_order_id=str(o.id),
        filled_qty=filled,
        filled_avg_price=avg if avg else None,  # Alpaca may say 0 before any fill
        reason=reason,
        created_at=_utc(o.created_at),
        updated_at=_utc(o.updated_at),
    )


def quote_from_snapshot(symbol: str, snap: Any) -> Quote | None:
    """Latest quote + last trade + latest minute bar of an alpaca-py ``Snapshot``."""
    quote = snap.latest_quote
    trade = snap.latest_trade
    minute = snap.minute_bar
    daily = snap.daily_bar
    bid = _f(getattr(quote, "bid_price", None))
    ask = _f(getattr(quote, "ask_price", None))
    last = _f(getattr(trade, "price", None))
    if last <= 0:
        last = _f(getattr(minute, "close", None)) or _f(getattr(daily, "close", None))
    if last <= 0 and bid > 0 and ask > 0:
        last = (bid + ask) / 2
    if last <= 0:
        return None
    stamps = [
        _utc(getattr(x, "timestamp", None)) for x in (trade, quote, minute) if x is not None
    ]
    known = [s for s in stamps if s is not None]
    ts = max(known) if known else datetime.now(UTC)
    volume = _f(getattr(minute, "volume", None)) if minute is not None else 0.0
    return Quote(symbol=symbol, ts=ts, bid=bid, ask=ask, last=last, volume=volume)


def _bar_from_sdk(symbol: str, b: Any) -> Bar:
    ts = _utc(b.timestamp)
    assert ts is not None
    return Bar(
        symbol=symbol,
        ts=ts,
        open=_f(b.open),
        high=_f(b.high),
        low=_f(b.low),
        close=_f(b.close),
        volume=_f(b.volume),
    )


# --------------------------------------------------------------------------- history


def _timeframe_plan(minutes: int) -> tuple[int, str, int]:
    """(amount, unit, group): Alpaca's timeframe to ask for and how many to merge.

    Alpaca knows 1–59 Min, 1–23 Hour and 1 Day. Other cycle lengths (90, 390...) are built
    from the largest Alpaca timeframe that divides them.
    """
    if minutes == 1440:
        return 1, "Day", 1
    if not 1 <= minutes <= _SESSION_MINUTES:
        raise ValueError(
            f"timeframe of {minutes} minutes is not supported (1–390 minutes, or 1440)"
        )
    if minutes < 60:
        return minutes, "Min", 1
    if minutes % 60 == 0:
        return minutes // 60, "Hour", 1
    base = max(d for d in range(1, 60) if minutes % d == 0)
    return base, "Min", minutes // base


def history_start(
    now: datetime,
    minutes: int,
    n: int,
    is_session_day: Callable[[date], bool],
    *,
    margin: float = 1.2,
    slack_sessions: int = 0,
) -> datetime:
    """Where a bars request must start to hold about ``n * margin`` regular-session bars.

    Sized tightly (weekends and, when known, holidays skipped) so 50 symbols' history fits
    in one 10,000-bar page; the margin covers sparse IEX bars and early closes, and
    ``slack_sessions`` whole sessions more cover holidays the caller could not rule out.
    """
    now_ny = now.astimezone(NY)
    day = now_ny.date()
    daily = minutes >= 1440
    per_session = 1 if daily else math.ceil(_SESSION_MINUTES / minutes)
    need = math.ceil(n * margin) + 1 + slack_sessions * per_session
    remaining = need
    for _ in range(20_000):
        if is_session_day(day):
            open_at = datetime.combine(day, _SESSION_OPEN, NY)
            if day == now_ny.date():
                elapsed = min(max((now_ny - open_at).total_seconds() / 60, 0.0), 390.0)
                have = (1 if elapsed > 0 else 0) if daily else math.ceil(elapsed / minutes)
            else:
                have = per_session
            if have >= remaining and not daily and day != now_ny.date():
                close_at = open_at + timedelta(minutes=_SESSION_MINUTES)
                start = close_at - timedelta(minutes=remaining * minutes)
                return max(start, open_at - timedelta(minutes=minutes)).astimezone(UTC)
            remaining -= have
            if remaining <= 0:
                break
        day -= timedelta(days=1)
    return datetime.combine(day, dtime(0, 0), NY).astimezone(UTC)


def _in_session(ts: datetime, minutes: int) -> bool:
    """Whether a bar starting at ``ts`` overlaps the regular session (9:30–16:00 ET)."""
    local = ts.astimezone(NY)
    start = local.hour * 60 + local.minute
    return start + minutes > 570 and start < 960


def _merge_bars(bars: list[Bar], minutes: int) -> list[Bar]:
    """Merge bars into ``minutes``-long buckets counted from each session's open."""
    out: list[Bar] = []
    key: tuple[date, int] | None = None
    for bar in bars:
        local = bar.ts.astimezone(NY)
        k = (local.date(), (local.hour * 60 + local.minute - 570) // minutes)
        if out and k == key:
            last = out[-1]
            out[-1] = last.model_copy(
                update={
                    "high": max(last.high, bar.high),
                    "low": min(last.low, bar.low),
                    "close": bar.close,
                    "volume": last.volume + bar.volume,
                }
            )
        else:
            out.append(bar)
            key = k
    return out


# --------------------------------------------------------------------------- stream state


@dataclass
class _Seen:
    status: OrderStatus
    filled_qty: float
    avg_price: float | None
    broker_order_id: str | None


_RANK = {
    OrderStatus.INTENT: 0,
    OrderStatus.UNKNOWN: 0,
    OrderStatus.NEW: 1,
    OrderStatus.PARTIALLY_FILLED: 2,
}


def _rank(status: OrderStatus) -> int:
    return _RANK.get(status, 3)


class _StreamLedger:
    """What the order-update consumer has been told, per client order id.

    Stream events carry Alpaca's execution ids; fills that happened while the stream was
    down are only visible as a larger ``filled_qty`` in a REST re-read. The ledger keeps
    the filled quantity already reported per order (the watermark) so a REST re-read
    reports exactly the gap — once — and a late stream event for a fill the re-read
    already covered is passed on without its fill.
    """

    def __init__(self, max_orders: int = 5000) -> None:
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._max = max_orders

    def _put(self, cid: str, seen: _Seen) -> None:
        self._seen[cid] = seen
        self._seen.move_to_end(cid)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)

    def track(self, order: Order) -> None:
        """An order Perun placed or looked up: check it after the next reconnect."""
        if order.client_order_id in self._seen or order.status in FINAL_ORDER_STATUSES:
            return
        self._put(
            order.client_order_id,
            _Seen(OrderStatus.INTENT, 0.0, None, order.broker_order_id),
        )

    def pending(self) -> list[tuple[str, str | None]]:
        """(client order id, broker order id) of tracked orders not known to be final."""
        return [
            (cid, s.broker_order_id)
            for cid, s in self._seen.items()
            if s.status not in FINAL_ORDER_STATUSES
        ]

    def from_stream(self, update: OrderUpdate) -> OrderUpdate:
        order = update.order
        seen = self._seen.get(order.client_order_id)
        fill = update.fill
        if seen is not None and fill is not None and order.filled_qty <= seen.filled_qty + 1e-9:
            fill = None  # already reported by a REST re-read
        if seen is None or (
            order.filled_qty >= seen.filled_qty - 1e-9 and _rank(order.status) >= _rank(seen.status)
        ):
            self._put(order.client_order_id, self._state(order, seen))
        if fill is update.fill:
            return update
        return update.model_copy(update={"fill": fill})

    def from_rest(self, order: Order, *, baseline: bool) -> OrderUpdate | None:
        """An update for a REST view of an order, or None when nothing changed.

        ``baseline``: an untracked order seen on the first connection — report its state
        but not its past fills (they happened before this process was watching).
        """
        cid = order.client_order_id
        seen = self._seen.get(cid)
        if seen is None:
            self._put(cid, self._state(order, None))
            if baseline:
                return OrderUpdate(event="restated", order=order)
            return OrderUpdate(event="restated", order=order, fill=self._gap_fill(order, None))
        if order.filled_qty < seen.filled_qty - 1e-9 or _rank(order.status) < _rank(seen.status):
            return None  # older than what the stream already said
        fill = self._gap_fill(order, seen)
        changed = fill is not None or order.status is not seen.status
        self._put(cid, self._state(order, seen))
        if not changed:
            return None
        if fill is not None:
            event = "fill" if order.status is OrderStatus.FILLED else "partial_fill"
        else:
            event = {
                OrderStatus.CANCELED: "canceled",
                OrderStatus.EXPIRED: "expired",
                OrderStatus.REJECTED: "rejected",
                OrderStatus.NEW: "new",
            }.get(order.status, "restated")
        return OrderUpdate(event=event, order=order, fill=fill)

    @staticmethod
    def _state(order: Order, seen: _Seen | None) -> _Seen:
        return _Seen(
            status=order.status,
            filled_qty=max(order.filled_qty, seen.filled_qty if seen else 0.0),
            avg_price=order.filled_avg_price or (seen.avg_price if seen else None),
            broker_order_id=order.broker_order_id or (seen.broker_order_id if seen else None),
        )

    @staticmethod
    def _gap_fill(order: Order, seen: _Seen | None) -> Fill | None:
        before = seen.filled_qty if seen else 0.0
        delta = round(order.filled_qty - before, 9)
        if delta <= 1e-9 or not order.filled_avg_price:
            return None
        price = order.filled_avg_price
        if seen is not None and seen.avg_price and before > 0:
            gap_value = order.filled_avg_price * order.filled_qty - seen.avg_price * before
            if gap_value > 0:
                price = round(gap_value / delta, 6)
        return Fill(
            # stable: the same gap seen twice gets the same id, so it is stored once
            fill_id=f"rest:{order.broker_order_id or order.client_order_id}:{order.filled_qty:.9g}",
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=delta,
            price=price,
            ts=order.updated_at or datetime.now(UTC),
        )


# --------------------------------------------------------------------------- the broker


@dataclass
class BrokerStats:
    """Counters for the header, ``perun doctor`` and the benchmarks."""

    calls: Counter[str] = field(default_factory=Counter)  # wrapper calls by operation
    http_requests: int = 0  # HTTP requests actually sent (pages included)
    errors: Counter[str] = field(default_factory=Counter)  # by error kind
    stream_connects: int = 0
    stream_resyncs: int = 0
    stream_events: int = 0
    rate_limited_s: float = 0.0


def _make_timeout_adapter(timeout: tuple[float, float]) -> Any:
    """A requests adapter that applies ``timeout`` when the caller gave none (the SDK never
    does), so a worker thread cannot hang forever on a silent server."""
    from requests.adapters import HTTPAdapter

    class _TimeoutAdapter(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            return super().send(request, *args, **kwargs)

    return _TimeoutAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)


class AlpacaBroker:
    """The Broker protocol over alpaca-py, for ``paper`` and ``live`` mode.

    Construct it with the validated settings; ``mode`` defaults to ``trading.mode``.
    Construction is cheap and does not touch the network or import the SDK; ``start()``
    checks the keys (``GET /v2/account``) and opens the order-update stream.
    """

    def __init__(
        self,
        settings: Settings,
        mode: str | None = None,
        *,
        stream: bool = True,
        calendar: TradingCalendar | None = None,
        now: Callable[[], datetime] | None = None,
        reconnect_backoff_s: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        mode = mode or settings.trading.mode
        if mode not in ("paper", "live"):
            raise ValueError(f'AlpacaBroker is for "paper" or "live" mode, not {mode!r}')
        cfg = settings.alpaca
        check_urls(mode, cfg.trading_url, cfg.stream_url)
        self.mode = mode
        self.name = f"alpaca-{mode}"
        self.settings = settings
        self.feed = cfg.feed
        self.timeout_s = float(cfg.request_timeout_s)
        self._key = cfg.key_id.get_secret_value().strip()
        self._secret = cfg.secret_key.get_secret_value().strip()
        self._trading_url = _trading_override(cfg.trading_url)
        self._data_url = _trading_override(cfg.data_url)
        self._stream_url = cfg.stream_url or None
        self._use_stream = stream
        self._calendar = calendar
        self._now = now or (lambda: datetime.now(UTC))
        self._backoff = reconnect_backoff_s
        self.limiter = TokenBucket(cfg.max_requests_per_minute)
        self.stats = BrokerStats()
        self._trading: Any = None
        self._data: Any = None
        self._clients_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._http_lock = threading.Lock()
        self._ledger = _StreamLedger()
        self._queue: asyncio.Queue[OrderUpdate | None] | None = None
        self._stream: Any = None
        self._stream_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._resync_lock: asyncio.Lock | None = None
        self._clock_note: str | None = None
        self._started = False
        self._closed = False
        # off, connecting, connected, reconnecting, disconnected, unauthorized, closed
        self.stream_state = "off"
        self.account_status: str | None = None

    # ------------------------------------------------------------------ plumbing

    @property
    def keys_present(self) -> bool:
        return bool(self._key and self._secret)

    def _missing_keys_message(self) -> str:
        return (
            f"Alpaca API keys are not set for {self.mode} mode: set APCA_API_KEY_ID and "
            "APCA_API_SECRET_KEY (in the environment or .env), or alpaca.key_id / "
            f"alpaca.secret_key. Get {self.mode} keys from the Alpaca dashboard "
            f"({'Paper' if self.mode == 'paper' else 'Live'} Trading → API Keys)."
        )

    def _count_response(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        with self._http_lock:
            self.stats.http_requests += 1
        return response

    def _harden(self, client: Any) -> None:
        """No SDK retries (Perun owns them), a timeout on every HTTP request."""
        for attr in ("_retry", "_retry_codes", "_session"):
            if not hasattr(client, attr):
                raise RuntimeError(
                    f"alpaca-py changed its internals ({type(client).__name__}.{attr} is "
                    "gone): Perun cannot switch off the SDK's retries of order submissions. "
                    "Install the alpaca-py version Perun was tested with (0.44)."
                )
        client._retry = 0  # one attempt: `while retry >= 0` runs once, no RetryException
        client._retry_codes = []
        client._retry_wait = 0
        session = client._session
        adapter = _make_timeout_adapter((min(self.timeout_s, 5.0), self.timeout_s))
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.hooks["response"].append(self._count_response)

    def _clients(self) -> tuple[Any, Any]:
        if not self.keys_present:
            raise ConfigError(self._missing_keys_message())
        with self._clients_lock:
            if self._trading is None:
                from alpaca.data.historical.stock import StockHistoricalDataClient
                from alpaca.trading.client import TradingClient

                trading = TradingClient(
                    self._key,
                    self._secret,
                    paper=self.mode == "paper",
                    url_override=self._trading_url,
                )
                data = StockHistoricalDataClient(
                    self._key, self._secret, url_override=self._data_url
                )
                self._harden(trading)
                self._harden(data)
                self._trading, self._data = trading, data
        return self._trading, self._data

    def _pool(self) -> ThreadPoolExecutor:
        """The broker's own worker threads (like ``asyncio.to_thread``, but a call stuck
        until its session timeout cannot starve other users of the default executor)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=_WORKERS, thread_name_prefix=f"perun-{self.name}"
            )
        return self._executor

    async def _sdk(self) -> tuple[Any, Any]:
        """The clients, built in a thread the first time (importing alpaca-py takes ~0.45 s
        and must not stall the event loop)."""
        if self._trading is None:
            await asyncio.to_thread(self._clients)
        return self._clients()

    @property
    def trading_client(self) -> Any:
        """The hardened alpaca-py ``TradingClient`` (for benchmarks and diagnostics)."""
        return self._clients()[0]

    @property
    def data_client(self) -> Any:
        return self._clients()[1]

    async def _call(
        self, op: str, kind: CallKind, fn: Callable[..., T], *args: Any, subject: str = ""
    ) -> T:
        """Run one SDK call off the loop, under the rate limit and a deadline.

        ``op`` names the operation (counted in ``stats.calls``); ``subject`` (an order id)
        only goes into error messages.
        """
        self.stats.calls[op] += 1
        if subject:
            op = f"{op} {subject}"
        if self._closed:
            raise BrokerError(f"{op}: the Alpaca broker is closed")
        waited = await self.limiter.acquire()
        self.stats.rate_limited_s += waited
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool(), fn, *args)
        try:
            done, _ = await asyncio.wait({future}, timeout=self.timeout_s)
        finally:
            if not future.done():
                future.cancel()  # the thread itself ends at the session timeout
        if not done:
            self.stats.errors["deadline"] += 1
            raise _deadline_error(op, kind, self.timeout_s)
        try:
            return future.result()
        except Exception as exc:
            err = classify_error(exc, op=op, kind=kind, timeout_s=self.timeout_s)
            self.stats.errors[err.kind] += 1
            if isinstance(err, BrokerRetryable) and err.status == 429:
                self.limiter.pause(err.retry_after_s)
            raise err from exc

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Check the keys against the account, then open the order-update stream.

        Raises ``ConfigError`` (exit 2) when keys are missing or Alpaca refuses them for
        this mode; network trouble surfaces as ``BrokerRetryable``.
        """
        if self._started:
            return
        if not self.keys_present:
            raise ConfigError(self._missing_keys_message())
        trading, _ = await self._sdk()
        try:
            acct = await self._call("account", "read", trading.get_account)
        except BrokerRejected as exc:
            if exc.status in (401, 403):
                raise ConfigError(self._keys_rejected_message(exc)) from None
            raise
        self.account_status = _value(acct.status)
        if self.account_status and self.account_status != "ACTIVE":
            log.warning("Alpaca %s account status is %s", self.mode, self.account_status)
        self._started = True
        self._closed = False
        if self._use_stream:
            await self._start_stream()

    def _keys_rejected_message(self, exc: BrokerError) -> str:
        host = self._trading_url or (
            "paper-api.alpaca.markets" if self.mode == "paper" else "api.alpaca.markets"
        )
        other = "live" if self.mode == "paper" else "paper"
        return (
            f"Alpaca rejected the API keys for {self.mode} mode at {host} "
            f"(HTTP {exc.status}). Paper and live accounts have different keys: use the "
            f"{self.mode} keys (these may be {other} keys, revoked, or mistyped). "
            f"Key in use: {mask_secret(self._key)}."
        )

    async def close(self) -> None:
        """Stop the stream and release the HTTP sessions; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.stream_state = "closed"
        stream, task = self._stream, self._stream_task
        self._stream, self._stream_task = None, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream._should_run = False
        for t in [*([task] if task else []), *self._tasks]:
            t.cancel()
        for t in [*([task] if task else []), *self._tasks]:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(t, 2.0)
        self._tasks.clear()
        if stream is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stream.close(), 2.0)
        for client in (self._trading, self._data):
            if client is not None:
                with contextlib.suppress(Exception):
                    client._session.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._queue is not None:
            self._queue.put_nowait(None)

    # ------------------------------------------------------------------ account

    async def account(self) -> Account:
        trading, _ = await self._sdk()
        a = await self._call("account", "read", trading.get_account)
        self.account_status = _value(a.status) or None
        equity = _f(a.equity)
        return Account(
            cash=_f(a.cash),
            equity=equity,
            buying_power=_f(a.buying_power),
            currency=str(a.currency or "USD"),
            last_equity=_opt_f(a.last_equity),
            status=self.account_status or "ACTIVE",
        )

    async def positions(self) -> list[Position]:
        trading, _ = await self._sdk()
        raw = await self._call("positions", "read", trading.get_all_positions)
        out: list[Position] = []
        for p in raw:
            qty = _f(p.qty)
            if _value(p.side) == "short" and qty > 0:
                qty = -qty
            avg = _f(p.avg_entry_price)
            price = _f(p.current_price)
            if price <= 0 and qty:
                price = _f(p.market_value) / qty
            out.append(
                Position(symbol=str(p.symbol), qty=qty, avg_price=avg, market_price=price or avg)
            )
        return out

    async def open_orders(self) -> list[Order]:
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        trading, _ = await self._sdk()
        request = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500)
        raw = await self._call("open_orders", "read", trading.get_orders, request)
        return [order_from_sdk(o) for o in raw]

    async def clock(self) -> MarketClock:
        trading, _ = await self._sdk()
        c = await self._call("clock", "read", trading.get_clock)
        ts, next_open, next_close = _utc(c.timestamp), _utc(c.next_open), _utc(c.next_close)
        assert ts is not None and next_open is not None and next_close is not None
        clock = MarketClock(
            ts=ts, is_open=bool(c.is_open), next_open=next_open, next_close=next_close
        )
        try:
            self._clock_note = await asyncio.to_thread(self._compare_clock, clock)
        except Exception as exc:  # the local calendar is advisory; never fail the call
            log.debug("local calendar comparison failed: %s", exc)
        return clock

    def _compare_clock(self, clock: MarketClock) -> str | None:
        calendar = self._calendar or default_calendar()
        local = calendar.status(clock.ts)
        problems: list[str] = []
        if local.is_open != clock.is_open:
            problems.append(
                f"Alpaca says the market is {'open' if clock.is_open else 'closed'}, the "
                f"local NYSE calendar says {'open' if local.is_open else 'closed'}"
            )
        for what, theirs, ours in (
            ("next open", clock.next_open, local.next_open),
            ("next close", clock.next_close, local.next_close),
        ):
            if abs((theirs - ours).total_seconds()) > 90:
                problems.append(
                    f"{what}: Alpaca {theirs.astimezone(NY):%a %Y-%m-%d %H:%M} ET, local "
                    f"{ours.astimezone(NY):%a %Y-%m-%d %H:%M} ET"
                )
        if not problems:
            return None
        return "; ".join(problems) + " — trusting Alpaca's clock"

    def clock_disagreement(self) -> str | None:
        """How Alpaca's clock and the local NYSE calendar disagreed at the last ``clock()``
        (None when they agree). Perun trusts the broker either way."""
        return self._clock_note

    async def calendar(self, start: date, end: date) -> list[tuple[date, datetime, datetime]]:
        """Alpaca's sessions in ``[start, end]``: (date, open UTC, close UTC)."""
        from alpaca.trading.requests import GetCalendarRequest

        trading, _ = await self._sdk()
        request = GetCalendarRequest(start=start, end=end)
        raw = await self._call("calendar", "read", trading.get_calendar, request)
        out = []
        for c in raw:
            opens = c.open.replace(tzinfo=NY) if c.open.tzinfo is None else c.open
            closes = c.close.replace(tzinfo=NY) if c.close.tzinfo is None else c.close
            out.append((c.date, opens.astimezone(UTC), closes.astimezone(UTC)))
        return out

    # ------------------------------------------------------------------ market data

    async def latest(self, symbols: list[str]) -> dict[str, Quote]:
        """Latest quote, last trade and minute-bar volume for all symbols: one request."""
        if not symbols:
            return {}
        from alpaca.data.requests import StockSnapshotRequest

        _, data = await self._sdk()
        request = StockSnapshotRequest(symbol_or_symbols=list(symbols), feed=self.feed)
        raw = await self._call("latest", "read", data.get_stock_snapshot, request)
        out: dict[str, Quote] = {}
        for symbol, snap in raw.items():
            quote = quote_from_snapshot(symbol, snap)
            if quote is not None:
                out[symbol] = quote
        return out

    def _is_session_day(self, day: date) -> bool:
        if day.weekday() >= 5:
            return False
        calendar = self._calendar or default_calendar()
        window = calendar.window  # use the NYSE schedule only when it is already built
        margin = timedelta(days=10)  # TradingCalendar rebuilds closer to its window's edges
        if window is not None and window[0] + margin <= day <= window[1] - margin:
            return calendar.session_on(day) is not None
        return True

    async def history(self, symbols: list[str], timeframe_minutes: int, n: int) -> (
        dict[str, list[Bar]]
    ):
        """Up to ``n`` regular-session bars per symbol, oldest first: one batched request
        (the SDK follows page tokens; the window is sized to fit one page normally)."""
        if not symbols or n <= 0:
            return {}
        from alpaca.data.requests import StockBarsRequest
        from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

        amount, unit, group = _timeframe_plan(timeframe_minutes)
        unit_enum = {
            "Min": TimeFrameUnit.Minute,
            "Hour": TimeFrameUnit.Hour,
            "Day": TimeFrameUnit.Day,
        }[unit]
        calendar = self._calendar or default_calendar()
        # without the NYSE schedule (not built yet) a holiday may hide in the window
        slack = 0 if calendar.window is not None else (2 if unit == "Day" else 1)
        start = history_start(
            self._now(), timeframe_minutes, n, self._is_session_day, slack_sessions=slack
        )
        request = StockBarsRequest(
            symbol_or_symbols=list(symbols),
            timeframe=TimeFrame(amount, unit_enum),
            start=start,
            feed=self.feed,
        )
        _, data = await self._sdk()
        before = self.stats.http_requests
        barset = await self._call("history", "read", data.get_stock_bars, request)
        pages = self.stats.http_requests - before
        if pages > 1:
            self.limiter.debit(pages - 1)  # the extra pages count against the budget too
        bar_minutes = amount * (60 if unit == "Hour" else 1)
        out: dict[str, list[Bar]] = {}
        for symbol, raw in (barset.data or {}).items():
            bars = [_bar_from_sdk(symbol, b) for b in raw]
            bars.sort(key=lambda b: b.ts)
            if unit != "Day":
                bars = [b for b in bars if _in_session(b.ts, bar_minutes)]
            if group > 1:
                bars = _merge_bars(bars, timeframe_minutes)
            if bars:
                out[symbol] = bars[-n:]
        return out

    # ------------------------------------------------------------------ orders

    def _sdk_request(self, req: OrderRequest) -> Any:
        """Validate against Alpaca's rules locally and build the SDK request."""
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

        cid = req.client_order_id
        if not cid or len(cid) > _MAX_CLIENT_ORDER_ID:
            raise BrokerRejected(f"client_order_id must be 1–128 characters, got {len(cid)}")
        if (req.qty is None) == (req.notional is None):
            raise BrokerRejected(f"{req.symbol}: exactly one of qty or notional must be set")
        amount = req.qty if req.qty is not None else req.notional
        if amount is None or not math.isfinite(amount) or amount <= 0:
            raise BrokerRejected(f"{req.symbol}: quantity must be a positive number")
        tif = req.time_in_force.lower()
        try:
            time_in_force = TimeInForce(tif)
        except ValueError:
            raise BrokerRejected(f"{req.symbol}: unknown time_in_force {tif!r}") from None
        fractional = req.notional is not None or (
            req.qty is not None and abs(req.qty - round(req.qty)) > 1e-9
        )
        if fractional and (req.type is not OrderType.MARKET or tif != "day"):
            raise BrokerRejected(
                f"{req.symbol}: fractional and notional orders must be market orders with "
                "time_in_force day (Alpaca's rule)"
            )
        common: dict[str, Any] = {
            "symbol": req.symbol,
            "side": OrderSide.BUY if req.side is Side.BUY else OrderSide.SELL,
            "time_in_force": time_in_force,
            "client_order_id": cid,
        }
        if req.notional is not None:
            common["notional"] = round(req.notional, 2)
        else:
            assert req.qty is not None
            common["qty"] = round(req.qty) if not fractional else round(req.qty, 9)
        try:
            if req.type is OrderType.LIMIT:
                if req.limit_price is None or req.limit_price <= 0:
                    raise BrokerRejected(f"{req.symbol}: a limit order needs a limit price")
                # Alpaca refuses sub-penny prices: 2 decimals at $1 and above, else 4
                places = 2 if req.limit_price >= 1 else 4
                return LimitOrderRequest(**common, limit_price=round(req.limit_price, places))
            return MarketOrderRequest(**common)
        except ValueError as exc:  # the SDK's own validation
            raise BrokerRejected(f"{req.symbol}: invalid order: {exc}") from None

    async def submit(self, request: OrderRequest) -> Order:
        """Place one order. Never retried here: on ``BrokerUnknownOutcome`` look it up."""
        sdk_request = self._sdk_request(request)
        trading, _ = await self._sdk()
        raw = await self._call(
            "submit", "write", trading.submit_order, sdk_request,
            subject=request.client_order_id,
        )
        order = order_from_sdk(raw)
        order.signal_id = request.signal_id
        self._ledger.track(order)
        return order

    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        trading, _ = await self._sdk()
        try:
            raw = await self._call(
                "lookup", "read", trading.get_order_by_client_id, client_order_id,
                subject=client_order_id,
            )
        except BrokerRejected as exc:
            if exc.status == 404:
                return None
            raise
        order = order_from_sdk(raw)
        self._ledger.track(order)
        return order

    async def cancel(self, broker_order_id: str) -> None:
        trading, _ = await self._sdk()
        await self._call(
            "cancel", "cancel", trading.cancel_order_by_id, broker_order_id,
            subject=broker_order_id,
        )

    # ------------------------------------------------------------------ order updates

    def _updates_queue(self) -> asyncio.Queue[OrderUpdate | None]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    async def order_updates(self) -> AsyncIterator[OrderUpdate]:
        """Order updates from the stream plus REST re-reads after each reconnect.

        One consumer (the daemon); the iterator ends when the broker is closed.
        """
        queue = self._updates_queue()
        while True:
            item = await queue.get()
            if item is None:
                queue.put_nowait(None)  # let any other reader end too
                return
            yield item

    def _emit(self, update: OrderUpdate | None) -> None:
        if update is not None and not self._closed:
            self._updates_queue().put_nowait(update)

    async def _start_stream(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # websockets.legacy
            from alpaca.trading.stream import TradingStream

        stream_cls: Any = TradingStream  # its url_override is typed str, but None means default
        self._updates_queue()
        self._resync_lock = asyncio.Lock()
        stream: Any = stream_cls(
            self._key,
            self._secret,
            paper=self.mode == "paper",
            url_override=self._stream_url,
            websocket_params={
                "ping_interval": 10,
                "ping_timeout": 20,  # SDK default 180 s: a dead link would go unseen
                "max_queue": 1024,
                "open_timeout": self.timeout_s,
                "close_timeout": 2,  # default 10 s would hold up shutdown
            },
        )
        if hasattr(stream, "_reconnect_min_backoff"):
            stream._reconnect_min_backoff, stream._reconnect_max_backoff = self._backoff
        original_start = stream._start_ws

        async def start_ws() -> None:
            self.stream_state = "connecting" if not self.stats.stream_connects else (
                "reconnecting"
            )
            # connect + authenticate + listen under a deadline: the SDK waits forever
            # for the authorization reply
            try:
                await asyncio.wait_for(original_start(), self.timeout_s)
            except ValueError:  # the SDK's "failed to authenticate"
                self.stream_state = "unauthorized"
                raise
            except Exception:
                self.stream_state = "disconnected"
                raise
            self._on_stream_connected()

        stream._start_ws = start_ws
        stream.subscribe_trade_updates(self._on_trade_update)
        self._stream = stream
        self.stream_state = "connecting"
        self._stream_task = asyncio.create_task(
            stream._run_forever(), name=f"{self.name}-trade-updates"
        )

    def _on_stream_connected(self) -> None:
        self.stats.stream_connects += 1
        self.stream_state = "connected"
        first = self.stats.stream_connects == 1
        task = asyncio.create_task(self._resync(first), name=f"{self.name}-resync")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_trade_update(self, data: Any) -> None:
        """Stream handler: must never raise (the SDK would swallow it anyway)."""
        try:
            self.stats.stream_events += 1
            order = order_from_sdk(data.order)
            event = _value(data.event)
            fill: Fill | None = None
            qty = abs(_f(data.qty))
            price = _f(data.price)
            if event in ("fill", "partial_fill") and qty > 0 and price > 0:
                fill_id = (
                    str(data.execution_id)
                    if data.execution_id
                    else f"{order.broker_order_id}:{event}:{order.filled_qty:.9g}"
                )
                fill = Fill(
                    fill_id=fill_id,
                    client_order_id=order.client_order_id,
                    symbol=order.symbol,
                    side=order.side,
                    qty=qty,
                    price=price,
                    ts=_utc(data.timestamp) or datetime.now(UTC),
                )
            update = OrderUpdate(event=event, order=order, fill=fill)
            self._emit(self._ledger.from_stream(update))
        except Exception:
            log.exception("could not handle an Alpaca trade update")

    async def _resync(self, first: bool) -> None:
        """After a (re)connect: re-read open orders and report what changed meanwhile."""
        assert self._resync_lock is not None
        async with self._resync_lock:
            orders: list[Order] | None = None
            for attempt in range(6):
                try:
                    orders = await self.open_orders()
                    break
                except BrokerError as exc:
                    log.warning("re-reading open orders after reconnect failed: %s", exc)
                    await asyncio.sleep(min(2.0**attempt, 15.0))
            if orders is None:
                return
            open_ids = {o.client_order_id for o in orders}
            for order in orders:
                self._emit(self._ledger.from_rest(order, baseline=first))
            trading, _ = await self._sdk()
            for cid, broker_id in self._ledger.pending():
                if cid in open_ids or not broker_id:
                    continue
                try:
                    raw = await self._call(
                        "lookup", "read", trading.get_order_by_id, broker_id, subject=cid
                    )
                except BrokerError as exc:
                    log.warning("re-reading order %s after reconnect failed: %s", cid, exc)
                    continue
                self._emit(self._ledger.from_rest(order_from_sdk(raw), baseline=False))
            self.stats.stream_resyncs += 1

    # ------------------------------------------------------------------ doctor

    async def doctor_checks(self) -> list[tuple[str, bool, str]]:
        """(check, ok, detail) for ``perun doctor``; details say what to do when not OK.

        Never shows a secret: keys appear masked.
        """
        checks: list[tuple[str, bool, str]] = []
        endpoint = self._trading_url or (
            "https://paper-api.alpaca.markets" if self.mode == "paper"
            else "https://api.alpaca.markets"
        )
        if not self.keys_present:
            checks.append(("alpaca keys", False, self._missing_keys_message()))
            return checks
        checks.append(
            (
                "alpaca keys",
                True,
                f"{self.mode} keys present: key {mask_secret(self._key)}, "
                f"secret {mask_secret(self._secret)}; endpoint {endpoint}",
            )
        )
        try:
            acct = await self.account()
        except BrokerRejected as exc:
            if exc.status in (401, 403):
                checks.append(("alpaca account", False, self._keys_rejected_message(exc)))
            else:
                checks.append(("alpaca account", False, f"{exc.message}"))
            return checks
        except (BrokerError, ConfigError) as exc:
            checks.append(
                (
                    "alpaca account",
                    False,
                    f"cannot reach {endpoint}: {exc}. Check the network/proxy, or "
                    "alpaca.trading_url if you set one.",
                )
            )
            return checks
        ok = acct.status == "ACTIVE"
        detail = (
            f"status {acct.status}, equity {acct.equity:,.2f} {acct.currency}, "
            f"cash {acct.cash:,.2f}, buying power {acct.buying_power:,.2f}"
        )
        if not ok:
            detail += " — the account is not ACTIVE: check the Alpaca dashboard"
        elif acct.buying_power <= 0:
            ok = False
            detail += " — no buying power: buys will be refused (fund or reset the account)"
        checks.append(("alpaca account", ok, detail))
        try:
            clock = await self.clock()
        except BrokerError as exc:
            checks.append(("alpaca clock", False, f"GET /v2/clock failed: {exc}"))
        else:
            state = "open" if clock.is_open else "closed"
            when = clock.next_close if clock.is_open else clock.next_open
            label = "closes" if clock.is_open else "opens"
            detail = f"market {state}, {label} {when.astimezone(NY):%a %Y-%m-%d %H:%M} ET"
            note = self.clock_disagreement()
            if note:
                checks.append(
                    (
                        "alpaca clock",
                        False,
                        f"{detail}; {note}. Check the system clock and update "
                        "pandas-market-calendars; Perun follows Alpaca meanwhile.",
                    )
                )
            else:
                checks.append(
                    ("alpaca clock", True, f"{detail}; agrees with the local NYSE calendar")
                )
        symbols = list(self.settings.trading.symbols)
        try:
            quotes = await self.latest(symbols)
        except BrokerError as exc:
            hint = (
                ' Your data plan may not include SIP: set alpaca.feed = "iex".'
                if self.feed == "sip" and exc.status == 403
                else " Check alpaca.data_url and the network."
            )
            checks.append(("alpaca data", False, f"feed {self.feed}: {exc}.{hint}"))
        else:
            missing = [s for s in symbols if s not in quotes]
            if not quotes:
                checks.append(
                    (
                        "alpaca data",
                        False,
                        f"feed {self.feed}: no data for {', '.join(symbols)} — check the "
                        "symbols in trading.symbols",
                    )
                )
            else:
                newest = max(q.ts for q in quotes.values())
                age = (self._now() - newest).total_seconds()
                detail = (
                    f"feed {self.feed}: {len(quotes)}/{len(symbols)} symbols, newest data "
                    f"{_age(age)} old"
                )
                if missing:
                    detail += f"; no data for {', '.join(missing)} (check trading.symbols)"
                checks.append(("alpaca data", not missing, detail))
        return checks


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{max(seconds, 0):.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
