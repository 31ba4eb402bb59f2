"""Plain formatting helpers for the panels: numbers, durations, clock times, sparklines.

Pure functions (no Textual, no I/O) so they are cheap to call on every repaint and easy
to test. Times are shown in exchange time (ET), which is what a US-equities trader reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from perun_tui.models import MarketClock

ET = ZoneInfo("America/New_York")
SPARK_BARS = "▁▂▃▄▅▆▇█"


def money(x: float, decimals: int = 2) -> str:
    """``12,345.67``; negative values keep their sign."""
    return f"{x:,.{decimals}f}"


def signed_money(x: float, decimals: int = 2) -> str:
    return f"{x:+,.{decimals}f}"


def signed_pct(x: float, decimals: int = 1) -> str:
    return f"{x:+.{decimals}f}%"


def qty(x: float) -> str:
    """Whole shares without decimals, fractional shares with up to four."""
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.4f}".rstrip("0").rstrip(".")


def duration(seconds: float) -> str:
    """Short human duration: ``45s``, ``2m05s``, ``1h02m``, ``3d04h``; negatives clamp to 0."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def et_time(at: datetime, seconds: bool = False) -> str:
    """``10:45`` (or ``10:45:12``) in exchange time."""
    local = at.astimezone(ET)
    return f"{local:%H:%M:%S}" if seconds else f"{local:%H:%M}"


def market_line(
    market: MarketClock, now: datetime, exchange: str = "NYSE", *, compact: bool = False
) -> str:
    """``NYSE open · closes 16:00 ET`` or ``NYSE closed · opens Mon 09:30 ET``;
    ``compact``: ``open → 16:00`` or ``closed → Mon 09:30``."""
    if market.is_open:
        if compact:
            return f"open → {et_time(market.next_close)}"
        return f"{exchange} open · closes {et_time(market.next_close)} ET"
    opens = market.next_open.astimezone(ET)
    days = (opens.date() - now.astimezone(ET).date()).days
    if days == 0:
        when = f"{opens:%H:%M}"
    elif days < 7:
        when = f"{opens:%a %H:%M}"
    else:
        when = f"{opens:%a %b} {opens.day} {opens:%H:%M}"
    if compact:
        return f"closed → {when}"
    return f"{exchange} closed · opens {when} ET"


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters at a word boundary, with "…" (as is when it
    fits or the width is not positive)."""
    if width <= 0 or len(text) <= width:
        return text
    if width == 1:
        return "…"
    cut = text.rfind(" ", 0, width)
    if cut < width * 0.6:  # no space near the end: cut inside the word
        cut = width - 1
    return text[:cut].rstrip(" ,;:—-(") + "…"


def sparkline(values: Sequence[float], width: int) -> str:
    """The last ``width`` values as block characters, scaled between their min and max.

    A flat series is drawn at mid height so "no movement" reads differently from "no data".
    """
    if width <= 0 or not values:
        return ""
    tail = list(values)[-width:]
    lo, hi = min(tail), max(tail)
    if hi - lo <= 1e-12:
        return SPARK_BARS[3] * len(tail)
    top = len(SPARK_BARS) - 1
    scale = top / (hi - lo)
    return "".join(SPARK_BARS[round((v - lo) * scale)] for v in tail)


def age(since: datetime, now: datetime) -> str:
    return duration((now - since).total_seconds())


def time_left(until: datetime | None, now: datetime) -> str:
    if until is None:
        return "–"
    left = (until - now).total_seconds()
    return "expired" if left <= 0 else duration(left)


def seconds_between(a: datetime, b: datetime) -> float:
    return (b - a) / timedelta(seconds=1)
