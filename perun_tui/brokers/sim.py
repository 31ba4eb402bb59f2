"""The built-in simulated exchange: a Broker over the seeded synthetic market.

* Prices come from :class:`~perun_tui.brokers.sim_market.SimMarket` — a pure function of
  ``(seed, symbol, time)``, so the same seed gives the same prices in any query order and
  after a restart.
* Orders behave like Alpaca's, simplified: market orders fill at once at the ask (buy) /
  bid (sell) plus slippage growing with the order's share of the minute's volume; limit
  orders rest and fill when the 1-minute path crosses the limit (at most ``PARTICIPATION``
  of a minute's volume per minute, so big orders fill in parts); ``day`` orders expire at
  the session close, ``gtc`` ones rest until filled or canceled. Orders are only accepted
  while the market is open. Client order ids are unique forever. Fees are zero (like
  Alpaca) but kept as ``fee_bps``.
* Resting orders are processed whenever the clock has moved, at the start of every public
  call, minute by minute in time order.
* Known symbols: the configured ones plus a built-in table of common tickers; anything
  else is absent from ``latest``/``history`` and ``submit`` raises ``UnknownSymbol``.
* ``account().last_equity`` is the equity at the close of the session before the latest
  one: today's holdings with the later fills taken back, marked at that close.
* State is saved to the optional :class:`~perun_tui.brokers.sim_store.SimStore` after
  every change that matters (placement, fill, cancel, expiry) and loaded in ``start()``
  (or lazily on the first call), so a restart carries on. A save writes the account head
  and only the orders and fills that changed, so its cost does not grow with the history.
* Memory holds what the account needs, not its whole past: the open orders, the
  ``KEEP_FINAL_ORDERS`` latest final ones, every client order id (a set, to refuse a
  reused id) and the fills since the close of the session before the latest one (what
  ``last_equity`` takes back). An older order is read from the store when asked for.

Account head (``SimBroker.head()``, JSON-safe, ``version`` 2; version 1 was one document
with every order and fill in it, split into rows by the memory's migration 2)::

    {"version": 2, "seed": 42, "starting_cash": 100000.0,
     "cash": 98765.4, "realized_pl": 12.3, "fees": 0.0,
     "positions": {"AAPL": {"qty": 10.0, "avg_price": 230.1,
                            "opened_at": "2026-11-24T14:31:00+00:00"}},
     "processed_until": "<ISO time>"}

An order row's data: ``{"order": {<Order, model_dump(mode="json")>}, "time_in_force":
"day", "expires_at": "<ISO time>" | null, "scanned_until": "<ISO time>", "fill_count":
1}``; a fill row's data: the Fill as JSON.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import math
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from perun_tui.brokers.base import BrokerError, BrokerRejected, UnknownSymbol
from perun_tui.brokers.sim_market import SimMarket
from perun_tui.brokers.sim_store import SimFillRow, SimOrderRow, SimSaved, SimStore
from perun_tui.market_hours import Clock, Session, TradingCalendar
from perun_tui.models import (
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

log = logging.getLogger(__name__)

STATE_VERSION = 2
KEEP_FINAL_ORDERS = 256  # final orders kept in memory (older ones are read from the store)
PARTICIPATION = 0.25  # at most this share of a minute's volume fills a resting order
SLIPPAGE_PER_PARTICIPATION = 0.05  # price impact per unit of (qty / minute volume)
MAX_SLIPPAGE = 0.02
QTY_DECIMALS = 9
EPS = 1e-9
TIME_IN_FORCE = ("day", "gtc")
UNCLAIMED_LIMIT = 10_000  # updates kept for a first order_updates() consumer that is late
_MINUTE = dt.timedelta(minutes=1)


@dataclass(slots=True)
class _Holding:
    qty: float
    avg_price: float
    opened_at: dt.datetime | None


@dataclass(slots=True)
class _OrderRec:
    order: Order
    time_in_force: str
    expires_at: dt.datetime | None  # the session close for day orders
    scanned_until: dt.datetime  # resting orders: minutes before this were looked at
    fill_count: int = 0

    @property
    def remaining(self) -> float:
        if self.order.qty is None:
            return 0.0
        return max(0.0, self.order.qty - self.order.filled_qty)


@dataclass(slots=True)
class _PendingFill:
    ts: dt.datetime
    seq: int
    rec: _OrderRec
    qty: float
    price: float


class _UpdateStream:
    """One subscriber's view of the order updates; ends when the broker closes."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[OrderUpdate | None] = asyncio.Queue()
        self._done = False

    def __aiter__(self) -> _UpdateStream:
        return self

    async def __anext__(self) -> OrderUpdate:
        if self._done:
            raise StopAsyncIteration
        item = await self.queue.get()
        if item is None:
            self._done = True
            raise StopAsyncIteration
        return item


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _parse(t: str | None) -> dt.datetime | None:
    return None if t is None else dt.datetime.fromisoformat(t)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _order_entry(rec: _OrderRec) -> dict[str, Any]:
    return {
        "order": rec.order.model_dump(mode="json"),
        "time_in_force": rec.time_in_force,
        "expires_at": _iso(rec.expires_at),
        "scanned_until": _iso(rec.scanned_until),
        "fill_count": rec.fill_count,
    }


