"""Alpaca's clock and calendar against the local NYSE calendar.

Perun trusts the broker: Alpaca's ``is_open`` decides whether a cycle trades. A
disagreement still matters — a stale ``pandas-market-calendars`` (a new holiday), a wrong
system clock, or an endpoint that is not what it claims — so it is put into words here
for the daemon's log and ``perun doctor``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from perun_tui.brokers.alpaca.history import NY
from perun_tui.market_hours import TradingCalendar
from perun_tui.models import MarketClock

__all__ = ["AlpacaSession", "compare_calendar", "compare_clock"]

AlpacaSession = tuple[date, datetime, datetime]
"""(date, open UTC, close UTC) as ``AlpacaBroker.calendar()`` returns them."""

_TOLERANCE_S = 90


def _et(t: datetime) -> str:
    return f"{t.astimezone(NY):%a %Y-%m-%d %H:%M} ET"


def compare_clock(clock: MarketClock, calendar: TradingCalendar) -> str | None:
    """How Alpaca's clock disagrees with the local calendar, or None when it agrees."""
    local = calendar.status(clock.ts)
    problems: list[str] = []
    if local.is_open != clock.is_open:
        problems.append(
            f"Alpaca says the market is {'open' if clock.is_open else 'closed'}, the "
            f"local NYSE calendar says {'open' if local.is_open else 'closed'}"
        )
    for what, theirs, ours in (
        ("next open", clock.next_open, local.next_open),
        ("next close", clock.next_close, local.next_close),
    ):
        if abs((theirs - ours).total_seconds()) > _TOLERANCE_S:
            problems.append(f"{what}: Alpaca {_et(theirs)}, local {_et(ours)}")
    if not problems:
        return None
    return "; ".join(problems) + " — trusting Alpaca's clock"


def compare_calendar(
    sessions: Sequence[AlpacaSession], calendar: TradingCalendar, start: date, end: date
) -> list[str]:
    """Each day in ``[start, end]`` where Alpaca's calendar and the local one differ:
    a session one of them does not have (a holiday), or other open/close times (an early
    close). Empty when they agree."""
    theirs = {day: (opens, closes) for day, opens, closes in sessions}
    out: list[str] = []
    day = start
    while day <= end:
        local = calendar.session_on(day)
        alpaca = theirs.get(day)
        if alpaca is not None and local is None:
            out.append(
                f"{day:%a %Y-%m-%d}: Alpaca has a session ({alpaca[0].astimezone(NY):%H:%M}–"
                f"{alpaca[1].astimezone(NY):%H:%M} ET), the local NYSE calendar a holiday"
            )
        elif alpaca is None and local is not None:
            out.append(
                f"{day:%a %Y-%m-%d}: Alpaca has no session (holiday), the local NYSE "
                f"calendar one ({local.open.astimezone(NY):%H:%M}–"
                f"{local.close.astimezone(NY):%H:%M} ET)"
            )
        elif alpaca is not None and local is not None:
            pairs = (("opens", alpaca[0], local.open), ("closes", alpaca[1], local.close))
            for what, a, b in pairs:
                if abs((a - b).total_seconds()) > _TOLERANCE_S:
                    out.append(
                        f"{day:%a %Y-%m-%d}: Alpaca {what} {a.astimezone(NY):%H:%M} ET, the "
                        f"local NYSE calendar {b.astimezone(NY):%H:%M} ET"
                    )
        day = date.fromordinal(day.toordinal() + 1)
    return out
