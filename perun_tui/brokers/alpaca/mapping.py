"""alpaca-py's models as Perun's: orders, quotes, bars. Never raises on unusual input."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, overload

from perun_tui.models import (
    Bar,
    Order,
    OrderStatus,
    OrderType,
    Quote,
    Side,
    client_order_id_for,
)

__all__ = [
    "alpaca_status",
    "bar_from_sdk",
    "enum_value",
    "number",
    "order_from_sdk",
    "perun_order_prefix",
    "quote_from_snapshot",
    "utc",
]


def enum_value(x: Any) -> str:
    """The string value of an SDK enum (or the string itself)."""
    return str(getattr(x, "value", x) or "")


@overload
def number(x: Any) -> float | None: ...
@overload
def number(x: Any, default: float) -> float: ...
def number(x: Any, default: float | None = None) -> float | None:
    """A finite float from Alpaca's strings and numbers; ``default`` when there is none."""
    if x is None or x == "":
        return default
    try:
        value = float(x)
    except (TypeError, ValueError):
        return default
    return value if math.isfinite(value) else default


def utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    if ts.tzinfo is None or ts.utcoffset() is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


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


def perun_order_prefix(mode: str) -> str:
    """How the client order ids of the orders Perun places in ``mode`` begin."""
    return client_order_id_for("", mode)


def order_from_sdk(o: Any, *, mode: str | None = None) -> Order:
    """An alpaca-py ``Order`` as our ``Order`` (never raises on unusual order types).

    With ``mode``, an order whose client order id Perun did not make (placed in the
    Alpaca dashboard, by another program...) is marked ``external``.
    """
    raw_status = enum_value(o.status)
    qty = number(o.qty)
    filled = number(o.filled_qty, 0.0)
    status = alpaca_status(raw_status, filled, qty)
    raw_type = enum_value(o.type or o.order_type) or "market"
    limit_price = number(o.limit_price)
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
    avg = number(o.filled_avg_price)
    cid = str(o.client_order_id)
    return Order(
        client_order_id=cid,
        symbol=str(o.symbol or ""),
        side=Side.SELL if enum_value(o.side) == "sell" else Side.BUY,
        qty=qty,
        notional=number(o.notional),
        type=otype,
        limit_price=limit_price,
        status=status,
        broker_order_id=str(o.id),
        filled_qty=filled,
        filled_avg_price=avg if avg else None,  # Alpaca may say 0 before any fill
        reason=reason,
        created_at=utc(o.created_at),
        updated_at=utc(o.updated_at),
        external=mode is not None and not cid.startswith(perun_order_prefix(mode)),
    )


def quote_from_snapshot(symbol: str, snap: Any) -> Quote | None:
    """Latest quote + last trade + latest minute bar of an alpaca-py ``Snapshot``."""
    quote = snap.latest_quote
    trade = snap.latest_trade
    minute = snap.minute_bar
    daily = snap.daily_bar
    bid = number(getattr(quote, "bid_price", None), 0.0)
    ask = number(getattr(quote, "ask_price", None), 0.0)
    last = number(getattr(trade, "price", None), 0.0)
    if last <= 0:
        last = number(getattr(minute, "close", None), 0.0) or number(
            getattr(daily, "close", None), 0.0
        )
    if last <= 0 and bid > 0 and ask > 0:
        last = (bid + ask) / 2
    if last <= 0:
        return None
    stamps = [
        utc(getattr(x, "timestamp", None)) for x in (trade, quote, minute) if x is not None
    ]
    known = [s for s in stamps if s is not None]
    ts = max(known) if known else datetime.now(UTC)
    volume = number(getattr(minute, "volume", None), 0.0) if minute is not None else 0.0
    return Quote(symbol=symbol, ts=ts, bid=bid, ask=ask, last=last, volume=volume)


def bar_from_sdk(symbol: str, b: Any) -> Bar:
    ts = utc(b.timestamp)
    assert ts is not None
    return Bar(
        symbol=symbol,
        ts=ts,
        open=number(b.open, 0.0),
        high=number(b.high, 0.0),
        low=number(b.low, 0.0),
        close=number(b.close, 0.0),
        volume=number(b.volume, 0.0),
    )
