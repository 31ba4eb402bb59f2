"""``AlpacaBroker``: the Broker protocol over alpaca-py's REST clients.

Every SDK call runs in one of the broker's worker threads (as ``asyncio.to_thread`` would)
under an overall deadline (``alpaca.request_timeout_s``), and the requests session
underneath gets the same timeout, so an abandoned thread is released too instead of
hanging forever. The SDK's own retries are switched off (private ``RESTClient``
attributes, checked when the clients are built); Perun owns retries. A client-side token
bucket keeps the account under Alpaca's ~200 requests a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from perun_tui.brokers.alpaca.endpoints import check_urls, default_trading_url, sdk_url_override
from perun_tui.brokers.alpaca.errors import CallKind, classify_error, deadline_error
from perun_tui.brokers.alpaca.history import (
    NY,
    history_start,
    in_session,
    merge_bars,
    timeframe_plan,
)
from perun_tui.brokers.alpaca.mapping import (
    bar_from_sdk,
    enum_value,
    number,
    order_from_sdk,
    quote_from_snapshot,
    utc,
)
from perun_tui.brokers.alpaca.market_clock import AlpacaSession, compare_calendar, compare_clock
from perun_tui.brokers.alpaca.stream import Notice, OrderStream, StreamStats, probe_stream
from perun_tui.brokers.base import (
    BrokerError,
    BrokerRejected,
    BrokerRetryable,
    OrderRefused,
    price_increment,
)
from perun_tui.brokers.ratelimit import TokenBucket
from perun_tui.config import ConfigError, Settings, mask_secret
from perun_tui.market_hours import TradingCalendar, default_calendar
from perun_tui.models import (
    Account,
    Bar,
    MarketClock,
    Order,
    OrderRequest,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    Side,
)

__all__ = ["AlpacaBroker", "BrokerStats", "check_keys"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_CLIENT_ORDER_ID = 128
_WORKERS = 8  # concurrent SDK calls; the daemon gathers at most a handful
_CALENDAR_SESSIONS = 10  # compared with the local NYSE calendar at start
_MAX_PENDING_NOTICES = 50


@dataclass
class BrokerStats:
    """Counters for the header, ``perun doctor`` and the benchmarks."""

    calls: Counter[str] = field(default_factory=Counter)  # wrapper calls by operation
    http_requests: int = 0  # HTTP requests actually sent (pages included)
    errors: Counter[str] = field(default_factory=Counter)  # by error kind
    rate_limited_s: float = 0.0
    stream: StreamStats = field(default_factory=StreamStats)

    @property
    def stream_connects(self) -> int:
        return self.stream.connects

    @property
    def stream_resyncs(self) -> int:
        return self.stream.resyncs


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
    checks the keys (``GET /v2/account``), compares Alpaca's calendar with the local one
    and opens the order-update stream.

    Things the user should know about (the stream down, Alpaca's clock or calendar not
    agreeing with the local NYSE calendar) are *notices*: given to the sink set with
    ``set_notice_sink`` (the daemon's log), kept until one is set.
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
        self._trading_url = sdk_url_override(cfg.trading_url)
        self._data_url = sdk_url_override(cfg.data_url)
        self._use_stream = stream
        self._calendar = calendar or default_calendar()
        self.now = now or (lambda: datetime.now(UTC))
        self.limiter = TokenBucket(cfg.max_requests_per_minute)
        self.stats = BrokerStats()
        self._trading: Any = None
        self._data: Any = None
        self._clients_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._http_lock = threading.Lock()
        self._sink: Notice | None = None
        self._pending_notices: deque[tuple[int, str]] = deque(maxlen=_MAX_PENDING_NOTICES)
        self._clock_note: str | None = None
        self.calendar_notes: list[str] | None = None  # None: not compared (yet)
        self._keys_ok = False
        self._started = False
        self._closed = False
        self.account_status: str | None = None
        self.updates = OrderStream(
            self,
            key=self._key,
            secret=self._secret,
            paper=mode == "paper",
            url=cfg.stream_url or None,
            timeout_s=self.timeout_s,
            backoff_s=reconnect_backoff_s,
            notice=self._notice,
            stats=self.stats.stream,
        )

    # ------------------------------------------------------------------ notices

    def set_notice_sink(self, sink: Notice | None) -> None:
        """Where notices go from now on; those raised before are delivered at once."""
        self._sink = sink
        if sink is not None:
            while self._pending_notices:
                sink(*self._pending_notices.popleft())

    def _notice(self, level: int, message: str) -> None:
        log.log(logging.DEBUG, "notice: %s", message)
        if self._sink is None:
            self._pending_notices.append((level, message))
        else:
            self._sink(level, message)

    @property
    def stream_state(self) -> str:
        """off, connecting, connected, reconnecting, disconnected, unauthorized, closed."""
        return self.updates.state

    # ------------------------------------------------------------------ plumbing

    @property
    def keys_present(self) -> bool:
        return bool(self._key and self._secret)

    @property
    def endpoint(self) -> str:
        """The trading endpoint in use (for messages)."""
        return self._trading_url or default_trading_url(self.mode)

    def missing_keys_message(self) -> str:
        return (
            f"Alpaca API keys are not set for {self.mode} mode: set APCA_API_KEY_ID and "
            "APCA_API_SECRET_KEY (in the environment or .env), or alpaca.key_id / "
            f"alpaca.secret_key. Get {self.mode} keys from the Alpaca dashboard "
            f"({'Paper' if self.mode == 'paper' else 'Live'} Trading → API Keys)."
        )

    def keys_rejected_message(self, exc: BrokerError) -> str:
        other = "live" if self.mode == "paper" else "paper"
        return (
            f"Alpaca rejected the API keys for {self.mode} mode at {self.endpoint} "
            f"(HTTP {exc.status}). Paper and live accounts have different keys: use the "
            f"{self.mode} keys (these may be {other} keys, revoked, or mistyped). "
            f"Key in use: {mask_secret(self._key)}."
        )

    def masked_keys(self) -> str:
        return f"key {mask_secret(self._key)}, secret {mask_secret(self._secret)}"

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
            raise ConfigError(self.missing_keys_message())
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
            raise deadline_error(op, kind, self.timeout_s)
        try:
            return future.result()
        except Exception as exc:
            err = classify_error(exc, op=op, kind=kind, timeout_s=self.timeout_s)
            self.stats.errors[err.kind] += 1
            if isinstance(err, BrokerRetryable) and err.status == 429:
                self.limiter.pause(err.retry_after_s)
            raise err from exc

    # ------------------------------------------------------------------ lifecycle

    async def verify_keys(self) -> None:
        """Check the keys against the account (``GET /v2/account``), once.

        Raises ``ConfigError`` (exit 2) when keys are missing or Alpaca refuses them for
        this mode; network trouble surfaces as ``BrokerRetryable``.
        """
        if self._keys_ok:
            return
        if not self.keys_present:
            raise ConfigError(self.missing_keys_message())
        trading, _ = await self._sdk()
        try:
            acct = await self._call("account", "read", trading.get_account)
        except BrokerRejected as exc:
            if exc.status in (401, 403):
                raise ConfigError(self.keys_rejected_message(exc)) from None
            raise
        self.account_status = enum_value(acct.status)
        if self.account_status and self.account_status != "ACTIVE":
            self._notice(
                logging.WARNING,
                f"Alpaca {self.mode} account status is {self.account_status}: orders may be "
                "refused; check the Alpaca dashboard",
            )
        self._keys_ok = True

    async def start(self) -> None:
        """Keys, then the calendar comparison, then the order-update stream."""
        if self._started:
            return
        await self.verify_keys()
        self._started = True
        self._closed = False
        await self.check_calendar()
        if self._use_stream:
            await self.updates.start()

    async def close(self) -> None:
        """Stop the stream and release the HTTP sessions; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.updates.close()
        for client in (self._trading, self._data):
            if client is not None:
                with contextlib.suppress(Exception):
                    client._session.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # ------------------------------------------------------------------ account

    async def account(self) -> Account:
        trading, _ = await self._sdk()
        a = await self._call("account", "read", trading.get_account)
        self.account_status = enum_value(a.status) or None
        return Account(
            cash=number(a.cash, 0.0),
            equity=number(a.equity, 0.0),
            buying_power=number(a.buying_power, 0.0),
            currency=str(a.currency or "USD"),
            last_equity=number(a.last_equity),
            status=self.account_status or "ACTIVE",
        )

    async def positions(self) -> list[Position]:
        trading, _ = await self._sdk()
        raw = await self._call("positions", "read", trading.get_all_positions)
        out: list[Position] = []
        for p in raw:
            qty = number(p.qty, 0.0)
            if enum_value(p.side) == "short" and qty > 0:
                qty = -qty
            avg = number(p.avg_entry_price, 0.0)
            price = number(p.current_price, 0.0)
            if price <= 0 and qty:
                price = number(p.market_value, 0.0) / qty
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
        return [order_from_sdk(o, mode=self.mode) for o in raw]

    # ------------------------------------------------------------------ market clock

    async def clock(self) -> MarketClock:
        trading, _ = await self._sdk()
        c = await self._call("clock", "read", trading.get_clock)
        ts, next_open, next_close = utc(c.timestamp), utc(c.next_open), utc(c.next_close)
        assert ts is not None and next_open is not None and next_close is not None
        clock = MarketClock(
            ts=ts, is_open=bool(c.is_open), next_open=next_open, next_close=next_close
        )
        try:
            note = await asyncio.to_thread(compare_clock, clock, self._calendar)
        except Exception as exc:  # the local calendar is advisory; never fail the call
            log.debug("local calendar comparison failed: %s", exc)
        else:
            self._set_clock_note(note)
        return clock

    def _set_clock_note(self, note: str | None) -> None:
        """A disagreement is announced when it appears or changes, not on every call."""
        if note == self._clock_note:
            return
        if note:
            self._notice(logging.WARNING, f"market clock: {note}")
        else:
            self._notice(logging.INFO, "market clock: Alpaca and the local NYSE calendar agree")
        self._clock_note = note

    def clock_disagreement(self) -> str | None:
        """How Alpaca's clock and the local NYSE calendar disagreed at the last ``clock()``
        (None when they agree). Perun trusts the broker either way."""
        return self._clock_note

    async def calendar(self, start: date, end: date) -> list[AlpacaSession]:
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

    async def check_calendar(self) -> list[str] | None:
        """Compare Alpaca's next sessions (holidays, early closes) with the local NYSE
        calendar; differences become a warning notice. None when Alpaca could not be
        asked (advisory: never fails start-up)."""
        today = self.now().astimezone(NY).date()
        end = today + timedelta(days=_CALENDAR_SESSIONS * 7 // 5 + 6)
        try:
            sessions = (await self.calendar(today, end))[:_CALENDAR_SESSIONS]
        except BrokerError as exc:
            log.debug("Alpaca calendar unavailable: %s", exc)
            return None
        last = sessions[-1][0] if len(sessions) >= _CALENDAR_SESSIONS else end
        try:
            notes = await asyncio.to_thread(
                compare_calendar, sessions, self._calendar, today, last
            )
        except Exception as exc:  # the local calendar is advisory
            log.debug("local calendar comparison failed: %s", exc)
            return None
        self.calendar_notes = notes
        if notes:
            self._notice(
                logging.WARNING,
                "market calendar: Alpaca and the local NYSE calendar differ — "
                + "; ".join(notes)
                + " — trusting Alpaca",
            )
        return notes

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
        if self._calendar.covers(day):  # the NYSE schedule only when already built
            return self._calendar.session_on(day) is not None
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

        amount, unit, group = timeframe_plan(timeframe_minutes)
        unit_enum = {
            "Min": TimeFrameUnit.Minute,
            "Hour": TimeFrameUnit.Hour,
            "Day": TimeFrameUnit.Day,
        }[unit]
        # without the NYSE schedule (not built yet) a holiday may hide in the window
        slack = 0 if self._calendar.window is not None else (2 if unit == "Day" else 1)
        start = history_start(
            self.now(), timeframe_minutes, n, self._is_session_day, slack_sessions=slack
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
            bars = [bar_from_sdk(symbol, b) for b in raw]
            bars.sort(key=lambda b: b.ts)
            if unit != "Day":
                bars = [b for b in bars if in_session(b.ts, bar_minutes)]
            if group > 1:
                bars = merge_bars(bars, timeframe_minutes)
            if bars:
                out[symbol] = bars[-n:]
        return out

    # ------------------------------------------------------------------ orders

    def _sdk_request(self, req: OrderRequest) -> Any:
        """Check the request against Alpaca's rules here, and build the SDK request.

        A request that breaks them is ``OrderRefused``: refused by Perun, never sent.
        """
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

        def refuse(why: str) -> OrderRefused:
            return OrderRefused(f"{req.symbol}: refused by Perun, not sent to Alpaca: {why}")

        cid = req.client_order_id
        if not cid or len(cid) > _MAX_CLIENT_ORDER_ID:
            raise refuse(f"client_order_id must be 1–128 characters, got {len(cid)}")
        if (req.qty is None) == (req.notional is None):
            raise refuse("exactly one of qty or notional must be set")
        amount = req.qty if req.qty is not None else req.notional
        if amount is None or not math.isfinite(amount) or amount <= 0:
            raise refuse("quantity must be a positive number")
        tif = req.time_in_force.lower()
        try:
            time_in_force = TimeInForce(tif)
        except ValueError:
            raise refuse(f"unknown time_in_force {tif!r}") from None
        fractional = req.notional is not None or (
            req.qty is not None and abs(req.qty - round(req.qty)) > 1e-9
        )
        if fractional and (req.type is not OrderType.MARKET or tif != "day"):
            raise refuse(
                "fractional and notional orders must be market orders with time_in_force "
                "day (Alpaca's rule)"
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
        if req.type is OrderType.LIMIT and (req.limit_price is None or req.limit_price <= 0):
            raise refuse("a limit order needs a limit price")
        try:
            if req.type is OrderType.LIMIT:
                assert req.limit_price is not None
                limit = price_increment(req.limit_price)
                return LimitOrderRequest(**common, limit_price=limit)
            return MarketOrderRequest(**common)
        except ValueError as exc:  # the SDK's own validation
            raise refuse(f"invalid order: {exc}") from None

    async def submit(self, request: OrderRequest) -> Order:
        """Place one order. Never retried here: on ``BrokerUnknownOutcome`` look it up."""
        sdk_request = self._sdk_request(request)
        trading, _ = await self._sdk()
        raw = await self._call(
            "submit", "write", trading.submit_order, sdk_request,
            subject=request.client_order_id,
        )
        order = order_from_sdk(raw)  # placed by Perun just now: never external
        order.signal_id = request.signal_id
        self.updates.ledger.track(order)
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
        order = order_from_sdk(raw, mode=self.mode)
        self.updates.ledger.track(order)
        return order

    async def order_by_broker_id(self, broker_order_id: str, client_order_id: str) -> Order:
        """One order by Alpaca's id (``client_order_id`` is for messages)."""
        trading, _ = await self._sdk()
        raw = await self._call(
            "lookup", "read", trading.get_order_by_id, broker_order_id,
            subject=client_order_id,
        )
        return order_from_sdk(raw, mode=self.mode)

    async def cancel(self, broker_order_id: str) -> None:
        trading, _ = await self._sdk()
        await self._call(
            "cancel", "cancel", trading.cancel_order_by_id, broker_order_id,
            subject=broker_order_id,
        )

    def order_updates(self) -> AsyncIterator[OrderUpdate]:
        """Order updates from the stream plus REST re-reads after each reconnect.

        One consumer (the daemon); the iterator ends when the broker is closed.
        """
        return self.updates.updates()

    # ------------------------------------------------------------------ doctor

    async def probe_stream(self) -> str | None:
        """Connect, authenticate and close the order-update stream once: None when that
        worked, else why not (for ``perun doctor``, which runs no stream of its own)."""
        return await probe_stream(
            self._key, self._secret, paper=self.mode == "paper", url=self.updates.url,
            timeout_s=self.timeout_s,
        )

    async def doctor_checks(self) -> list[tuple[str, bool, str]]:
        """(check, ok, detail) for ``perun doctor``; see ``alpaca.doctor``."""
        from perun_tui.brokers.alpaca.doctor import doctor_checks

        return await doctor_checks(self)


async def check_keys(settings: Settings, mode: str | None = None) -> None:
    """Keys missing, or refused by Alpaca for this mode: ``ConfigError`` (exit code 2).

    Meant for start-up, before the database is opened or anything written. Network
    trouble is not decided here: start-up meets it again and reports it.
    """
    broker = AlpacaBroker(settings, mode, stream=False)
    try:
        await broker.verify_keys()
    except BrokerError as exc:
        log.debug("key check inconclusive: %s", exc)
    finally:
        await broker.close()
