"""Trading calendar (NYSE) and clocks: wall clock, simulated clock, frozen clock.

Core module: never imports Textual. ``pandas_market_calendars`` (and so pandas) is
imported lazily, the first time a schedule is needed, so importing this module is cheap.

All datetimes going in must be tz-aware; all datetimes coming out are tz-aware UTC
stdlib ``datetime`` objects (no pandas types leak out of this module).
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

__all__ = [
    "EXCHANGE_TZ",
    "UTC",
    "Clock",
    "FrozenClock",
    "MarketStatus",
    "Session",
    "SimClock",
    "TradingCalendar",
    "WallClock",
    "default_calendar",
    "next_cycle_time",
    "to_utc_datetime",
]

UTC = dt.UTC
EXCHANGE_TZ = ZoneInfo("America/New_York")
_REGULAR_CLOSE = dt.time(16, 0)
_MIN_SLEEP_S = 0.001


# --------------------------------------------------------------------------- helpers


def to_utc_datetime(value: Any) -> dt.datetime:
    """Convert a pandas ``Timestamp`` (or a stdlib datetime) to a tz-aware UTC datetime.

    Naive values are taken to be UTC (that is how the calendar reports them). The result is
    always a plain ``datetime.datetime`` with ``tzinfo=datetime.UTC``.
    """
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expected a Timestamp or datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _to_date(value: Any) -> dt.date:
    """Date of a schedule index entry (pandas Timestamp or stdlib date/datetime)."""
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    raise TypeError(f"expected a date, got {type(value).__name__}")


def _aware_utc(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware: {at!r}")
    return at.astimezone(UTC)


def _exchange_date(at: dt.datetime) -> dt.date:
    return at.astimezone(EXCHANGE_TZ).date()


# --------------------------------------------------------------------------- calendar


@dataclass(frozen=True, slots=True)
class Session:
    """One trading session. ``open``/``close`` are tz-aware UTC; ``date`` is the exchange date."""

    date: dt.date
    open: dt.datetime
    close: dt.datetime
    early_close: bool

    def contains(self, at: dt.datetime) -> bool:
        """True when ``open <= at < close``."""
        return self.open <= at < self.close

    @property
    def duration(self) -> dt.timedelta:
        return self.close - self.open


@dataclass(frozen=True, slots=True)
class MarketStatus:
    """Market state at one instant, for the header and the cycle's market check.

    ``session`` is the session in progress when open, else the next session.
    """

    at: dt.datetime
    is_open: bool
    next_open: dt.datetime
    next_close: dt.datetime
    session: Session

    def describe(self, exchange: str = "NYSE") -> str:
        """``"NYSE open · closes 16:00"`` or ``"NYSE closed · opens Mon 09:30 ET"``."""
        if self.is_open:
            close = self.next_close.astimezone(EXCHANGE_TZ)
            return f"{exchange} open · closes {close:%H:%M}"
        opens = self.next_open.astimezone(EXCHANGE_TZ)
        here = self.at.astimezone(EXCHANGE_TZ)
        days = (opens.date() - here.date()).days
        if days == 0:
            when = f"{opens:%H:%M}"
        elif days < 7:
            when = f"{opens:%a %H:%M}"
        else:
            when = f"{opens:%a %b} {opens.day} {opens:%H:%M}"
        return f"{exchange} closed · opens {when} ET"


@dataclass(frozen=True, slots=True)
class _Schedule:
    """One built window of sessions, sorted by open (immutable, swapped atomically)."""

    start: dt.date
    end: dt.date
    sessions: tuple[Session, ...]
    by_date: dict[dt.date, Session]
    opens: tuple[dt.datetime, ...]
    closes: tuple[dt.datetime, ...]


class TradingCalendar:
    """NYSE sessions from ``pandas_market_calendars``, cached over a window of dates.

    The schedule for ``[d - days_back, d + days_ahead]`` is built once and reused; it is
    rebuilt only when asked about an exchange date ``d`` closer than ``margin_days`` to the
    edge of the cached window (the margin guarantees the previous/next session of any covered
    date is also in the cache). In normal running that is once every few weeks, never per
    cycle. ``exchange`` may be injected (anything with ``schedule(start_date, end_date)``);
    by default the NYSE calendar is imported and created on first use.
    """

    def __init__(
        self,
        name: str = "NYSE",
        *,
        days_back: int = 30,
        days_ahead: int = 30,
        margin_days: int = 10,
        exchange: Any = None,
    ) -> None:
        if days_back < margin_days or days_ahead < margin_days or margin_days < 7:
            raise ValueError("need days_back, days_ahead >= margin_days >= 7")
        self.name = name
        self._days_back = days_back
        self._days_ahead = days_ahead
        self._margin = dt.timedelta(days=margin_days)
        self._exchange: Any = exchange
        self._lock = threading.Lock()
        self._schedule: _Schedule | None = None
        self.builds = 0  # how many times the schedule was built (for tests and benchmarks)

    # -- building ---------------------------------------------------------------------

    def _exchange_calendar(self) -> Any:
        if self._exchange is None:
            import pandas_market_calendars as pmc  # lazy: ~0.4 s import (pandas)

            self._exchange = pmc.get_calendar(self.name)
        return self._exchange

    def _covering(self, d: dt.date) -> _Schedule | None:
        sched = self._schedule
        if sched is not None and sched.start + self._margin <= d <= sched.end - self._margin:
            return sched
        return None

    def _ensure(self, d: dt.date) -> _Schedule:
        sched = self._covering(d)
        if sched is not None:
            return sched
        with self._lock:
            sched = self._covering(d)
            if sched is None:
                sched = self._build(
                    d - dt.timedelta(days=self._days_back),
                    d + dt.timedelta(days=self._days_ahead),
                )
            return sched

    def _build(self, start: dt.date, end: dt.date) -> _Schedule:
        exchange = self._exchange_calendar()
        with warnings.catch_warnings():
            # pmc 5.5 trips pandas 3 deprecations inside its own code; not ours to fix.
            warnings.filterwarnings("ignore", module=r"pandas_market_calendars")
            frame = exchange.schedule(start_date=start, end_date=end)
        sessions: list[Session] = []
        for idx, mopen, mclose in zip(
            frame.index, frame["market_open"], frame["market_close"], strict=True
        ):
            day = _to_date(idx)
            close = to_utc_datetime(mclose)
            early = close.astimezone(EXCHANGE_TZ).time() < _REGULAR_CLOSE
            sessions.append(Session(day, to_utc_datetime(mopen), close, early))
        sessions.sort(key=lambda s: s.open)
        sched = _Schedule(
            start=start,
            end=end,
            sessions=tuple(sessions),
            by_date={s.date: s for s in sessions},
            opens=tuple(s.open for s in sessions),
            closes=tuple(s.close for s in sessions),
        )
        self._schedule = sched  # one assignment: readers see the old or the new schedule
        self.builds += 1
        return sched

    def warm(self, at: dt.datetime | None = None) -> None:
        """Build the schedule around ``at`` (default: now) ahead of time, e.g. in a thread."""
        self._ensure(_exchange_date(at or dt.datetime.now(UTC)))

    def covers(self, day: dt.date) -> bool:
        """Whether ``day`` can be looked up without building a schedule (pandas)."""
        return self._covering(day) is not None

    @property
    def window(self) -> tuple[dt.date, dt.date] | None:
        """The cached ``(start, end)`` dates, or None before the first build."""
        sched = self._schedule
        return None if sched is None else (sched.start, sched.end)

    # -- queries ----------------------------------------------------------------------

    def session_on(self, day: dt.date) -> Session | None:
        """The session on exchange date ``day`` (a datetime is mapped to its NY date)."""
        if isinstance(day, dt.datetime):
            day = _exchange_date(_aware_utc(day))
        return self._ensure(day).by_date.get(day)

    def _prepare(self, at: dt.datetime) -> tuple[dt.datetime, _Schedule]:
        at = _aware_utc(at)
        return at, self._ensure(_exchange_date(at))

    def current_session(self, at: dt.datetime) -> Session | None:
        """The session in progress at ``at`` (``open <= at < close``), or None."""
        at, sched = self._prepare(at)
        i = bisect.bisect_right(sched.opens, at) - 1
        if i >= 0 and at < sched.closes[i]:
            return sched.sessions[i]
        return None

    def is_open(self, at: dt.datetime) -> bool:
        return self.current_session(at) is not None

    def next_session(self, at: dt.datetime) -> Session:
        """The first session that opens strictly after ``at``."""
        at, sched = self._prepare(at)
        i = bisect.bisect_right(sched.opens, at)
        if i >= len(sched.sessions):
            raise LookupError(f"no {self.name} session after {at.isoformat()}")
        return sched.sessions[i]

    def previous_session(self, at: dt.datetime) -> Session:
        """The last session that closed at or before ``at``."""
        at, sched = self._prepare(at)
        i = bisect.bisect_right(sched.closes, at) - 1
        if i < 0:
            raise LookupError(f"no {self.name} session before {at.isoformat()}")
        return sched.sessions[i]

    def latest_session(self, at: dt.datetime) -> Session:
        """The session in progress at ``at``, else the most recent past one."""
        at, sched = self._prepare(at)
        i = bisect.bisect_right(sched.opens, at) - 1
        if i < 0:
            raise LookupError(f"no {self.name} session before {at.isoformat()}")
        return sched.sessions[i]

    def latest_session_open(self, at: dt.datetime) -> dt.datetime:
        """Open of the session in progress at ``at``, or of the most recent past session."""
        return self.latest_session(at).open

    def next_open(self, at: dt.datetime) -> dt.datetime:
        """The next open strictly after ``at``."""
        return self.next_session(at).open

    def next_close(self, at: dt.datetime) -> dt.datetime:
        """Close of the current session if open, else of the next session."""
        current = self.current_session(at)
        return current.close if current is not None else self.next_session(at).close

    def status(self, at: dt.datetime) -> MarketStatus:
        at = _aware_utc(at)
        current = self.current_session(at)
        upcoming = self.next_session(at)
        if current is not None:
            return MarketStatus(at, True, upcoming.open, current.close, current)
        return MarketStatus(at, False, upcoming.open, upcoming.close, upcoming)

    # -- trading time -----------------------------------------------------------------

    def clamp_to_session(self, at: dt.datetime) -> dt.datetime:
        """``at`` itself if the market is open then, else the next open."""
        at = _aware_utc(at)
        return at if self.current_session(at) is not None else self.next_open(at)

    def advance_trading_time(self, at: dt.datetime, delta: dt.timedelta) -> dt.datetime:
        """Move ``delta`` of in-session time forward from ``at``, skipping closed hours.

        The result is always inside a session: reaching a close exactly continues from the
        next session's open.
        """
        if delta < dt.timedelta(0):
            raise ValueError("delta must not be negative")
        t = self.clamp_to_session(at)
        remaining = delta
        while True:
            session = self.current_session(t)
            assert session is not None
            left = session.close - t
            if remaining < left:
                return t + remaining
            remaining -= left
            t = self.next_open(session.close)

    def trading_time_between(self, start: dt.datetime, end: dt.datetime) -> dt.timedelta:
        """In-session time in ``[start, end)`` (zero when ``end <= start``)."""
        start, end = _aware_utc(start), _aware_utc(end)
        total = dt.timedelta(0)
        if end <= start:
            return total
        t = start
        while t < end:
            session = self.current_session(t)
            if session is None:
                session = self.next_session(t)
                if session.open >= end:
                    break
                t = session.open
            total += min(session.close, end) - t
            t = session.close
        return total


@lru_cache(maxsize=1)
def default_calendar() -> TradingCalendar:
    """The shared NYSE calendar (created cheaply; the schedule is built on first use)."""
    return TradingCalendar("NYSE")


# --------------------------------------------------------------------------- clocks


@runtime_checkable
class Clock(Protocol):
    """Source of "now" for the daemon: tz-aware UTC, plus a way to wait for a moment."""

    def now(self) -> dt.datetime: ...

    async def sleep_until(self, t: dt.datetime) -> None: ...


class WallClock:
    """Real time."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)

    async def sleep_until(self, t: dt.datetime) -> None:
        t = _aware_utc(t)
        while True:
            delay = (t - self.now()).total_seconds()
            if delay <= 0:
                return
            # Re-check after waking: the wall clock can jump (suspend, NTP).
            await asyncio.sleep(min(delay, 60.0))


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class SimClock:
    """Simulated exchange time running ``speed`` times faster than real time.

    Starts at the open of the latest NYSE session relative to ``start`` (default: the real
    now), or at ``resume`` when that is later — a simulation that ran before carries on
    where it stopped instead of replaying time it has already traded through. It only
    ever shows in-session time: when it would pass a close it continues from the next
    session's open. ``monotonic`` (seconds, like :func:`time.monotonic`) may be injected
    for deterministic tests.
    """

    def __init__(
        self,
        calendar: TradingCalendar,
        speed: float = 30.0,
        start: dt.datetime | None = None,
        *,
        resume: dt.datetime | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.calendar = calendar
        self.speed = float(speed)
        self._monotonic = monotonic
        self._reference = _aware_utc(start) if start is not None else None
        self._resume = _aware_utc(resume) if resume is not None else None
        # Anchored lazily on first use, so constructing a SimClock never loads pandas.
        self._anchor: tuple[float, dt.datetime, dt.datetime] | None = None
        self._start: dt.datetime | None = None
        self._waiters: set[asyncio.Future[None]] = set()

    def _anchored(self) -> tuple[float, dt.datetime, dt.datetime]:
        anchor = self._anchor
        if anchor is None:
            reference = self._reference or dt.datetime.now(UTC)
            opened = self.calendar.latest_session_open(reference)
            if self._resume is not None and self._resume > opened:
                opened = self.calendar.clamp_to_session(self._resume)
            anchor = self._rebase(self._monotonic(), opened)
        return anchor

    @property
    def start(self) -> dt.datetime:
        """Where the simulation started: the latest session's open, or the resume time."""
        self._anchored()
        assert self._start is not None
        return self._start

    def _rebase(self, real: float, sim: dt.datetime) -> tuple[float, dt.datetime, dt.datetime]:
        session = self.calendar.current_session(sim)
        assert session is not None, "sim time must be inside a session"
        if self._anchor is None:
            self._start = sim
        self._anchor = (real, sim, session.close)
        return self._anchor

    def now(self) -> dt.datetime:
        anchor_real, anchor_sim, anchor_close = self._anchored()
        real = self._monotonic()
        elapsed = dt.timedelta(seconds=max(0.0, real - anchor_real) * self.speed)
        naive = anchor_sim + elapsed
        if naive < anchor_close:  # fast path: still in the anchor's session
            return naive
        sim = self.calendar.advance_trading_time(anchor_sim, elapsed)
        self._rebase(real, sim)  # crossed a close: re-anchor so later calls stay cheap
        return sim

    def real_seconds_until(self, t: dt.datetime) -> float:
        """Real seconds until sim time reaches ``t`` (in-session time / speed)."""
        return self.calendar.trading_time_between(self.now(), t).total_seconds() / self.speed

    def advance_to(self, t: dt.datetime) -> None:
        """Jump forward to ``t`` (or the next open if closed then); never moves backwards."""
        target = self.calendar.clamp_to_session(_aware_utc(t))
        if target > self.now():
            self._rebase(self._monotonic(), target)
        for fut in list(self._waiters):
            _wake(fut)

    async def sleep_until(self, t: dt.datetime) -> None:
        t = _aware_utc(t)
        loop = asyncio.get_running_loop()
        while True:
            if self.now() >= t:
                return
            delay = max(self.real_seconds_until(t), _MIN_SLEEP_S)
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.add(fut)
            handle = loop.call_later(delay, _wake, fut)
            try:
                await fut
            finally:
                handle.cancel()
                self._waiters.discard(fut)


class FrozenClock:
    """A clock that moves only when told to (tests, snapshots)."""

    def __init__(self, t: dt.datetime) -> None:
        self._now = _aware_utc(t)

    def now(self) -> dt.datetime:
        return self._now

    def set(self, t: dt.datetime) -> None:
        self._now = _aware_utc(t)

    def advance(self, delta: dt.timedelta) -> dt.datetime:
        self._now += delta
        return self._now

    async def sleep_until(self, t: dt.datetime) -> None:
        t = _aware_utc(t)
        if t > self._now:
            self._now = t
        await asyncio.sleep(0)


# --------------------------------------------------------------------------- cycles


def next_cycle_time(
    now: dt.datetime, frequency_minutes: int, tz: dt.tzinfo = EXCHANGE_TZ
) -> dt.datetime:
    """The next clock-aligned cycle time strictly after ``now`` (UTC).

    Aligned to multiples of ``frequency_minutes`` since local midnight in ``tz`` (exchange
    time): 15 → :00, :15, :30, :45; 60 → the top of each hour.
    """
    if frequency_minutes <= 0:
        raise ValueError(f"frequency_minutes must be > 0, got {frequency_minutes}")
    now = _aware_utc(now)
    local = now.astimezone(tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    step = dt.timedelta(minutes=frequency_minutes)
    # Same-tzinfo arithmetic is wall-clock arithmetic, which is what alignment means.
    k = (local - midnight) // step + 1
    while True:
        candidate = (midnight + k * step).astimezone(UTC)
        if candidate > now:  # guards the repeated hour when DST ends
            return candidate
        k += 1
