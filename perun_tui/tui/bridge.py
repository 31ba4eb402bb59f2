"""The one place where bus events become Textual messages.

A single asyncio task (run as a Textual worker) drains a bus subscription and posts one
:class:`~perun_tui.tui.messages.BusBatch` per frame to the main screen:

* at most ``max_rate_hz`` frames per second, and never a new frame before the screen has
  applied the previous one (``ack()``), so a flood of events turns into fewer, fuller
  frames instead of a growing message queue;
* state events (quotes, portfolio, reasoning deltas, status) are merged per coalescing
  key — the bus already does so while events wait in the subscription, and the fold here
  does it again across one frame;
* record events (signals, orders, fills, errors) are kept, in order;
* log lines are batched and trimmed to what the log panel can hold, lowest levels
  first: a warning or an error is never dropped to make room for chatter, and what is
  dropped is counted (the log panel says so);
* an order update that repeats the previous one for the same order (the broker's reply
  to the submit and its update stream both report the fill) is logged once.

Nothing here touches a widget.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from textual.message_pump import MessagePump

from perun_tui.bus import EventBus, Subscription
from perun_tui.events import (
    AnalysisFinished,
    AnalysisStarted,
    AnalystStatus,
    CycleFinished,
    CycleStarted,
    DaemonState,
    DaemonStateChanged,
    ErrorRaised,
    Event,
    FillReceived,
    Level,
    LogEvent,
    Notification,
    OrderChanged,
    PerformanceUpdated,
    SignalChanged,
)
from perun_tui.models import Order, OrderStatus, SignalStatus
from perun_tui.redact import redact
from perun_tui.tui.messages import BusBatch, LogLine

MAX_INTERVAL_S = 0.5
ORDERS_REMEMBERED = 500
_BAD_ORDER = frozenset({OrderStatus.REJECTED, OrderStatus.FAILED, OrderStatus.UNKNOWN})
_LEVELS = (Level.DEBUG, Level.INFO, Level.WARNING, Level.ERROR)


@dataclass(slots=True)
class Frame:
    events: list[Event] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)
    skipped_logs: Counter[Level] = field(default_factory=Counter)


class OrderLog:
    """The last logged state of each recent order: an update that says nothing new is
    not logged again."""

    def __init__(self, size: int = ORDERS_REMEMBERED) -> None:
        self._seen: OrderedDict[str, tuple[object, ...]] = OrderedDict()
        self._size = size

    def is_news(self, order: Order) -> bool:
        key = order.client_order_id
        state = (order.status, order.filled_qty, order.filled_avg_price, order.reason)
        if self._seen.get(key) == state:
            return False
        self._seen[key] = state
        self._seen.move_to_end(key)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


def order_line(order: Order) -> str:
    """``order BUY AAPL 10 filled @ 231.40 [perun-sim-…]`` — the fill only once there
    is one (an intent reads ``order BUY AAPL 10 new [...]``, not ``filled 0``)."""
    size = f"{order.qty:g}" if order.qty is not None else f"${order.notional or 0:,.2f}"
    done = ""
    if order.filled_qty:
        px = f" @ {order.filled_avg_price:.2f}" if order.filled_avg_price else ""
        partial = order.qty is not None and order.filled_qty < order.qty
        done = f" ({order.filled_qty:g} filled{px})" if partial else px
    why = f" — {order.reason}" if order.reason else ""
    return (
        f"order {order.side.value.upper()} {order.symbol} {size} {order.status.value}"
        f"{done} [{order.client_order_id}]{why}"
    )


def log_line_for(event: Event, at: datetime) -> LogLine | None:
    """The log panel's line for an event, or None when it has no place in the log."""
    if isinstance(event, LogEvent):
        return LogLine(at, event.level, redact(event.message), event.source)
    level: Level | None = None
    if isinstance(event, ErrorRaised):
        level = Level.ERROR
    elif isinstance(event, Notification):
        level = event.level
    elif isinstance(event, SignalChanged):
        proposed = event.transition.new is SignalStatus.PROPOSED
        level = Level.DEBUG if proposed else Level.INFO
    elif isinstance(event, FillReceived):
        level = Level.INFO
    elif isinstance(event, DaemonStateChanged):
        # waiting ⇄ cycling is in the header all the time; the log keeps the rarer moves
        level = (
            Level.WARNING if event.state is DaemonState.HALTED
            else Level.DEBUG if event.state in (DaemonState.WAITING, DaemonState.CYCLING)
            else Level.INFO
        )
    elif isinstance(event, OrderChanged):
        level = Level.WARNING if event.order.status in _BAD_ORDER else Level.INFO
        return LogLine(at, level, redact(order_line(event.order)), "perun")
    elif isinstance(event, CycleFinished):
        level = Level.WARNING if event.report.errors else Level.INFO
    elif isinstance(event, AnalysisFinished):
        level = Level.ERROR if event.error else Level.INFO
    elif isinstance(event, AnalystStatus):
        # the analysis service logs the change itself (a warning with what to do), and
        # the header shows the status: the event's own line is detail
        level = Level.DEBUG
    elif isinstance(event, CycleStarted | AnalysisStarted | PerformanceUpdated):
        level = Level.DEBUG
    if level is None:
        return None
    return LogLine(at, level, redact(event.describe()), "perun")


