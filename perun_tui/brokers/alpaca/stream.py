"""Order updates: alpaca-py's ``TradingStream`` plus a REST re-read after every connect.

The stream runs as a task on the caller's loop (its ``run()`` would call
``asyncio.run``). It does not replay what was missed while disconnected, so after every
(re)connection the open orders — and every tracked order not known to be final — are
re-read over REST, and any change becomes an update, with a synthesised fill for the
quantity filled in the gap (``_StreamLedger``).

The connection's health is watched too: an outage is announced once (not every
reconnect attempt) through the broker's notices, and its end likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from perun_tui.brokers.alpaca.mapping import enum_value, number, order_from_sdk, utc
from perun_tui.brokers.base import BrokerError
from perun_tui.brokers.fills import gap_fill
from perun_tui.models import FINAL_ORDER_STATUSES, Fill, Order, OrderStatus, OrderUpdate

__all__ = ["Notice", "OrderStream", "StreamStats", "probe_stream"]

log = logging.getLogger(__name__)

Notice = Callable[[int, str], None]
"""(logging level, message) for the user."""

_RESYNC_ATTEMPTS = 6


# --------------------------------------------------------------------------- the ledger


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
        avg = (seen.avg_price if seen else None) or order.filled_avg_price or 0.0
        return gap_fill(order, recorded_qty=before, recorded_value=avg * before, id_prefix="rest")


# --------------------------------------------------------------------------- the stream


@dataclass
class StreamStats:
    connects: int = 0
    resyncs: int = 0
    events: int = 0


class _Rest(Protocol):
    """What the stream needs from the REST side of the broker."""

    mode: str

    async def open_orders(self) -> list[Order]: ...

    async def order_by_broker_id(self, broker_order_id: str, client_order_id: str) -> Order: ...


class OrderStream:
    """The order-update stream of one Alpaca account, run on the caller's loop."""

    def __init__(
        self,
        rest: _Rest,
        *,
        key: str,
        secret: str,
        paper: bool,
        url: str | None,
        timeout_s: float,
        backoff_s: tuple[float, float],
        notice: Notice,
        stats: StreamStats | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._rest = rest
        self._key = key
        self._secret = secret
        self._paper = paper
        self.url = url
        self._timeout_s = timeout_s
        self._backoff = backoff_s
        self._notice = notice
        self._sleep = sleep
        self.stats = stats if stats is not None else StreamStats()
        self.ledger = _StreamLedger()
        # off, connecting, connected, reconnecting, disconnected, unauthorized, closed
        self.state = "off"
        self.outage_since: float | None = None  # monotonic time the current outage began
        self.last_error = ""
        self._queue: asyncio.Queue[OrderUpdate | None] | None = None
        self._stream: Any = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._resync_lock: asyncio.Lock | None = None
        self._closed = False

    # ------------------------------------------------------------------ updates

    def _updates_queue(self) -> asyncio.Queue[OrderUpdate | None]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    async def updates(self) -> AsyncIterator[OrderUpdate]:
        """Stream events and REST re-reads, until ``close()``. One consumer (the daemon)."""
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

    # ------------------------------------------------------------------ health

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def _lost(self, state: str, why: str) -> None:
        """The stream is down (or could not come up): announce it once per outage."""
        if self._closed:
            return
        self.state = state
        self.last_error = why
        if self.outage_since is not None:
            return
        self.outage_since = time.monotonic()
        where = self.url or ("Alpaca's paper stream" if self._paper else "Alpaca's live stream")
        if state == "unauthorized":
            text = (
                f"order-update stream at {where}: Alpaca refused the keys; fills are only "
                "seen when orders are looked up over REST until it is back"
            )
        else:
            text = (
                f"order-update stream at {where} is not connected ({why}); reconnecting — "
                "fills are only seen when orders are looked up over REST until it is back"
            )
        self._notice(logging.WARNING, text)

    def _connected(self) -> None:
        self.stats.connects += 1
        self.state = "connected"
        self.last_error = ""
        if self.outage_since is not None:
            down = time.monotonic() - self.outage_since
            self.outage_since = None
            self._notice(
                logging.INFO,
                f"order-update stream connected again after {down:.0f}s; open orders "
                "re-read so nothing is missed",
            )
        first = self.stats.connects == 1
        task = asyncio.create_task(self._resync(first), name="alpaca-resync")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # websockets.legacy
            from alpaca.trading.stream import TradingStream

        stream_cls: Any = TradingStream  # its url_override is typed str, but None means default
        self._updates_queue()
        self._resync_lock = asyncio.Lock()
        stream: Any = stream_cls(
            self._key,
            self._secret,
            paper=self._paper,
            url_override=self.url,
            websocket_params={
                "ping_interval": 10,
                "ping_timeout": 20,  # SDK default 180 s: a dead link would go unseen
                "max_queue": 1024,
                "open_timeout": self._timeout_s,
                "close_timeout": 2,  # default 10 s would hold up shutdown
            },
        )
        if hasattr(stream, "_reconnect_min_backoff"):
            stream._reconnect_min_backoff, stream._reconnect_max_backoff = self._backoff
        original_start = stream._start_ws
        original_consume = stream._consume

        async def start_ws() -> None:
            self.state = "reconnecting" if self.stats.connects else "connecting"
            # connect + authenticate + listen under a deadline: the SDK waits forever
            # for the authorization reply
            try:
                await asyncio.wait_for(original_start(), self._timeout_s)
            except ValueError:  # the SDK's "failed to authenticate"
                self._lost("unauthorized", "authentication refused")
                raise
            except Exception as exc:
                self._lost("disconnected", _why(exc))
                raise
            self._connected()

        async def consume() -> None:
            try:
                await original_consume()
            except Exception as exc:
                self._lost("disconnected", _why(exc))
                raise
            # a normal return is a requested stop

        stream._start_ws = start_ws
        stream._consume = consume
        stream.subscribe_trade_updates(self._on_trade_update)
        self._stream = stream
        self.state = "connecting"
        self._task = asyncio.create_task(stream._run_forever(), name="alpaca-trade-updates")

    async def close(self) -> None:
        """Stop the stream and end ``updates()``; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.state = "closed"
        stream, task = self._stream, self._task
        self._stream, self._task = None, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream._should_run = False
        tasks = [*([task] if task else []), *self._tasks]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(t, 2.0)
        self._tasks.clear()
        if stream is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stream.close(), 2.0)
        if self._queue is not None:
            self._queue.put_nowait(None)

    # ------------------------------------------------------------------ handlers

    async def _on_trade_update(self, data: Any) -> None:
        """Stream handler: must never raise (the SDK would swallow it anyway)."""
        try:
            self.stats.events += 1
            order = order_from_sdk(data.order, mode=self._rest.mode)
            event = enum_value(data.event)
            fill: Fill | None = None
            qty = abs(number(data.qty, 0.0))
            price = number(data.price, 0.0)
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
                    ts=utc(data.timestamp) or datetime.now(UTC),
                )
            update = OrderUpdate(event=event, order=order, fill=fill)
            self._emit(self.ledger.from_stream(update))
        except Exception:
            log.exception("could not handle an Alpaca trade update")

    async def _resync(self, first: bool) -> None:
        """After a (re)connect: re-read open orders and report what changed meanwhile."""
        assert self._resync_lock is not None
        async with self._resync_lock:
            orders: list[Order] | None = None
            for attempt in range(_RESYNC_ATTEMPTS):
                try:
                    orders = await self._rest.open_orders()
                    break
                except BrokerError as exc:
                    log.warning("re-reading open orders after reconnect failed: %s", exc)
                    await self._sleep(min(2.0**attempt, 15.0))
            if orders is None:
                return
            open_ids = {o.client_order_id for o in orders}
            for order in orders:
                self._emit(self.ledger.from_rest(order, baseline=first))
            for cid, broker_id in self.ledger.pending():
                if cid in open_ids or not broker_id:
                    continue
                try:
                    order = await self._rest.order_by_broker_id(broker_id, cid)
                except BrokerError as exc:
                    log.warning("re-reading order %s after reconnect failed: %s", cid, exc)
                    continue
                self._emit(self.ledger.from_rest(order, baseline=False))
            self.stats.resyncs += 1


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def probe_stream(
    key: str, secret: str, *, paper: bool, url: str | None, timeout_s: float
) -> str | None:
    """Connect, authenticate and listen once, then close: None when that worked, else
    why not (for ``perun doctor``, which has no running stream to ask)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # websockets.legacy
        from alpaca.trading.stream import TradingStream

    async def ignore(data: Any) -> None:
        return None

    stream_cls: Any = TradingStream
    stream: Any = stream_cls(
        key, secret, paper=paper, url_override=url,
        websocket_params={"open_timeout": timeout_s, "close_timeout": 1},
    )
    stream.subscribe_trade_updates(ignore)
    try:
        await asyncio.wait_for(stream._start_ws(), timeout_s)
    except ValueError:
        return "Alpaca refused the keys on the stream"
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except Exception as exc:
        return _why(exc)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stream.close(), 2.0)
    return None