def _order_row(rec: _OrderRec) -> SimOrderRow:
    o = rec.order
    return SimOrderRow(
        client_order_id=o.client_order_id,
        broker_order_id=o.broker_order_id or "",
        open=not o.is_final,
        data=_json(_order_entry(rec)),
    )


def _rec_from_entry(item: dict[str, Any]) -> _OrderRec:
    order = Order.model_validate(item["order"])
    scanned = _parse(item.get("scanned_until")) or order.created_at
    assert scanned is not None
    return _OrderRec(
        order=order,
        time_in_force=str(item.get("time_in_force", "day")),
        expires_at=_parse(item.get("expires_at")),
        scanned_until=scanned,
        fill_count=int(item.get("fill_count", 0)),
    )


def _ceil_minute(t: dt.datetime) -> dt.datetime:
    floor = t.replace(second=0, microsecond=0)
    return floor if floor == t else floor + _MINUTE


class SimBroker:
    """A simulated exchange implementing the :class:`~perun_tui.brokers.base.Broker` protocol."""

    name = "sim"

    def __init__(
        self,
        symbols: list[str],
        clock: Clock,
        calendar: TradingCalendar,
        *,
        seed: int = 42,
        starting_cash: float = 100_000.0,
        store: SimStore | None = None,
        allow_short: bool = False,
        fee_bps: float = 0.0,
    ) -> None:
        self.market = SimMarket(symbols, calendar, seed=seed)
        self.clock_source = clock
        self.calendar = calendar
        self.seed = seed
        self.starting_cash = float(starting_cash)
        self.store = store
        self.allow_short = allow_short
        self.fee_bps = fee_bps
        self._cash = float(starting_cash)
        self._realized = 0.0
        self._fees = 0.0
        self._positions: dict[str, _Holding] = {}
        # by client_order_id, in creation order: the open orders and the latest final ones
        # (with a store; without one, every order)
        self._orders: dict[str, _OrderRec] = {}
        # the orders that may still be open (finals are dropped lazily, see _open_recs):
        # resting-order work and buying power look at these, not at every order ever made
        self._open: dict[str, _OrderRec] = {}
        self._order_ids: set[str] = set()  # every client order id ever used
        self._by_broker_id: dict[str, str] = {}  # for the orders in _orders
        self._fills: list[Fill] = []  # since the close of the session before the latest
        # changed since the last save: what the next save writes
        self._changed: dict[str, _OrderRec] = {}
        self._new_fills: list[Fill] = []
        self._processed_until: dt.datetime | None = None
        # Streams are held weakly: an abandoned iterator stops receiving. The first stream
        # exists from construction, so its consumer also sees updates from before it asked.
        self._streams: weakref.WeakSet[_UpdateStream] = weakref.WeakSet()
        self._unclaimed: _UpdateStream | None = _UpdateStream()
        self._streams.add(self._unclaimed)
        self._lock = asyncio.Lock()
        self._loaded = False
        self._closed = False

    # ----------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        async with self._lock:
            await self._ensure_loaded()
            self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for stream in list(self._streams):
            stream.queue.put_nowait(None)
        self._streams = weakref.WeakSet()
        self._unclaimed = None

    def order_updates(self) -> AsyncIterator[OrderUpdate]:
        """Order updates: ``new``, ``fill``, ``partial_fill``, ``canceled``, ``expired``.

        The first call gets every update since the broker was created; later calls are
        separate subscribers from the moment of the call. Ends when the broker closes.
        """
        stream = self._unclaimed
        self._unclaimed = None
        if stream is None:
            stream = _UpdateStream()
            if self._closed:
                stream.queue.put_nowait(None)
            else:
                self._streams.add(stream)
        return stream

    # ----------------------------------------------------------------------- market data

    async def latest(self, symbols: list[str]) -> dict[str, Quote]:
        async with self._lock:
            now = await self._sync()
            session = self.calendar.current_session(now)
            return self.market.quotes([s for s in symbols if self.market.knows(s)], now, session)

    async def history(
        self, symbols: list[str], timeframe_minutes: int, n: int
    ) -> dict[str, list[Bar]]:
        if timeframe_minutes <= 0:
            raise ValueError(f"timeframe_minutes must be > 0, got {timeframe_minutes}")
        async with self._lock:
            now = await self._sync()
            try:
                latest = self.calendar.latest_session(now)
            except LookupError:
                return {sym: [] for sym in symbols if self.market.knows(sym)}
            return {
                sym: self.market.bars(sym, timeframe_minutes, n, now, latest)
                for sym in symbols
                if self.market.knows(sym)
            }

    async def clock(self) -> MarketClock:
        now = self.clock_source.now()
        status = self.calendar.status(now)
        return MarketClock(
            ts=now, is_open=status.is_open, next_open=status.next_open,
            next_close=status.next_close,
        )

    # ----------------------------------------------------------------------- account

    async def account(self) -> Account:
        async with self._lock:
            now = await self._sync()
            marks = self._marks(now)
            equity = self._cash + self._market_value(now, marks)
            return Account(
                cash=round(self._cash, 2),
                equity=round(equity, 2),
                buying_power=round(self._buying_power(now, marks), 2),
                last_equity=round(self._last_equity(now), 2),
            )

    async def positions(self) -> list[Position]:
        async with self._lock:
            now = await self._sync()
            marks = self._marks(now)
            out: list[Position] = []
            for sym, h in self._positions.items():
                price = marks[sym]
                out.append(
                    Position(
                        symbol=sym, qty=h.qty, avg_price=round(h.avg_price, 6),
                        market_price=round(price, 4), opened_at=h.opened_at,
                    )
                )
            return out

    @property
    def realized_pl(self) -> float:
        """Realized P&L since the sim account was created (all sessions)."""
        return self._realized

    @property
    def fills(self) -> list[Fill]:
        """The fills since the close of the session before the latest one (older ones are
        in the store)."""
        return [f.model_copy() for f in self._fills]

    # ----------------------------------------------------------------------- orders

    async def open_orders(self) -> list[Order]:
        async with self._lock:
            await self._sync()
            return [r.order.model_copy() for r in self._open_recs()]

    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        async with self._lock:
            await self._sync()
            rec = self._orders.get(client_order_id)
            if rec is not None:
                return rec.order.model_copy()
            if client_order_id not in self._order_ids:
                return None
            return await self._stored_order(client_order_id=client_order_id)

    async def cancel(self, broker_order_id: str) -> None:
        async with self._lock:
            now = await self._sync()
            cid = self._by_broker_id.get(broker_order_id)
            # every open order is in memory: one that is not is old and final, or unknown
            order = (
                self._orders[cid].order
                if cid is not None
                else await self._stored_order(broker_order_id=broker_order_id)
            )
            if order is None:
                raise BrokerRejected(f"order {broker_order_id} not found", status=404)
            if cid is None or order.is_final:
                raise BrokerRejected(
                    f"order {broker_order_id} is already {order.status.value} "
                    "and cannot be canceled",
                    status=422,
                )
            rec = self._orders[cid]
            rec.order.status = OrderStatus.CANCELED
            rec.order.reason = "canceled by request"
            rec.order.updated_at = now
            self._changed[cid] = rec
            self._publish("canceled", rec.order)
            await self._save()

    async def submit(self, request: OrderRequest) -> Order:
        async with self._lock:
            now = await self._sync()
            req = request
            if req.client_order_id in self._order_ids:
                raise BrokerRejected("client_order_id must be unique", status=422)
            if not req.client_order_id or len(req.client_order_id) > 128:
                raise BrokerRejected("client_order_id must be 1–128 characters", status=422)
            if not self.market.knows(req.symbol):
                raise UnknownSymbol(f"asset {req.symbol!r} not found", status=422)
            if (req.qty is None) == (req.notional is None):
                raise BrokerRejected("exactly one of qty or notional is required", status=422)
            if req.qty is not None and not (req.qty > 0 and math.isfinite(req.qty)):
                raise BrokerRejected(f"qty must be > 0, got {req.qty}", status=422)
            if req.notional is not None and not (
                req.notional > 0 and math.isfinite(req.notional)
            ):
                raise BrokerRejected(f"notional must be > 0, got {req.notional}", status=422)
            tif = req.time_in_force.lower()
            if tif not in TIME_IN_FORCE:
                raise BrokerRejected(
                    f"time_in_force {req.time_in_force!r} is not supported by the sim "
                    f"(use one of {', '.join(TIME_IN_FORCE)})",
                    status=422,
                )
            if req.type is OrderType.LIMIT:
                if req.limit_price is None or not req.limit_price > 0:
                    raise BrokerRejected("limit orders need a limit_price > 0", status=422)
                if req.notional is not None:
                    raise BrokerRejected(
                        "notional orders must be market orders; give qty", status=422
                    )
            elif req.limit_price is not None:
                raise BrokerRejected("limit_price is only for limit orders", status=422)
            session = self.calendar.current_session(now)
            if session is None:
                opens = self.calendar.next_open(now)
                raise BrokerRejected(
                    f"market is closed: the sim only accepts orders during the session "
                    f"(next open {opens.isoformat()})",
                    status=403,
                )
            quote = self.market.quote(req.symbol, now, session)
            if quote is None:
                raise BrokerRejected(f"no price for {req.symbol} yet", status=403)
            minute_volume = max(quote.volume, 1.0)

            # size and price the order as it would execute now
            base = quote.ask if req.side is Side.BUY else quote.bid
            qty = req.qty if req.qty is not None else (req.notional or 0.0) / base
            fill_price = self._market_price(req.side, base, qty, minute_volume)
            if req.notional is not None:
                qty = req.notional / fill_price
            qty = round(qty, QTY_DECIMALS)
            if qty <= 0:
                raise BrokerRejected("order size rounds to zero", status=422)
            limit = req.limit_price
            marketable = limit is None or (
                limit >= quote.ask if req.side is Side.BUY else limit <= quote.bid
            )
            if limit is not None:
                fill_price = (
                    min(fill_price, limit) if req.side is Side.BUY else max(fill_price, limit)
                )
            if req.side is Side.BUY:
                cost_price = fill_price if marketable or limit is None else limit
                cost = req.notional if req.notional is not None else qty * cost_price
                cost *= 1 + self.fee_bps / 10_000
                available = self._buying_power(now)
                if cost > available + 1e-6:
                    raise BrokerRejected(
                        f"insufficient buying power: order needs {cost:,.2f}, "
                        f"available {available:,.2f}",
                        status=403,
                    )
            else:
                held = self._available_qty(req.symbol)
                if not self.allow_short and qty > held + EPS:
                    raise BrokerRejected(
                        f"insufficient qty available for order (requested: {qty:g}, "
                        f"available: {max(held, 0.0):g}); short selling is not allowed",
                        status=403,
                    )

            order = Order.from_request(req, now)
            order.broker_order_id = self._broker_id(req.client_order_id)
            order.status = OrderStatus.NEW
            rec = _OrderRec(
                order=order,
                time_in_force=tif,
                expires_at=session.close if tif == "day" else None,
                scanned_until=_ceil_minute(now),
            )
            self._orders[req.client_order_id] = rec
            self._open[req.client_order_id] = rec
            self._order_ids.add(req.client_order_id)
            self._by_broker_id[order.broker_order_id] = req.client_order_id
            self._changed[req.client_order_id] = rec
            self._publish("new", order)
            if marketable:
                self._apply_fill(rec, qty, fill_price, now)
            await self._save()
            return order.model_copy()

    # ----------------------------------------------------------------------- internals

    def _broker_id(self, client_order_id: str) -> str:
        digest = hashlib.sha256(f"sim|{self.seed}|{client_order_id}".encode()).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    def _market_price(self, side: Side, base: float, qty: float, minute_volume: float) -> float:
        slip = min(MAX_SLIPPAGE, SLIPPAGE_PER_PARTICIPATION * qty / minute_volume)
        if side is Side.BUY:
            return math.ceil(base * (1 + slip) * 10_000) / 10_000
        return math.floor(base * (1 - slip) * 10_000) / 10_000

    def _reserved_cash(self) -> float:
        total = 0.0
        for rec in self._open_recs():
            o = rec.order
            if o.side is Side.BUY and o.limit_price is not None:
                total += rec.remaining * o.limit_price * (1 + self.fee_bps / 10_000)
        return total

    def _available_qty(self, symbol: str) -> float:
        held = self._positions[symbol].qty if symbol in self._positions else 0.0
        for rec in self._open_recs():
            o = rec.order
            if o.side is Side.SELL and o.symbol == symbol:
                held -= rec.remaining
        return held

    def _marks(self, now: dt.datetime) -> dict[str, float]:
        """``_mark`` of every position, in one pass."""
        if not self._positions:
            return {}
        session = self.calendar.current_session(now)
        prices = self.market.last_prices(self._positions, now, session)
        return {s: prices.get(s, h.avg_price) for s, h in self._positions.items()}

    def _market_value(self, now: dt.datetime, marks: dict[str, float] | None = None) -> float:
        if not self._positions:
            return 0.0
        marks = self._marks(now) if marks is None else marks
        return sum(h.qty * marks[s] for s, h in self._positions.items())

    def _buying_power(self, now: dt.datetime, marks: dict[str, float] | None = None) -> float:
        bp = self._cash - self._reserved_cash()
        if self.allow_short and self._positions:
            marks = self._marks(now) if marks is None else marks
            for sym, h in self._positions.items():
                if h.qty < 0:
                    bp -= -h.qty * marks[sym]
        return max(0.0, bp)

    def _reference_session(self, now: dt.datetime) -> Session | None:
        """The session before the latest one: its close is the day P&L base."""
        try:
            latest = self.calendar.latest_session(now)
            return self.calendar.previous_session(latest.open)
        except LookupError:
            return None

    def _last_equity(self, now: dt.datetime) -> float:
        """Equity at the close of the session before the latest one (the day P&L base).

        Holdings at that close are the current ones with the later fills taken back (the
        fill list reaches back to that close), marked at that session's closing prices.
        """
        ref = self._reference_session(now)
        if ref is None:
            return self.starting_cash
        cash = self._cash
        qty = {sym: h.qty for sym, h in self._positions.items()}
        for fill in reversed(self._fills):
            if fill.ts <= ref.close:
                break
            notional = fill.qty * fill.price
            fee = notional * self.fee_bps / 10_000
            if fill.side is Side.BUY:
                cash += notional + fee
                qty[fill.symbol] = qty.get(fill.symbol, 0.0) - fill.qty
            else:
                cash -= notional - fee
                qty[fill.symbol] = qty.get(fill.symbol, 0.0) + fill.qty
        if not self.market.covers(ref):
            return cash if not any(abs(q) > EPS for q in qty.values()) else self.starting_cash
        return cash + sum(
            q * self.market.session_close_price(sym, ref)
            for sym, q in qty.items()
            if abs(q) > EPS and self.market.knows(sym)
        )

    def _publish(self, event: str, order: Order, fill: Fill | None = None) -> None:
        update = OrderUpdate(event=event, order=order.model_copy(), fill=fill)
        for stream in list(self._streams):
            stream.queue.put_nowait(update)
        unclaimed = self._unclaimed
        if unclaimed is not None and unclaimed.queue.qsize() > UNCLAIMED_LIMIT:
            unclaimed.queue.get_nowait()  # nobody is listening yet: keep the latest only

    def _apply_fill(self, rec: _OrderRec, qty: float, price: float, at: dt.datetime) -> None:
        o = rec.order
        qty = round(qty, QTY_DECIMALS)
        rec.fill_count += 1
        fill = Fill(
            fill_id=f"{o.broker_order_id}-{rec.fill_count}",
            client_order_id=o.client_order_id,
            symbol=o.symbol,
            side=o.side,
            qty=qty,
            price=price,
            ts=at,
        )
        notional = qty * price
        fee = notional * self.fee_bps / 10_000
        self._fees += fee
        signed = qty if o.side is Side.BUY else -qty
        self._cash += -notional - fee if o.side is Side.BUY else notional - fee
        self._update_position(o.symbol, signed, price, at)

        prev_filled = o.filled_qty
        o.filled_qty = round(prev_filled + qty, QTY_DECIMALS)
        o.filled_avg_price = round(
            ((o.filled_avg_price or 0.0) * prev_filled + price * qty) / o.filled_qty, 6
        )
        done = o.qty is None or o.filled_qty >= (o.qty - EPS)
        o.status = OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED
        o.updated_at = at
        self._fills.append(fill)
        self._new_fills.append(fill)
        self._changed[o.client_order_id] = rec
        self._publish("fill" if done else "partial_fill", o, fill)

    def _update_position(self, symbol: str, signed: float, price: float, at: dt.datetime) -> None:
        h = self._positions.get(symbol)
        if h is None or abs(h.qty) < EPS:
            self._positions[symbol] = _Holding(signed, price, at)
            return
        if (h.qty > 0) == (signed > 0):  # adding to the position
            new_qty = h.qty + signed
            h.avg_price = (h.avg_price * h.qty + price * signed) / new_qty
            h.qty = round(new_qty, QTY_DECIMALS)
            return
        closing = min(abs(signed), abs(h.qty))
        direction = 1.0 if h.qty > 0 else -1.0
        self._realized += (price - h.avg_price) * closing * direction
        new_qty = round(h.qty + signed, QTY_DECIMALS)
        if abs(new_qty) < EPS:
            del self._positions[symbol]
        elif (new_qty > 0) == (h.qty > 0):
            h.qty = new_qty
        else:  # flipped through zero (only when shorting is allowed)
            self._positions[symbol] = _Holding(new_qty, price, at)

    # -- time processing ----------------------------------------------------------------

    async def _sync(self) -> dt.datetime:
        """Load state if needed and process everything up to the clock's now."""
        await self._ensure_loaded()
        now = self.clock_source.now()
        self._process_until(now)
        if self._changed:  # fills and expiries found while catching up
            await self._save()
        return now

    def _open_recs(self) -> list[_OrderRec]:
        """Orders not final yet, in creation order (and forget the ones that became final)."""
        out: list[_OrderRec] = []
        done: list[str] = []
        for cid, rec in self._open.items():
            if rec.order.is_final:
                done.append(cid)
            else:
                out.append(rec)
        for cid in done:
            del self._open[cid]
        return out

    def _process_until(self, now: dt.datetime) -> None:
        t = self._processed_until
        if t is None or now <= t:
            self._processed_until = now if t is None else t
            return
        while t < now and self._open_recs():
            session = self.calendar.current_session(t)
            if session is None:
                try:
                    session = self.calendar.next_session(t)
                except LookupError:
                    break
            if session.open >= now:
                break
            self._fill_resting(session, min(now, session.close))
            if session.close > now:
                break
            self._expire(session.close)
            t = session.close
        self._processed_until = now

    def _fill_resting(self, session: Session, end: dt.datetime) -> None:
        """Fill resting limit orders on the 1-minute bars completed in the session by ``end``."""
        if not self.market.covers(session):
            return
        pending: list[_PendingFill] = []
        seq = 0
        done_minutes = int((end - session.open).total_seconds() // 60)
        for rec in self._open_recs():
            o = rec.order
            if o.limit_price is None:
                continue
            if rec.expires_at is not None and rec.expires_at <= session.open:
                continue
            start = max(rec.scanned_until, session.open)
            k0 = math.ceil((start - session.open).total_seconds() / 60)
            path = self.market.path(o.symbol, session)
            k1 = min(done_minutes, path.minutes)
            remaining = rec.remaining
            for k in range(max(k0, 0), k1):
                if remaining <= EPS:
                    break
                if o.side is Side.BUY:
                    if path.low[k] > o.limit_price:
                        continue
                    price = min(o.limit_price, float(path.open[k]))
                else:
                    if path.high[k] < o.limit_price:
                        continue
                    price = max(o.limit_price, float(path.open[k]))
                cap = max(1.0, math.floor(PARTICIPATION * float(path.volume[k])))
                qty = min(remaining, cap)
                remaining -= qty
                ts = session.open + dt.timedelta(minutes=k + 1)
                pending.append(_PendingFill(ts, seq, rec, qty, round(price, 4)))
                seq += 1
            rec.scanned_until = max(
                rec.scanned_until, session.open + dt.timedelta(minutes=max(k1, 0))
            )
        pending.sort(key=lambda p: (p.ts, p.seq))
        for p in pending:
            self._apply_fill(p.rec, p.qty, p.price, p.ts)

    def _expire(self, close: dt.datetime) -> None:
        for rec in self._open_recs():
            if rec.expires_at is not None and rec.expires_at <= close:
                rec.order.status = OrderStatus.EXPIRED
                rec.order.reason = "day order expired at the session close"
                rec.order.updated_at = rec.expires_at
                self._changed[rec.order.client_order_id] = rec
                self._publish("expired", rec.order)

    # -- persistence --------------------------------------------------------------------

    def head(self) -> dict[str, Any]:
        """The account head as JSON-safe data (what every save writes; see the module)."""
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "starting_cash": self.starting_cash,
            "cash": self._cash,
            "realized_pl": self._realized,
            "fees": self._fees,
            "positions": {
                sym: {"qty": h.qty, "avg_price": h.avg_price, "opened_at": _iso(h.opened_at)}
                for sym, h in self._positions.items()
            },
            "processed_until": _iso(self._processed_until),
        }

    def _restore(self, saved: SimSaved) -> None:
        state = json.loads(saved.head)
        version = state.get("version") if isinstance(state, dict) else None
        if version != STATE_VERSION:
            raise BrokerError(
                f"the saved sim state has version {version!r}; this Perun reads version "
                f"{STATE_VERSION} (start with a fresh sim database)"
            )
        if state.get("seed") != self.seed:
            log.warning(
                "sim state was saved with seed %s, now %s: account kept, prices differ",
                state.get("seed"), self.seed,
            )
        self.starting_cash = float(state.get("starting_cash", self.starting_cash))
        self._cash = float(state["cash"])
        self._realized = float(state.get("realized_pl", 0.0))
        self._fees = float(state.get("fees", 0.0))
        self._positions = {
            sym: _Holding(float(p["qty"]), float(p["avg_price"]), _parse(p.get("opened_at")))
            for sym, p in state.get("positions", {}).items()
        }
        self._orders = {}
        self._open = {}
        self._by_broker_id = {}
        for text in saved.open_orders:
            rec = _rec_from_entry(json.loads(text))
            order = rec.order
            self._orders[order.client_order_id] = rec
            if not order.is_final:
                self._open[order.client_order_id] = rec
            if order.broker_order_id:
                self._by_broker_id[order.broker_order_id] = order.client_order_id
        self._order_ids = set(saved.order_ids) | set(self._orders)
        self._fills = [Fill.model_validate_json(text) for text in saved.fills]
        self._changed = {}
        self._new_fills = []
        self._processed_until = _parse(state.get("processed_until"))

    async def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.store is None:
            return
        ref = self._reference_session(self.clock_source.now())
        saved = await self.store.load_sim(None if ref is None else ref.close)
        if saved is not None:
            self._restore(saved)

    async def _stored_order(
        self, *, client_order_id: str | None = None, broker_order_id: str | None = None
    ) -> Order | None:
        """An order that is no longer in memory (final and old), from the store."""
        if self.store is None:
            return None
        text = await self.store.load_sim_order(
            client_order_id=client_order_id, broker_order_id=broker_order_id
        )
        return None if text is None else _rec_from_entry(json.loads(text)).order

    async def _save(self) -> None:
        """Write the head and what changed since the last save, then forget old history."""
        if self.store is not None:
            orders = [_order_row(rec) for rec in self._changed.values()]
            fills = [SimFillRow(f.fill_id, f.ts, f.model_dump_json()) for f in self._new_fills]
            try:
                await self.store.save_sim(_json(self.head()), orders, fills)
            except Exception:  # kept in _changed: the next sync or change saves again
                log.exception("could not save the sim state")
                return
        self._changed = {}
        self._new_fills = []
        self._trim()

    def _trim(self) -> None:
        """Bound what is held in memory: fills ``last_equity`` can no longer need, and
        (when a store keeps them) final orders beyond the latest ``KEEP_FINAL_ORDERS``."""
        if self._processed_until is not None and self._fills:
            ref = self._reference_session(self._processed_until)
            if ref is not None and self._fills[0].ts < ref.close:
                keep = next(
                    (i for i, f in enumerate(self._fills) if f.ts >= ref.close), len(self._fills)
                )
                del self._fills[:keep]
        if self.store is None:
            return
        excess = len(self._orders) - len(self._open_recs()) - KEEP_FINAL_ORDERS
        if excess <= 0:
            return
        old: list[_OrderRec] = []
        for cid, rec in self._orders.items():  # oldest first
            if len(old) == excess:
                break
            if rec.order.is_final and cid not in self._changed:
                old.append(rec)
        for rec in old:
            del self._orders[rec.order.client_order_id]
            self._by_broker_id.pop(rec.order.broker_order_id or "", None)
