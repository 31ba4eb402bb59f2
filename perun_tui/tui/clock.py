"""The screen's idea of "now": the daemon's clock (simulated in sim mode), or real time.

Ages, time-to-live and the next-cycle countdown are computed against the daemon's clock,
because signals and schedules are stamped in that time. The countdown is shown in real
seconds, which for a simulated clock running ``speed``× faster is the sim gap / speed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class _Now(Protocol):
    def now(self) -> datetime: ...


@runtime_checkable
class _RealSeconds(Protocol):
    def real_seconds_until(self, t: datetime) -> float: ...


class ScreenClock:
    def __init__(self, source: object | None = None) -> None:
        self._source: _Now | None = source if isinstance(source, _Now) else None

    def use(self, source: object | None) -> None:
        """Switch to the daemon's clock once the runtime exists."""
        if isinstance(source, _Now):
            self._source = source

    def now(self) -> datetime:
        if self._source is None:
            return datetime.now(UTC)
        return self._source.now()

    def real_seconds_until(self, t: datetime) -> float:
        src = self._source
        if isinstance(src, _RealSeconds):
            try:
                return src.real_seconds_until(t)
            except Exception:  # a clock quirk must never break the header
                pass
        return (t - self.now()).total_seconds()