def trim_logs(lines: list[LogLine], keep: int) -> tuple[list[LogLine], Counter[Level]]:
    """At most ``keep`` lines, dropping the oldest of the lowest level first (debug,
    then info, ...); the kept lines stay in order. Returns them and what was dropped."""
    skipped: Counter[Level] = Counter()
    extra = len(lines) - keep
    if extra <= 0:
        return lines, skipped
    drop: set[int] = set()
    for level in _LEVELS:
        for i, line in enumerate(lines):
            if extra <= 0:
                break
            if line.level is level:
                drop.add(i)
                skipped[level] += 1
                extra -= 1
        if extra <= 0:
            break
    return [line for i, line in enumerate(lines) if i not in drop], skipped


def fold(
    events: list[Event], at: datetime, max_log_lines: int, orders: OrderLog | None = None
) -> Frame:
    """Coalesce one frame: merge state events per key (first position kept), keep record
    events in order, collect log lines (trimmed to ``max_log_lines``, lowest levels
    first); with ``orders``, an order update that repeats the last one is not logged."""
    frame = Frame()
    index: dict[object, int] = {}
    for event in events:
        if orders is None or not isinstance(event, OrderChanged) or orders.is_news(event.order):
            line = log_line_for(event, at)
            if line is not None:
                frame.logs.append(line)
        if isinstance(event, LogEvent):
            continue
        key = event.coalesce_key()
        if key is not None:
            i = index.get(key)
            if i is not None:
                frame.events[i] = _merge(frame.events[i], event)
                continue
            index[key] = len(frame.events)
        frame.events.append(event)
    frame.logs, frame.skipped_logs = trim_logs(frame.logs, max_log_lines)
    return frame


def _merge(older: Event, newer: Event) -> Event:
    """Merge two state events; a daemon state repeated without its reason keeps the
    reason (e.g. halted: the header must go on saying why)."""
    if (
        isinstance(older, DaemonStateChanged)
        and isinstance(newer, DaemonStateChanged)
        and newer.state is older.state
        and not newer.reason
    ):
        return older
    return older.merge(newer)


class Bridge:
    """Bus → screen. Create it before the daemon starts so no event is missed."""

    def __init__(
        self,
        bus: EventBus,
        target: MessagePump,
        now: Callable[[], datetime],
        *,
        max_rate_hz: float = 10.0,
        max_log_lines: int = 200,
        budget: float = 0.15,
    ) -> None:
        """``budget``: the share of the event loop that bus-driven repaints may take. When
        applying and painting a frame costs more than ``budget`` of the frame interval,
        the interval grows (up to ``MAX_INTERVAL_S``): fewer, fuller frames, and keys stay
        responsive however hard the bus floods."""
        self._sub: Subscription[Event] = bus.subscribe()
        self._target = target
        self._now = now
        self._min_interval = 1.0 / max_rate_hz
        self._interval = self._min_interval
        self._budget = budget
        self._max_log_lines = max_log_lines
        self._applied = asyncio.Event()
        self._applied.set()
        self._posted_at = 0.0
        self._orders = OrderLog()
        self.frames = 0
        self.events_in = 0

    @property
    def interval(self) -> float:
        """The current time between frames (seconds)."""
        return self._interval

    def ack(self) -> None:
        """Called by the screen once a frame is applied and painted."""
        if not self._applied.is_set():
            # CPU time, not wall time: waiting for the next screen refresh costs nothing
            cost = time.process_time() - self._posted_at
            self._interval = min(MAX_INTERVAL_S, max(self._min_interval, cost / self._budget))
        self._applied.set()

    def close(self) -> None:
        self._sub.close()

    @property
    def idle(self) -> bool:
        """Nothing queued and the last frame applied."""
        return not len(self._sub) and self._applied.is_set()

    async def settled(self) -> None:
        """Wait until everything published so far has been applied (tests, screenshots);
        wrap it in ``asyncio.timeout()``."""
        # polling: publish() wakes the subscription, not us, and this is a test helper
        while not self.idle:  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time() - self._interval
        try:
            while True:
                await self._sub.wait()
                if self._sub.closed and not len(self._sub):
                    return
                await self._applied.wait()
                delay = last + self._interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                events = self._sub.drain()
                if not events:
                    continue
                self.events_in += len(events)
                frame = fold(events, self._now(), self._max_log_lines, self._orders)
                self._applied.clear()
                last = loop.time()
                self._posted_at = time.process_time()
                self.frames += 1
                if not self._target.post_message(
                    BusBatch(frame.events, frame.logs, frame.skipped_logs)
                ):
                    return  # the screen is gone
        finally:
            self._sub.close()
