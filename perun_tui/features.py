"""Per-symbol features for the analyst, computed from recent bars and the latest quote.

Pure functions, plain Python: a cycle computes them for every symbol, so they must be
cheap (50 symbols × 60 bars in well under 5 ms) and total — a short or odd history
(one bar, zero volume, a flat price) yields neutral numbers, never an exception, NaN or
infinity.

The price series is the bar closes, oldest first, with the last close replaced by the
live quote price when there is one (the quote is the current state of the latest bar).
So ``ret_1`` is the move from the previous close to now.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from math import isfinite
from operator import attrgetter, sub

from perun_tui.llm.base import SymbolFeatures
from perun_tui.models import Bar, Quote

FAST_WINDOW = 5
SLOW_WINDOW = 20
RSI_PERIOD = 14
VOL_WINDOW = 20
# Wilder's smoothing forgets geometrically ((13/14)^100 < 0.1%): older bars cannot matter
RSI_LOOKBACK = 120

_CLOSE = attrgetter("close")
_VOLUME = attrgetter("volume")


def _finite(x: float, default: float = 0.0) -> float:
    return x if math.isfinite(x) else default


def quote_price(quote: Quote | None) -> float:
    """The live price of a quote: last trade, else the mid; 0.0 when there is none."""
    if quote is None:
        return 0.0
    for p in (quote.last, quote.mid):
        if math.isfinite(p) and p > 0:
            return p
    return 0.0


def pct_return(series: Sequence[float], n: int) -> float:
    """% change from ``n`` steps back to the last value (or from the first, if shorter)."""
    if len(series) < 2:
        return 0.0
    base = series[max(0, len(series) - 1 - n)]
    if base <= 0:
        return 0.0
    return _finite((series[-1] / base - 1.0) * 100.0)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def pstdev(values: Sequence[float]) -> float:
    """Population standard deviation (0.0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    m = sum(values) / n
    var = sum([(v - m) * (v - m) for v in values]) / n
    return math.sqrt(var) if var > 0 else 0.0


def sstdev(values: Sequence[float]) -> float:
    """Sample standard deviation (0.0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    m = sum(values) / n
    var = sum([(v - m) * (v - m) for v in values]) / (n - 1)
    return math.sqrt(var) if var > 0 else 0.0


def rsi(series: Sequence[float], period: int = RSI_PERIOD) -> float:
    """Wilder's RSI, 0..100; 50 when there is no movement or too little history.

    The first average is the simple mean of the first ``period`` changes (or of all of
    them when the history is shorter), then Wilder's smoothing over the rest.
    """
    if len(series) < 2:
        return 50.0
    diffs = list(map(sub, series[1:], series[:-1]))  # b - a for each step a → b
    first = min(period, len(diffs))
    head = diffs[:first]
    avg_gain = sum([d for d in head if d > 0]) / first
    avg_loss = -sum([d for d in head if d < 0]) / first
    keep = (period - 1) / period
    step = 1.0 / period
    for d in diffs[first:]:
        if d > 0:
            avg_gain = avg_gain * keep + d * step
            avg_loss *= keep
        else:
            avg_gain *= keep
            avg_loss = avg_loss * keep - d * step
    if avg_loss <= 0:
        return 50.0 if avg_gain <= 0 else 100.0
    if avg_gain <= 0:
        return 0.0
    return _finite(100.0 - 100.0 / (1.0 + avg_gain / avg_loss), 50.0)


def compute_features(symbol: str, bars: Sequence[Bar], quote: Quote | None) -> SymbolFeatures:
    """Features for one symbol from its bars (oldest first) and latest quote."""
    recent = bars[-RSI_LOOKBACK:]
    closes = list(map(_CLOSE, recent))
    if not closes or min(closes) <= 0 or not isfinite(sum(closes)):
        closes = [c for c in closes if isfinite(c) and c > 0]  # drop broken bars
    live = quote_price(quote)
    if closes:
        if live > 0:
            closes[-1] = live
        price = closes[-1]
    else:
        price = live
        closes = [live] if live > 0 else []

    if closes:
        fast = mean(closes[-FAST_WINDOW:])
        window = closes[-SLOW_WINDOW:]
        slow = mean(window)
        std = pstdev(window)
        # a flat series can leave float dust in the std: treat it as zero
        zscore = (price - slow) / std if std > 1e-9 * abs(slow) else 0.0
        trend = (fast / slow - 1.0) * 100.0 if slow > 0 else 0.0
    else:
        fast = slow = zscore = trend = 0.0

    tail = closes[-(VOL_WINDOW + 1) :]
    rets = [(b / a - 1.0) * 100.0 for a, b in pairwise(tail)]
    volatility = sstdev(rets)

    volumes = list(map(_VOLUME, bars[-VOL_WINDOW:]))
    if volumes and (min(volumes) < 0 or not isfinite(sum(volumes))):
        volumes = [v for v in volumes if isfinite(v) and v >= 0]
    avg_volume = mean(volumes)
    # no volume information at all: neutral 1.0
    volume_ratio = volumes[-1] / avg_volume if volumes and avg_volume > 0 else 1.0

    spread = quote.spread_pct if quote is not None else 0.0

    return SymbolFeatures(
        symbol=symbol,
        price=_finite(price),
        ret_1=pct_return(closes, 1),
        ret_5=pct_return(closes, 5),
        ret_20=pct_return(closes, 20),
        sma_fast=_finite(fast),
        sma_slow=_finite(slow),
        trend_pct=_finite(trend),
        zscore=_finite(zscore),
        rsi=rsi(closes),
        volatility_pct=_finite(volatility),
        volume_ratio=_finite(volume_ratio, 1.0),
        spread_pct=_finite(spread),
        bars=len(bars),
    )


def compute_all(
    bars: dict[str, list[Bar]], quotes: dict[str, Quote], symbols: Sequence[str] | None = None
) -> dict[str, SymbolFeatures]:
    """Features for every symbol that has bars or a quote."""
    names = list(symbols) if symbols is not None else sorted(set(bars) | set(quotes))
    out: dict[str, SymbolFeatures] = {}
    for sym in names:
        sym_bars = bars.get(sym, [])
        quote = quotes.get(sym)
        if sym_bars or quote is not None:
            out[sym] = compute_features(sym, sym_bars, quote)
    return out
