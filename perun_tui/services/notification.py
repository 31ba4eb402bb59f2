"""Notifiers: where summaries and alerts go (screen toast via the bus, the log, ...).

Delivery never blocks or breaks a cycle: ``NotificationService.notify`` hands the
notification to every notifier, and a failing notifier is reported once, not every cycle.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from perun_tui.bus import EventBus
from perun_tui.events import Level, Notification

log = logging.getLogger("perun.notify")


@runtime_checkable
class Notifier(Protocol):
    name: str

    async def send(self, notification: Notification) -> None: ...


class BusNotifier:
    """Publishes on the bus; the TUI shows these as toasts (and rings the bell)."""

    name = "screen"

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    async def send(self, notification: Notification) -> None:
        self.bus.publish(notification)


class LogNotifier:
    name = "log"

    async def send(self, notification: Notification) -> None:
        level = (
            logging.WARNING
            if notification.level in (Level.WARNING, Level.ERROR)
            else (logging.INFO)
        )
        log.log(level, "%s: %s", notification.title, notification.message)


class NotificationService:
    def __init__(self, notifiers: list[Notifier]) -> None:
        self.notifiers = notifiers
        self._failing: set[str] = set()

    async def notify(self, title: str, message: str, level: Level = Level.INFO, *tags: str) -> None:
        notification = Notification(title=title, message=message, level=level, tags=tags)
        for notifier in self.notifiers:
            try:
                await notifier.send(notification)
            except Exception as exc:  # a notifier must never break a cycle
                if notifier.name not in self._failing:
                    self._failing.add(notifier.name)
                    log.warning("notifier %s failed: %s (reported once)", notifier.name, exc)
            else:
                self._failing.discard(notifier.name)
