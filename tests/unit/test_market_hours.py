"""NYSE calendar and clocks, pinned to real 2026 dates."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import subprocess
import sys
from typing import Any

import pytest

from perun_tui.market_hours import (
    EXCHANGE_TZ,
    UTC,
    Clock,
    FrozenClock,
    Session,
    SimClock,
    TradingCalendar,
    WallClock,
    default_calendar,
    next_cycle_time,
    to_utc_datetime,
)


def et(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=EXCHANGE_TZ)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=UTC)


@pytest.fixture(scope="module")
def cal() -> TradingCalendar:
    return TradingCalendar()


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class CountingExchange:
    """Wraps the real NYSE calendar and counts schedule() calls."""

    def __init__(self) -> None:
        import pandas_market_calendars as pmc

        self.inner = pmc.get_calendar("NYSE")
        self.calls = 0

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.schedule(*args, **kwargs)


# ----------------------------------------------------------------------------- sessions


def test_thanksgiving_closed(cal: TradingCalendar) -> None:
    assert cal.session_on(dt.date(2026, 11, 26)) is None
    assert not cal.is_open(et(2026, 11, 26, 12))


def test_black_friday_early_close(cal: TradingCalendar) -> None:
    s = cal.session_on(dt.date(2026, 11, 27))
    assert s is not None
    assert s.early_close
    assert s.open == et(2026, 11, 27, 9, 30)
    assert s.close == et(2026, 11, 27, 13, 0)
    assert s.close.tzinfo is UTC and s.open.tzinfo is UTC
    assert cal.is_open(et(2026, 11, 27, 12, 59))
    assert not cal.is_open(et(2026, 11, 27, 13, 0))
    assert not cal.is_open(et(2026, 11, 27, 14, 0))


def test_regular_session(cal: TradingCalendar) -> None:
    s = cal.session_on(dt.date(2026, 11, 30))
    assert s == Session(dt.date(2026, 11, 30), et(2026, 11, 30, 9, 30), et(2026, 11, 30, 16), False)
    assert type(s.open) is dt.datetime
    assert not cal.is_open(et(2026, 11, 30, 9, 29))
    assert cal.is_open(et(2026, 11, 30, 9, 30))
    assert not cal.is_open(et(2026, 11, 30, 16, 0))


def test_christmas(cal: TradingCalendar) -> None:
    eve = cal.session_on(dt.date(2026, 12, 24))
    assert eve is not None and eve.early_close
    assert eve.close == et(2026, 12, 24, 13)
    assert cal.session_on(dt.date(2026, 12, 25)) is None


def test_weekend_closed(cal: TradingCalendar) -> None:
    assert cal.session_on(dt.date(2026, 11, 28)) is None
    assert cal.session_on(dt.date(2026, 11, 29)) is None


def test_session_on_accepts_aware_datetime(cal: TradingCalendar) -> None:
    # 2026-11-28 02:00 UTC is still Friday the 27th in New York.
    s = cal.session_on(utc(2026, 11, 28, 2))
    assert s is not None and s.date == dt.date(2026, 11, 27)


@pytest.mark.parametrize(
    ("day", "open_utc"),
    [
        (dt.date(2026, 3, 6), utc(2026, 3, 6, 14, 30)),  # EST
        (dt.date(2026, 3, 9), utc(2026, 3, 9, 13, 30)),  # EDT from 03-08
        (dt.date(2026, 10, 30), utc(2026, 10, 30, 13, 30)),  # EDT
        (dt.date(2026, 11, 2), utc(2026, 11, 2, 14, 30)),  # EST from 11-01
    ],
)
def test_dst_opens(cal: TradingCalendar, day: dt.date, open_utc: dt.datetime) -> None:
    s = cal.session_on(day)
    assert s is not None
    assert s.open == open_utc
    assert s.open.astimezone(EXCHANGE_TZ).time() == dt.time(9, 30)


# ----------------------------------------------------------------------------- navigation


def test_next_open_over_holiday(cal: TradingCalendar) -> None:
    assert cal.next_open(et(2026, 11, 25, 17)) == et(2026, 11, 27, 9, 30)


def test_next_open_is_strictly_after(cal: TradingCalendar) -> None:
    assert cal.next_open(et(2026, 11, 30, 9, 30)) == et(2026, 12, 1, 9, 30)
    assert cal.next_open(et(2026, 11, 30, 8)) == et(2026, 11, 30, 9, 30)


def test_next_close(cal: TradingCalendar) -> None:
    assert cal.next_close(et(2026, 11, 27, 10)) == et(2026, 11, 27, 13)  # open: today's close
    assert cal.next_close(et(2026, 11, 25, 17)) == et(2026, 11, 27, 13)  # closed: next one's
    assert cal.next_close(et(2026, 11, 28, 12)) == et(2026, 11, 30, 16)


def test_latest_session_open(cal: TradingCalendar) -> None:
    assert cal.latest_session_open(et(2026, 11, 30, 11)) == et(2026, 11, 30, 9, 30)
    assert cal.latest_session_open(et(2026, 11, 30, 9)) == et(2026, 11, 27, 9, 30)
    assert cal.latest_session_open(et(2026, 11, 26, 12)) == et(2026, 11, 25, 9, 30)
    assert cal.latest_session_open(et(2026, 11, 29, 12)) == et(2026, 11, 27, 9, 30)


def test_next_and_previous_session(cal: TradingCalendar) -> None:
    nxt = cal.next_session(et(2026, 11, 25, 12))
    assert nxt.date == dt.date(2026, 11, 27)
    prev = cal.previous_session(et(2026, 11, 27, 12))
    assert prev.date == dt.date(2026, 11, 25)
    assert cal.previous_session(et(2026, 11, 27, 13)).date == dt.date(2026, 11, 27)


def test_naive_datetime_rejected(cal: TradingCalendar) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.is_open(dt.datetime(2026, 11, 30, 12))


def test_status_and_describe(cal: TradingCalendar) -> None:
    st = cal.status(et(2026, 11, 30, 10, 40))
    assert st.is_open
    assert st.next_close == et(2026, 11, 30, 16)
    assert st.next_open == et(2026, 12, 1, 9, 30)
    assert st.session.date == dt.date(2026, 11, 30)
    assert st.describe() == "NYSE open · closes 16:00"

    early = cal.status(et(2026, 11, 27, 10))
    assert early.describe() == "NYSE open · closes 13:00"

    closed = cal.status(et(2026, 11, 28, 12))  # Saturday
    assert not closed.is_open
    assert closed.next_open == et(2026, 11, 30, 9, 30)
    assert closed.next_close == et(2026, 11, 30, 16)
    assert closed.session.date == dt.date(2026, 11, 30)
    assert closed.describe() == "NYSE closed · opens Mon 09:30 ET"

    assert cal.status(et(2026, 11, 30, 8)).describe() == "NYSE closed · opens 09:30 ET"


def test_trading_time(cal: TradingCalendar) -> None:
    start = et(2026, 11, 25, 15, 59)
    assert cal.advance_trading_time(start, dt.timedelta(minutes=2)) == et(2026, 11, 27, 9, 31)
    assert cal.advance_trading_time(start, dt.timedelta(minutes=1)) == et(2026, 11, 27, 9, 30)
    assert cal.advance_trading_time(et(2026, 11, 26, 3), dt.timedelta(0)) == et(2026, 11, 27, 9, 30)
    between = cal.trading_time_between(start, et(2026, 11, 27, 9, 31))
    assert between == dt.timedelta(minutes=2)
    # Wed 15:00 → Mon 10:00: 1 h Wed + 3.5 h Fri + 0.5 h Mon.
    between = cal.trading_time_between(et(2026, 11, 25, 15), et(2026, 11, 30, 10))
    assert between == dt.timedelta(hours=5)
    assert cal.trading_time_between(et(2026, 11, 30, 10), et(2026, 11, 30, 9)) == dt.timedelta(0)


# ----------------------------------------------------------------------------- caching


def test_schedule_built_once_for_many_calls() -> None:
    exchange = CountingExchange()
    cal = TradingCalendar(exchange=exchange)
    assert exchange.calls == 0  # nothing built on construction
    t = et(2026, 11, 30, 9, 30)
    for i in range(2000):
        at = t + dt.timedelta(minutes=7 * i)  # ~10 days of queries
        cal.is_open(at)
        cal.status(at)
        cal.next_open(at)
        cal.latest_session_open(at)
        cal.session_on(at.date())
    assert exchange.calls == 1
    assert cal.builds == 1
    # A date outside the cached window triggers exactly one rebuild.
    assert cal.session_on(dt.date(2026, 3, 9)) is not None
    assert exchange.calls == 2
    cal.is_open(et(2026, 3, 10, 12))
    assert exchange.calls == 2


def test_sim_clock_runs_without_rebuilding_each_cycle() -> None:
    exchange = CountingExchange()
    cal = TradingCalendar(exchange=exchange)
    mono = FakeMonotonic()
    clock = SimClock(cal, speed=30, start=et(2026, 11, 30, 12), monotonic=mono)
    for _ in range(500):  # 500 × 30 sim-minutes ≈ 38 sessions
        mono.t += 60
        clock.now()
    assert exchange.calls <= 4


def test_sim_clock_construction_builds_nothing() -> None:
    exchange = CountingExchange()
    clock = SimClock(TradingCalendar(exchange=exchange), start=et(2026, 11, 30, 12))
    assert exchange.calls == 0
    assert clock.start == et(2026, 11, 30, 9, 30)
    assert exchange.calls == 1


def test_default_calendar_is_shared() -> None:
    assert default_calendar() is default_calendar()


def test_module_import_is_light() -> None:
    code = (
        "import sys, perun_tui.market_hours\n"
        "bad = [m for m in ('pandas', 'pandas_market_calendars', 'textual') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_to_utc_datetime() -> None:
    import pandas as pd

    ts = pd.Timestamp("2026-11-27 18:00", tz="UTC")
    d = to_utc_datetime(ts)
    assert type(d) is dt.datetime
    assert d == utc(2026, 11, 27, 18) and d.tzinfo is UTC
    assert to_utc_datetime(pd.Timestamp("2026-11-27 18:00")) == utc(2026, 11, 27, 18)
    assert to_utc_datetime(et(2026, 11, 27, 13)).tzinfo is UTC
    with pytest.raises(TypeError):
        to_utc_datetime("2026-11-27")


# ----------------------------------------------------------------------------- clocks


def test_clocks_satisfy_protocol(cal: TradingCalendar) -> None:
    assert isinstance(WallClock(), Clock)
    assert isinstance(FrozenClock(utc(2026, 1, 2)), Clock)
    assert isinstance(SimClock(cal, start=et(2026, 11, 30, 12)), Clock)


def test_wall_clock_now_is_utc() -> None:
    now = WallClock().now()
    assert now.tzinfo is UTC
    assert abs((dt.datetime.now(UTC) - now).total_seconds()) < 5


def test_sim_clock_starts_at_latest_open_and_runs_at_speed(cal: TradingCalendar) -> None:
    mono = FakeMonotonic()
    clock = SimClock(cal, speed=30, start=et(2026, 11, 30, 12, 17), monotonic=mono)
    assert clock.now() == et(2026, 11, 30, 9, 30)
    assert clock.start == et(2026, 11, 30, 9, 30)
    mono.t += 30  # 30 real seconds = 15 sim minutes
    assert clock.now() == et(2026, 11, 30, 9, 45)
    mono.t += 1.5
    assert clock.now() == et(2026, 11, 30, 9, 45) + dt.timedelta(seconds=45)


def test_sim_clock_start_when_closed(cal: TradingCalendar) -> None:
    # Thanksgiving: the latest session is Wednesday's.
    clock = SimClock(cal, start=et(2026, 11, 26, 12), monotonic=FakeMonotonic())
    assert clock.now() == et(2026, 11, 25, 9, 30)


def test_sim_clock_resumes_where_it_stopped_and_never_goes_back(cal: TradingCalendar) -> None:
    # A later resume point wins over the latest session's open...
    clock = SimClock(cal, start=et(2026, 11, 30, 12), resume=et(2026, 11, 30, 11, 15),
                     monotonic=FakeMonotonic())
    assert clock.now() == et(2026, 11, 30, 11, 15)
    # ...one at a close carries on at the next open (the early close of 11-27 → 11-30)...
    clock = SimClock(cal, start=et(2026, 11, 27, 9), resume=et(2026, 11, 27, 13),
                     monotonic=FakeMonotonic())
    assert clock.now() == et(2026, 11, 30, 9, 30)
    # ...and an earlier one is ignored.
    clock = SimClock(cal, start=et(2026, 11, 30, 12), resume=et(2026, 11, 20, 10),
                     monotonic=FakeMonotonic())
    assert clock.now() == et(2026, 11, 30, 9, 30)


def test_sim_clock_skips_closed_hours(cal: TradingCalendar) -> None:
    mono = FakeMonotonic()
    clock = SimClock(cal, speed=60, start=et(2026, 11, 25, 12), monotonic=mono)
    clock.advance_to(et(2026, 11, 25, 15, 59))
    assert clock.now() == et(2026, 11, 25, 15, 59)
    mono.t += 2  # 2 sim-minutes: 1 to Wednesday's close, 1 into Friday
    assert clock.now() == et(2026, 11, 27, 9, 31)
    mono.t += 60 * 3.5 - 1  # 3.5 h - 1 min of Friday's early session → Friday close
    assert clock.now() == et(2026, 11, 30, 9, 30)
    assert cal.is_open(clock.now())


def test_sim_clock_always_in_session(cal: TradingCalendar) -> None:
    mono = FakeMonotonic()
    clock = SimClock(cal, speed=1000, start=et(2026, 12, 20, 12), monotonic=mono)
    last = clock.now()
    for _ in range(400):
        mono.t += 7.3
        now = clock.now()
        assert cal.is_open(now)
        assert now >= last
        last = now


def test_sim_clock_advance_to(cal: TradingCalendar) -> None:
    mono = FakeMonotonic()
    clock = SimClock(cal, speed=30, start=et(2026, 11, 30, 12), monotonic=mono)
    clock.advance_to(et(2026, 11, 30, 10, 45))
    assert clock.now() == et(2026, 11, 30, 10, 45)
    mono.t += 30
    assert clock.now() == et(2026, 11, 30, 11)
    assert clock.start == et(2026, 11, 30, 9, 30)
    clock.advance_to(et(2026, 11, 30, 10))  # never backwards
    assert clock.now() == et(2026, 11, 30, 11)
    clock.advance_to(et(2026, 11, 30, 17))  # closed → next open
    assert clock.now() == et(2026, 12, 1, 9, 30)


def test_sim_clock_real_seconds_until(cal: TradingCalendar) -> None:
    mono = FakeMonotonic()
    clock = SimClock(cal, speed=30, start=et(2026, 11, 30, 12), monotonic=mono)
    assert clock.real_seconds_until(et(2026, 11, 30, 9, 45)) == pytest.approx(30.0)
    clock.advance_to(et(2026, 11, 30, 15, 45))
    # 15 sim-minutes to the close, then the overnight gap costs nothing.
    assert clock.real_seconds_until(et(2026, 12, 1, 9, 45)) == pytest.approx(60.0)
    assert clock.real_seconds_until(et(2026, 11, 30, 15)) == 0.0


def test_sim_clock_rejects_bad_speed(cal: TradingCalendar) -> None:
    with pytest.raises(ValueError):
        SimClock(cal, speed=0)


async def test_sim_clock_sleep_until(cal: TradingCalendar) -> None:
    clock = SimClock(cal, speed=60_000, start=et(2026, 11, 30, 12))
    target = clock.now() + dt.timedelta(minutes=10)  # 600 sim-s → 10 ms real
    await asyncio.wait_for(clock.sleep_until(target), timeout=5)
    assert clock.now() >= target


async def test_sim_clock_sleep_until_across_close(cal: TradingCalendar) -> None:
    clock = SimClock(cal, speed=6_000, start=et(2026, 11, 25, 12))
    clock.advance_to(et(2026, 11, 25, 15, 50))  # 10 in-session minutes → 0.1 s real
    await asyncio.wait_for(clock.sleep_until(et(2026, 11, 25, 18)), timeout=5)
    now = clock.now()
    # woken in the next session (Thanksgiving skipped); the early close is 2 s real away,
    # so a loaded machine cannot carry it past the session
    assert et(2026, 11, 27, 9, 30) <= now < et(2026, 11, 27, 13)


async def test_sim_clock_advance_wakes_sleepers(cal: TradingCalendar) -> None:
    mono = FakeMonotonic()  # frozen: sim time never passes by itself
    clock = SimClock(cal, speed=1, start=et(2026, 11, 30, 12), monotonic=mono)
    target = et(2026, 11, 30, 11)
    task = asyncio.create_task(clock.sleep_until(target))
    await asyncio.sleep(0.01)
    assert not task.done()
    clock.advance_to(target)
    await asyncio.wait_for(task, timeout=1)
    assert clock.now() == target


async def test_frozen_clock() -> None:
    clock = FrozenClock(et(2026, 11, 30, 10))
    assert clock.now() == et(2026, 11, 30, 10)
    assert clock.now().tzinfo is UTC
    clock.advance(dt.timedelta(minutes=5))
    assert clock.now() == et(2026, 11, 30, 10, 5)
    clock.set(et(2026, 11, 30, 11))
    assert clock.now() == et(2026, 11, 30, 11)
    await clock.sleep_until(et(2026, 11, 30, 11, 15))
    assert clock.now() == et(2026, 11, 30, 11, 15)
    await clock.sleep_until(et(2026, 11, 30, 11))  # past: no change
    assert clock.now() == et(2026, 11, 30, 11, 15)


async def test_wall_clock_sleep_until_past_returns() -> None:
    clock = WallClock()
    await asyncio.wait_for(clock.sleep_until(clock.now() - dt.timedelta(seconds=1)), timeout=1)
    target = clock.now() + dt.timedelta(milliseconds=20)
    await asyncio.wait_for(clock.sleep_until(target), timeout=2)
    assert clock.now() >= target


# ----------------------------------------------------------------------------- cycles


@pytest.mark.parametrize(
    ("now", "freq", "expected"),
    [
        (et(2026, 11, 30, 10, 0), 15, et(2026, 11, 30, 10, 15)),  # strictly after
        (et(2026, 11, 30, 10, 1), 15, et(2026, 11, 30, 10, 15)),
        (et(2026, 11, 30, 10, 14), 15, et(2026, 11, 30, 10, 15)),
        (et(2026, 11, 30, 10, 44), 15, et(2026, 11, 30, 10, 45)),
        (et(2026, 11, 30, 10, 50), 15, et(2026, 11, 30, 11, 0)),
        (et(2026, 11, 30, 23, 59), 15, et(2026, 12, 1, 0, 0)),
        (et(2026, 11, 30, 10, 1), 60, et(2026, 11, 30, 11, 0)),
        (et(2026, 11, 30, 10, 0), 60, et(2026, 11, 30, 11, 0)),
        (et(2026, 11, 30, 10, 1), 5, et(2026, 11, 30, 10, 5)),
        (et(2026, 11, 30, 10, 1), 1, et(2026, 11, 30, 10, 2)),
        (et(2026, 3, 9, 9, 31), 30, et(2026, 3, 9, 10, 0)),  # after DST switch
    ],
)
def test_next_cycle_time(now: dt.datetime, freq: int, expected: dt.datetime) -> None:
    got = next_cycle_time(now, freq)
    assert got == expected
    assert got.tzinfo is UTC


def test_next_cycle_time_sub_minute_and_errors() -> None:
    now = et(2026, 11, 30, 10, 14) + dt.timedelta(seconds=59, microseconds=5)
    assert next_cycle_time(now, 15) == et(2026, 11, 30, 10, 15)
    with pytest.raises(ValueError):
        next_cycle_time(now, 0)


def test_next_cycle_time_over_dst_fallback() -> None:
    # 2026-11-01: 01:00-02:00 ET happens twice. Results stay strictly increasing.
    t = utc(2026, 11, 1, 4, 50)  # 00:50 EDT
    seen = []
    for _ in range(12):
        t = next_cycle_time(t, 15)
        seen.append(t)
    assert all(b > a for a, b in itertools.pairwise(seen))
    assert seen[0] == utc(2026, 11, 1, 5, 0)
