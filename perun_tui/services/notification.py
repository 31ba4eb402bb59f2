"""Notifiers: where summaries and alerts go — screen toasts, the log, webhooks, email.

Delivery never blocks or breaks a cycle. ``NotificationService.notify`` hands a
notification to the in-process notifiers at once (they only append to a queue or a log)
and puts it on a bounded per-notifier queue for the remote ones (webhook, email), which a
background task drains; ``notify`` returns without waiting for the network.

Per notifier, in this order:

* **event filter** — each notifier takes only the categories it was configured for
  (fills, rejections, halts, analysis_failures, daily_summary, pending, changes);
* **dedup** — the same notification again within ``dedup_window_s`` is dropped. "The
  same" is the caller's ``key`` when it gives one (a fill passes its fill id: two partial
  fills at the same price are two messages, a fill the broker reports twice is one), else
  the category, title and message;
* **rate limit** (remote notifiers) — at most ``rate_limit_per_minute`` in any 60 s window;
  the excess is held and goes out as one digest once the window has room, or at once when
  the service closes, so nothing is lost silently. Fills and daily summaries are records
  the user asked to get one message each for: they are exempt (``UNLIMITED``) and go out
  one by one from the notifier's queue;
* **failures are logged once** — the first failure of a notifier is logged (and shown in
  the log panel); further failures are counted, not logged, until it works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from perun_tui.bus import EventBus
from perun_tui.events import (
    Event,
    FillReceived,
    Level,
    LogEvent,
    Notification,
    OrderChanged,
)
from perun_tui.models import Fill, OrderStatus

if TYPE_CHECKING:
    from perun_tui.config import Settings

log = logging.getLogger("perun.notify")

RATE_WINDOW_S = 60.0
QUEUE_SIZE = 200
CLOSE_DIGEST_TIMEOUT_S = 5.0


class Category(StrEnum):
    FILLS = "fills"
    REJECTIONS = "rejections"
    HALTS = "halts"
    ANALYSIS_FAILURES = "analysis_failures"
    DAILY_SUMMARY = "daily_summary"
    PENDING = "pending"
    CHANGES = "changes"
    OTHER = "other"


TAG_CATEGORIES: dict[str, Category] = {
    "fill": Category.FILLS,
    "fills": Category.FILLS,
    "rejection": Category.REJECTIONS,
    "rejected": Category.REJECTIONS,
    "rejections": Category.REJECTIONS,
    "halt": Category.HALTS,
    "halts": Category.HALTS,
    "analysis": Category.ANALYSIS_FAILURES,
    "analysis_failures": Category.ANALYSIS_FAILURES,
    "summary": Category.DAILY_SUMMARY,
    "daily_summary": Category.DAILY_SUMMARY,
    "pending": Category.PENDING,
    "change": Category.CHANGES,
    "changes": Category.CHANGES,
}


UNLIMITED: frozenset[Category] = frozenset({Category.FILLS, Category.DAILY_SUMMARY})
"""Never rate-limited or folded into a digest: one message per fill and per session."""

UNREPORTED_FILL_PREFIXES = ("gap:", "rest:")
"""Fill ids of fills no stream ``fill`` event brought: recorded from an order's filled
quantity by a REST re-read or at reconciliation (``services/execution.py``, ``gap:``) or
restated by the Alpaca stream after a reconnect (``brokers/fills.gap_fill``, ``rest:``).
The daemon notifies the stream's fill events itself; these the service notifies from the
bus (``watch``), so every stored fill is told once."""


def fill_message(fill: Fill) -> str:
    """The text of a fill notification (the daemon's and ``watch``'s alike)."""
    return f"{fill.side.value.upper()} {fill.symbol} {fill.qty:g} @ {fill.price:.2f}"


def category_of(notification: Notification) -> Category:
    """The category from the first tag that names one (the daemon tags every notify)."""
    for tag in notification.tags:
        found = TAG_CATEGORIES.get(tag.lower())
        if found is not None:
            return found
    return Category.OTHER


@runtime_checkable
class Notifier(Protocol):
    """Delivers one notification; may raise — the service contains the failure.

    Optional attributes the service reads: ``events`` (categories accepted; absent or
    ``None`` = all) and ``remote`` (True: may block on the network, so delivered from a
    background queue; absent = False).
    """

    name: str

    async def send(self, notification: Notification) -> None: ...


class BusNotifier:
    """Publishes on the bus; the TUI shows these as toasts (and rings the bell)."""

    name = "screen"
    remote = False

    def __init__(self, bus: EventBus, events: Iterable[str] | None = None) -> None:
        self.bus = bus
        self.events = None if events is None else frozenset(Category(e) for e in events)

    async def send(self, notification: Notification) -> None:
        self.bus.publish(notification)


class ScreenAlerts:
    """Which notifications the screen toasts and which ring the terminal bell
    (``notify.toast_events``, ``notify.bell_events``, ``notify.bell``).

    The bus carries every notification (the log panel lists them all); the TUI asks
    ``toast(n)`` before it shows a toast and ``bell(n)`` before it rings. A notification
    outside the configurable categories (``other``) is toasted and never rings.
    """

    def __init__(
        self, toast_events: Iterable[str], bell_events: Iterable[str], *, bell: bool = True
    ) -> None:
        self.toast_events = frozenset(Category(e) for e in toast_events)
        self.bell_events = frozenset(Category(e) for e in bell_events) if bell else frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> ScreenAlerts:
        n = settings.notify
        return cls(n.toast_events, n.bell_events, bell=n.bell)

    def toast(self, notification: Notification) -> bool:
        category = category_of(notification)
        return category is Category.OTHER or category in self.toast_events

    def bell(self, notification: Notification) -> bool:
        return category_of(notification) in self.bell_events


class LogNotifier:
    name = "log"
    remote = False
    events: frozenset[Category] | None = None

    async def send(self, notification: Notification) -> None:
        level = (
            logging.WARNING
            if notification.level in (Level.WARNING, Level.ERROR)
            else (logging.INFO)
        )
        log.log(level, "%s: %s", notification.title, notification.message)


class _Channel:
    """One notifier with its filter, dedup memory, rate window, queue and failure state."""

    def __init__(
        self,
        notifier: Notifier,
        *,
        rate_limit: int,
        dedup_window_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.notifier = notifier
        self.name = notifier.name
        events = getattr(notifier, "events", None)
        self.events: frozenset[Category] | None = (
            None if events is None else frozenset(Category(e) for e in events)
        )
        self.remote = bool(getattr(notifier, "remote", False))
        self.rate_limit = rate_limit
        self.dedup_window_s = dedup_window_s
        self.clock = clock
        self.seen: dict[tuple[str, ...], float] = {}
        self.sent_at: deque[float] = deque()
        self.held: list[Notification] = []
        self.queue: asyncio.Queue[Notification] = asyncio.Queue(QUEUE_SIZE)
        self.worker: asyncio.Task[None] | None = None
        self.flusher: asyncio.Task[None] | None = None
        self.failing = False
        self.failures = 0
        self.delivered = 0
        self.dropped = 0

    def accepts(
        self, notification: Notification, category: Category, key: str | None = None
    ) -> bool:
        if self.events is not None and category not in self.events:
            return False
        now = self.clock()
        dedup = (
            (category.value, notification.title, notification.message)
            if key is None
            else (category.value, "key", key)
        )
        last = self.seen.get(dedup)
        if last is not None and now - last < self.dedup_window_s:
            return False
        self.seen[dedup] = now
        if len(self.seen) > 1000:  # forget the oldest half
            for k in sorted(self.seen, key=self.seen.__getitem__)[:500]:
                del self.seen[k]
        return True

    def take_slot(self) -> bool:
        """Count one send against the rate window; False when the window is full."""
        now = self.clock()
        while self.sent_at and now - self.sent_at[0] >= RATE_WINDOW_S:
            self.sent_at.popleft()
        if len(self.sent_at) >= self.rate_limit:
            return False
        self.sent_at.append(now)
        return True

    def wait_for_slot_s(self) -> float:
        if len(self.sent_at) < self.rate_limit:
            return 0.0
        return max(0.0, RATE_WINDOW_S - (self.clock() - self.sent_at[0]))


def digest(held: Sequence[Notification]) -> Notification:
    """Notifications held back by the rate limit, as one."""
    lines = [f"• {n.title}: {n.message}" for n in held[:20]]
    if len(held) > 20:
        lines.append(f"… and {len(held) - 20} more")
    worst = max(
        (n.level for n in held),
        key=[Level.DEBUG, Level.INFO, Level.WARNING, Level.ERROR].index,
    )
    tags = tuple(dict.fromkeys(t for n in held for t in n.tags))
    return Notification(
        title=f"{len(held)} notifications (rate limited)",
        message="\n".join(lines),
        level=worst,
        tags=tags,
    )


class NotificationService:
    """Routes notifications to notifiers without ever blocking or raising to the caller."""

    def __init__(
        self,
        notifiers: Sequence[Notifier],
        *,
        rate_limit_per_minute: int = 20,
        dedup_window_s: float = 60.0,
        bus: EventBus | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifiers = list(notifiers)
        self.bus = bus
        self._channels = [
            _Channel(
                n, rate_limit=rate_limit_per_minute, dedup_window_s=dedup_window_s, clock=clock
            )
            for n in self.notifiers
        ]
        self._closed = False

    # ------------------------------------------------------------------ entry points

    async def notify(
        self,
        title: str,
        message: str,
        level: Level = Level.INFO,
        *tags: str,
        key: str | None = None,
    ) -> None:
        """Deliver now to in-process notifiers, queue for remote ones; never raises.

        ``key`` identifies the thing notified about for dedup (e.g. ``fill:<fill id>``);
        without it, the category, title and message do.
        """
        notification = Notification(title=title, message=message, level=level, tags=tags)
        await self.send(notification, key=key)

    async def send(self, notification: Notification, *, key: str | None = None) -> None:
        category = category_of(notification)
        for channel in self._channels:
            if not channel.accepts(notification, category, key):
                continue
            if channel.remote:
                self._enqueue(channel, notification)
            else:
                await self._deliver(channel, notification)

    def submit(self, notification: Notification, *, key: str | None = None) -> None:
        """Synchronous variant for bus listeners: everything goes through the queues."""
        category = category_of(notification)
        for channel in self._channels:
            if channel.accepts(notification, category, key):
                self._enqueue(channel, notification)

    def watch(self, bus: EventBus) -> None:
        """Turn order rejections seen on the bus into ``rejections`` notifications, and
        fills recorded without a stream event (``UNREPORTED_FILL_PREFIXES``) into
        ``fills`` ones."""
        bus.listen(self._on_event, OrderChanged, FillReceived)

    def _on_event(self, event: Event) -> None:
        if self._closed:
            return
        if isinstance(event, FillReceived):
            fill = event.fill
            if fill.fill_id.startswith(UNREPORTED_FILL_PREFIXES):
                self.submit(
                    Notification(title="Filled", message=fill_message(fill), tags=("fill",)),
                    key=f"fill:{fill.fill_id}",
                )
            return
        if not isinstance(event, OrderChanged):
            return
        order = event.order
        if order.status not in (OrderStatus.REJECTED, OrderStatus.FAILED) or order.external:
            return
        qty = f"{order.qty:g}" if order.qty is not None else f"${order.notional or 0:,.2f}"
        why = f": {order.reason}" if order.reason else ""
        self.submit(
            Notification(
                title="Order rejected" if order.status is OrderStatus.REJECTED else "Order failed",
                message=f"{order.side.value.upper()} {order.symbol} {qty}{why}",
                level=Level.WARNING,
                tags=("rejection",),
            )
        )

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Flush what is queued (up to ``timeout_s``), send what the rate limit still
        holds as one digest per notifier, then stop the background tasks."""
        self._closed = True
        queued = [c for c in self._channels if c.worker is not None]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(c.queue.join() for c in queued)), timeout=timeout_s
            )
        for channel in self._channels:
            await _cancel(channel.flusher)
            if channel.held:
                await self._send_held_on_close(channel, min(timeout_s, CLOSE_DIGEST_TIMEOUT_S))
            await _cancel(channel.worker)
        for n in self.notifiers:
            closer = getattr(n, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()

    def stats(self) -> dict[str, dict[str, int | bool]]:
        return {
            c.name: {
                "delivered": c.delivered,
                "failures": c.failures,
                "dropped": c.dropped,
                "held": len(c.held),
                "failing": c.failing,
            }
            for c in self._channels
        }

    # ------------------------------------------------------------------ delivery

    def _enqueue(self, channel: _Channel, notification: Notification) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.debug("no event loop: notification %r not delivered", notification.title)
            return
        if channel.worker is None or channel.worker.done():
            channel.worker = loop.create_task(
                self._work(channel), name=f"perun-notify-{channel.name}"
            )
        try:
            channel.queue.put_nowait(notification)
        except asyncio.QueueFull:
            channel.dropped += 1
            if channel.dropped == 1:
                self._report(
                    Level.WARNING,
                    f"notifier {channel.name}: queue full ({QUEUE_SIZE}); dropping "
                    "notifications until it catches up",
                )

    async def _work(self, channel: _Channel) -> None:
        while True:
            notification = await channel.queue.get()
            try:
                await self._deliver(channel, notification)
            finally:
                channel.queue.task_done()

    async def _deliver(self, channel: _Channel, notification: Notification) -> None:
        limited = channel.remote and category_of(notification) not in UNLIMITED
        if limited and not channel.take_slot():
            channel.held.append(notification)
            self._schedule_flush(channel)
            return
        await self._send_contained(channel, notification)

    def _schedule_flush(self, channel: _Channel) -> None:
        if channel.flusher is not None and not channel.flusher.done():
            return
        with contextlib.suppress(RuntimeError):
            channel.flusher = asyncio.get_running_loop().create_task(self._flush(channel))

    async def _flush(self, channel: _Channel) -> None:
        while channel.held:
            # re-check at least once a second: the window is measured on ``clock``
            await asyncio.sleep(min(channel.wait_for_slot_s(), 1.0) + 0.01)
            if not channel.take_slot():
                continue
            held = list(channel.held)
            # cleared only once sent: cancelled mid-send (shutdown), close sends them
            await self._send_contained(channel, held[0] if len(held) == 1 else digest(held))
            del channel.held[: len(held)]

    async def _send_held_on_close(self, channel: _Channel, timeout_s: float) -> None:
        held, channel.held = channel.held, []
        self._report(
            Level.INFO,
            f"notifier {channel.name}: sending {len(held)} notification(s) held by the rate "
            "limit as one digest before closing",
        )
        try:
            await asyncio.wait_for(
                self._send_contained(channel, held[0] if len(held) == 1 else digest(held)),
                timeout=timeout_s,
            )
        except TimeoutError:
            channel.failures += 1
            self._report(
                Level.WARNING,
                f"notifier {channel.name}: the closing digest of {len(held)} notification(s) "
                f"was not delivered within {timeout_s:g}s",
            )

    async def _send_contained(self, channel: _Channel, notification: Notification) -> None:
        try:
            await channel.notifier.send(notification)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            channel.failures += 1
            if not channel.failing:
                channel.failing = True
                self._report(
                    Level.WARNING,
                    f"notifier {channel.name} failed: {type(exc).__name__}: {exc} "
                    "(reported once; cycles carry on)",
                )
        else:
            channel.delivered += 1
            if channel.failing:
                channel.failing = False
                self._report(
                    Level.INFO,
                    f"notifier {channel.name} works again ({channel.failures} failed so far)",
                )

    def _report(self, level: Level, message: str) -> None:
        log.log(logging.WARNING if level is not Level.INFO else logging.INFO, "%s", message)
        if self.bus is not None:
            with contextlib.suppress(Exception):
                self.bus.publish(LogEvent(level=level, message=message, source="notify"))


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


# --------------------------------------------------------------------------- wiring


def build_notifiers(settings: Settings, bus: EventBus) -> list[Notifier]:
    """The notifiers the settings ask for: screen and log always, webhook and email when
    configured (each with its event filter)."""
    notifiers: list[Notifier] = [BusNotifier(bus), LogNotifier()]
    n = settings.notify
    if n.webhook_url:
        from perun_tui.services.notifiers.webhook import WebhookNotifier

        notifiers.append(
            WebhookNotifier(
                n.webhook_url,
                style=n.webhook_format,
                events=n.webhook_events,
                timeout_s=n.webhook_timeout_s,
                mode=settings.trading.mode,
            )
        )
    if n.smtp_host and n.email_to:
        from perun_tui.services.notifiers.email import EmailNotifier

        notifiers.append(
            EmailNotifier(
                host=n.smtp_host,
                port=n.smtp_port,
                sender=n.email_from or n.smtp_user,
                recipients=n.email_to,
                user=n.smtp_user,
                password=n.smtp_password.get_secret_value(),
                starttls=n.smtp_starttls,
                cafile=n.smtp_cafile or None,
                timeout_s=n.smtp_timeout_s,
                events=n.email_events,
                mode=settings.trading.mode,
            )
        )
    return notifiers


def build_notification_service(settings: Settings, bus: EventBus) -> NotificationService:
    """What ``runtime.build_runtime`` should use: every configured notifier, the limits
    from ``[notify]``, failures reported on the bus, and order rejections watched."""
    service = NotificationService(
        build_notifiers(settings, bus),
        rate_limit_per_minute=settings.notify.rate_limit_per_minute,
        dedup_window_s=settings.notify.dedup_window_s,
        bus=bus,
    )
    service.watch(bus)
    return service
