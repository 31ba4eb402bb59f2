"""Sizing and shaping bar requests: Alpaca's timeframes, a tight start, merged buckets.

Alpaca knows 1–59 Min, 1–23 Hour and 1 Day bars; a bars request is sized so 50 symbols'
history fits in one 10,000-bar page, so history costs one request per cycle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime

from perun_tui.market_hours import EXCHANGE_TZ as NY
from perun_tui.models import Bar

__all__ = ["NY", "history_start", "in_session", "merge_bars", "timeframe_plan"]

_SESSION_OPEN = dtime(9, 30)
_SESSION_MINUTES = 390
_OPEN_MINUTE = 9 * 60 + 30
_CLOSE_MINUTE = 16 * 60


def timeframe_plan(minutes: int) -> tuple[int, str, int]:
    """(amount, unit, group): Alpaca's timeframe to ask for and how many to merge.

    Other cycle lengths (90, 390...) are built from the largest Alpaca timeframe that
    divides them.
    """
    if minutes == 1440:
        return 1, "Day", 1
    if not 1 <= minutes <= _SESSION_MINUTES:
        raise ValueError(
            f"timeframe of {minutes} minutes is not supported (1–390 minutes, or 1440)"
        )
    if minutes < 60:
        return minutes, "Min", 1
    if minutes % 60 == 0:
        return minutes // 60, "Hour", 1
    base = max(d for d in range(1, 60) if minutes % d == 0)
    return base, "Min", minutes // base


def history_start(
    now: datetime,
    minutes: int,
    n: int,
    is_session_day: Callable[[date], bool],
    *,
    margin: float = 1.2,
    slack_sessions: int = 0,
) -> datetime:
    """Where a bars request must start to hold about ``n * margin`` regular-session bars.

    Sized tightly (weekends and, when known, holidays skipped) so 50 symbols' history fits
    in one 10,000-bar page; the margin covers sparse IEX bars and early closes, and
    ``slack_sessions`` whole sessions more cover holidays the caller could not rule out.
    """
    now_ny = now.astimezone(NY)
    day = now_ny.date()
    daily = minutes >= 1440
    per_session = 1 if daily else math.ceil(_SESSION_MINUTES / minutes)
    need = math.ceil(n * margin) + 1 + slack_sessions * per_session
    remaining = need
    for _ in range(20_000):
        if is_session_day(day):
            open_at = datetime.combine(day, _SESSION_OPEN, NY)
            if day == now_ny.date():
                elapsed = min(max((now_ny - open_at).total_seconds() / 60, 0.0), 390.0)
                have = (1 if elapsed > 0 else 0) if daily else math.ceil(elapsed / minutes)
            else:
                have = per_session
            if have >= remaining and not daily and day != now_ny.date():
                close_at = open_at + timedelta(minutes=_SESSION_MINUTES)
                start = close_at - timedelta(minutes=remaining * minutes)
                return max(start, open_at - timedelta(minutes=minutes)).astimezone(UTC)
            remaining -= have
            if remaining <= 0:
                break
        day -= timedelta(days=1)
    return datetime.combine(day, dtime(0, 0), NY).astimezone(UTC)


def in_session(ts: datetime, minutes: int) -> bool:
    """Whether a bar starting at ``ts`` overlaps the regular session (9:30–16:00 ET)."""
    local = ts.astimezone(NY)
    start = local.hour * 60 + local.minute
    return start + minutes > _OPEN_MINUTE and start < _CLOSE_MINUTE


def merge_bars(bars: list[Bar], minutes: int) -> list[Bar]:
    """Merge bars into ``minutes``-long buckets counted from each session's open."""
    out: list[Bar] = []
    key: tuple[date, int] | None = None
    for bar in bars:
        local = bar.ts.astimezone(NY)
        k = (local.date(), (local.hour * 60 + local.minute - _OPEN_MINUTE) // minutes)
        if out and k == key:
            last = out[-1]
            out[-1] = last.model_copy(
                update={
                    "high": max(last.high, bar.high),
                    "low": min(last.low, bar.low),
                    "close": bar.close,
                    "volume": last.volume + bar.volume,
                }
            )
        else:
            out.append(bar)
            key = k
    return out
