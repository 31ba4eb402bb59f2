"""Textual messages the TUI passes around.

The bridge posts one :class:`BusBatch` per frame (at most ~10 per second): everything
that happened on the bus since the previous frame, already coalesced, so the screen
applies a whole frame inside one ``batch_update()`` and repaints once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from textual.message import Message

from perun_tui.events import Event, Level


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line for the log panel."""

    at: datetime
    level: Level
    text: str
    source: str = "daemon"


class BusBatch(Message, bubble=False):
    """One frame's worth of bus events.

    ``events`` keeps record events in order and at most one (merged) state event per
    coalescing key; ``logs`` are the lines for the log panel, trimmed to what the panel can
    hold, lowest levels first (``skipped_logs`` counts the rest per level).
    """

    def __init__(
        self,
        events: list[Event],
        logs: list[LogLine],
        skipped_logs: Mapping[Level, int] | None = None,
    ) -> None:
        super().__init__()
        self.events = events
        self.logs = logs
        self.skipped_logs: Mapping[Level, int] = skipped_logs or {}


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """An error kept for the details modal (``e``): short message, and what to do."""

    at: datetime
    where: str
    message: str
    detail: str = ""
