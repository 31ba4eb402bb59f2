"""Performance from stored history: small, tested functions and the models they fill.

Conventions, stated once so every number can be checked by hand:

* **Realized P&L** uses average cost per symbol (what brokers report as
  ``avg_entry_price``). A *closed trade* is a fill that reduces a position; its P&L is
  ``(exit - average cost) × closed qty`` (sign flipped for shorts).
* **Returns** are simple returns between consecutive snapshots (one per cycle). Sharpe
  and Sortino are computed on those per-cycle returns with a zero risk-free rate and
  annualized by ``√(252 × cycles per session)``, where cycles per session is the median
  number of snapshots per trading day in the data; the report states both numbers.
  Sortino's downside deviation is ``√(mean(min(r, 0)²))`` over all periods.
* **Benchmark**: equal-weight buy-and-hold of the universe — the same money split
  equally across the symbols quoted in the first snapshot, bought at those quotes and
  never rebalanced; its value is the start equity × the mean of ``price / first price``.
* **Exposure** is gross position value / equity per snapshot; **turnover** is traded
  notional / average equity.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from pydantic import BaseModel, ConfigDict, Field

from perun_tui.models import Fill, Side
from perun_tui.services.history import Point

TRADING_DAYS = 252


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- trades


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    symbol: str
    at: datetime
    qty: float  # closed quantity (positive)
    entry: float  # average cost of what was closed
    exit: float
    pnl: float
    long: bool


def closed_trades(fills: Iterable[Fill]) -> list[ClosedTrade]:
    """Every position-reducing fill as a trade, by average cost, in fill order."""
    qty: dict[str, float] = {}
    avg: dict[str, float] = {}
    out: list[ClosedTrade] = []
    for f in sorted(fills, key=lambda f: f.ts):
        held = qty.get(f.symbol, 0.0)
        signed = f.qty if f.side is Side.BUY else -f.qty
        if held == 0 or (held > 0) == (signed > 0):
            new = held + signed
            avg[f.symbol] = (avg.get(f.symbol, 0.0) * abs(held) + f.price * abs(signed)) / abs(
                new
            )
            qty[f.symbol] = new
            continue
        closing = min(abs(signed), abs(held))
        entry = avg[f.symbol]
        long = held > 0
        pnl = (f.price - entry) * closing * (1.0 if long else -1.0)
        out.append(ClosedTrade(f.symbol, f.ts, closing, entry, f.price, pnl, long))
        rest = held + signed
        if abs(rest) < 1e-12:
            qty[f.symbol] = 0.0
            avg[f.symbol] = 0.0
        elif (rest > 0) == long:
            qty[f.symbol] = rest  # partly closed: the average cost stays
        else:
            qty[f.symbol] = rest  # flipped: the remainder opens at this fill's price
            avg[f.symbol] = f.price
    return out


class TradeStats(_Out):
    trades: int = 0
    wins: int = 0
    losses: int = 0
    win_rate: float | None = None  # wins / trades
    profit_factor: float | None = None  # gross wins / gross losses; None: no losses
    gross_win: float = 0.0
    gross_loss: float = 0.0  # a positive number
    avg_win: float | None = None
    avg_loss: float | None = None  # negative
    expectancy: float | None = None  # mean P&L per trade
    largest_win: float | None = None
    largest_loss: float | None = None


def trade_stats(pnls: Sequence[float]) -> TradeStats:
    if not pnls:
        return TradeStats()
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    gross_win = sum(wins)
    gross_loss = -sum(losses)
    return TradeStats(
        trades=len(pnls),
        wins=len(wins),
        losses=len(losses),
        win_rate=len(wins) / len(pnls),
        profit_factor=gross_win / gross_loss if gross_loss > 0 else None,
        gross_win=gross_win,
        gross_loss=gross_loss,
        avg_win=gross_win / len(wins) if wins else None,
        avg_loss=-gross_loss / len(losses) if losses else None,
        expectancy=sum(pnls) / len(pnls),
        largest_win=max(wins) if wins else None,
        largest_loss=min(losses) if losses else None,
    )


# --------------------------------------------------------------------------- returns


def simple_returns(values: Sequence[float]) -> list[float]:
    return [
        values[i] / values[i - 1] - 1.0 for i in range(1, len(values)) if values[i - 1] > 0
    ]


def sharpe_ratio(returns: Sequence[float], periods_per_year: float) -> float | None:
    """Annualized mean / sample standard deviation of per-period returns (rf = 0)."""
    if len(returns) < 2:
        return None
    sd = statistics.stdev(returns)
    if sd <= 0:
        return None
    return statistics.fmean(returns) / sd * math.sqrt(periods_per_year)


def sortino_ratio(returns: Sequence[float], periods_per_year: float) -> float | None:
    """Annualized mean / downside deviation √(mean(min(r, 0)²)) (target 0)."""
    if len(returns) < 2:
        return None
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / len(returns))
    if downside <= 0:
        return None
    return statistics.fmean(returns) / downside * math.sqrt(periods_per_year)


class Drawdown(_Out):
    max_drawdown_pct: float = 0.0
    max_drawdown_abs: float = 0.0
    peak_at: datetime | None = None
    peak_equity: float | None = None
    trough_at: datetime | None = None
    trough_equity: float | None = None
    recovered_at: datetime | None = None  # back at the peak; None: not (yet) recovered
    duration: timedelta | None = None  # peak → recovery, or peak → end when not recovered


def max_drawdown(curve: Sequence[tuple[datetime, float]]) -> Drawdown:
    """The deepest peak-to-trough fall (in %) of the curve, with its dates."""
    if not curve:
        return Drawdown()
    peak_at, peak = curve[0]
    best = Drawdown()
    best_peak_index = -1
    peak_index = 0
    for i, (at, value) in enumerate(curve):
        if value > peak:
            peak, peak_at, peak_index = value, at, i
            continue
        if peak <= 0:
            continue
        depth = (peak - value) / peak * 100
        if depth > best.max_drawdown_pct:
            best = Drawdown(
                max_drawdown_pct=depth,
                max_drawdown_abs=peak - value,
                peak_at=peak_at,
                peak_equity=peak,
                trough_at=at,
                trough_equity=value,
            )
            best_peak_index = peak_index
    if best.peak_at is None:
        return best
    assert best.peak_equity is not None and best.trough_at is not None
    for at, value in curve[best_peak_index + 1 :]:
        if at > best.trough_at and value >= best.peak_equity:
            best.recovered_at = at
            break
    end = best.recovered_at or curve[-1][0]
    best.duration = end - best.peak_at
    return best


def max_drawdown_pct(curve: Iterable[float]) -> float:
    """The deepest fall from a running peak, in % (no dates)."""
    peak = 0.0
    worst = 0.0
    for value in curve:
        peak = max(peak, value)
        if peak > 0:
            worst = max(worst, (peak - value) / peak * 100)
    return worst


def equal_weight_index(
    points: Sequence[Point], symbols: Sequence[str] | None = None
) -> list[float]:
    """Growth of 1 invested equally in ``symbols`` at the first snapshot, never rebalanced.

    A symbol missing from a later snapshot keeps its last known price.
    """
    if not points:
        return []
    first = points[0].prices
    names = [s for s in (symbols if symbols is not None else list(first)) if first.get(s, 0) > 0]
    if not names:
        return [1.0 for _ in points]
    last = {s: first[s] for s in names}
    out: list[float] = []
    for p in points:
        for s in names:
            price = p.prices.get(s)
            if price is not None and price > 0:
                last[s] = price
        out.append(sum(last[s] / first[s] for s in names) / len(names))
    return out


def cycles_per_session(points: Sequence[Point]) -> float:
    """Median number of snapshots per trading day (at least 1)."""
    counts: dict[object, int] = {}
    for p in points:
        counts[p.session] = counts.get(p.session, 0) + 1
    if not counts:
        return 1.0
    return max(1.0, float(statistics.median(counts.values())))


def typical_spacing_minutes(points: Sequence[Point]) -> float | None:
    """Median minutes between consecutive snapshots of the same session."""
    gaps = [
        (b.at - a.at).total_seconds() / 60
        for a, b in pairwise(points)
        if a.session == b.session
    ]
    return round(float(statistics.median(gaps)), 2) if gaps else None


# --------------------------------------------------------------------------- report parts


class Returns(_Out):
    start_equity: float = 0.0
    end_equity: float = 0.0
    total_pl: float = 0.0  # end - start equity
    realized_pl: float = 0.0  # closed trades in the period
    unrealized_pl: float = 0.0  # open positions at the end
    total_return_pct: float = 0.0
    benchmark_return_pct: float | None = None
    excess_return_pct: float | None = None  # strategy minus benchmark, in points
    benchmark: str = "equal-weight buy-and-hold of the universe"


class RiskAdjusted(_Out):
    sharpe: float | None = None
    sortino: float | None = None
    benchmark_sharpe: float | None = None
    volatility_pct: float | None = None  # annualized, of per-cycle returns
    periods: int = 0  # returns used
    periods_per_year: float = 0.0
    basis: str = ""  # the period used, in words


class Activity(_Out):
    fills: int = 0
    buys: int = 0
    sells: int = 0
    traded_notional: float = 0.0
    avg_equity: float = 0.0
    turnover: float = 0.0  # traded notional / average equity (×)
    turnover_per_session: float = 0.0
    avg_exposure_pct: float = 0.0
    max_exposure_pct: float = 0.0
    time_in_market_pct: float = 0.0  # share of snapshots holding any position


class SymbolPerformance(_Out):
    symbol: str
    fills: int = 0
    traded_notional: float = 0.0
    realized_pl: float = 0.0
    unrealized_pl: float = 0.0
    position_qty: float = 0.0
    trades: int = 0
    win_rate: float | None = None
    buy_hold_return_pct: float | None = None
    signals: int = 0
    hit_rate: float | None = None  # of its signals at the primary horizon
    mean_return_pct: float | None = None


class CurvePoint(_Out):
    at: datetime
    equity: float
    benchmark: float | None = None


class Period(_Out):
    start: datetime | None = None
    end: datetime | None = None
    first_cycle: int | None = None
    last_cycle: int | None = None
    snapshots: int = 0
    sessions: int = 0
    cycles_per_session: float = 0.0
    frequency_minutes: float | None = None  # median spacing of snapshots within a session


class PerformanceCore(_Out):
    """Everything computed from the equity curve and fills (no signal scoring)."""

    period: Period = Field(default_factory=Period)
    returns: Returns = Field(default_factory=Returns)
    risk: RiskAdjusted = Field(default_factory=RiskAdjusted)
    drawdown: Drawdown = Field(default_factory=Drawdown)
    trades: TradeStats = Field(default_factory=TradeStats)
    activity: Activity = Field(default_factory=Activity)
    symbols: list[SymbolPerformance] = Field(default_factory=list)
    curve: list[CurvePoint] = Field(default_factory=list)


def downsample(items: Sequence[CurvePoint], max_points: int) -> list[CurvePoint]:
    """At most ``max_points`` evenly spaced points, always keeping the first and last."""
    n = len(items)
    if max_points <= 1 or n <= max_points:
        return list(items)
    step = (n - 1) / (max_points - 1)
    return [items[round(i * step)] for i in range(max_points)]


def analyze_performance(
    points: Sequence[Point],
    fills_all: Sequence[Fill],
    *,
    since: datetime | None = None,
    universe: Sequence[str] | None = None,
    max_curve_points: int = 400,
) -> PerformanceCore:
    """Every equity/fill metric of the report. ``fills_all`` may start before ``since``
    (their cost basis matters); only fills from ``since`` to the last snapshot count."""
    out = PerformanceCore()
    if not points:
        return out
    start, end = points[0], points[-1]
    # the period is the span of the snapshots: fills after the last one belong to the next
    fills = [f for f in fills_all if (since is None or f.ts >= since) and f.ts <= end.at]
    per_session = cycles_per_session(points)
    sessions = len({p.session for p in points})
    out.period = Period(
        start=start.at,
        end=end.at,
        first_cycle=start.cycle,
        last_cycle=end.cycle,
        snapshots=len(points),
        sessions=sessions,
        cycles_per_session=per_session,
        frequency_minutes=typical_spacing_minutes(points),
    )

    # returns and benchmark
    symbols = [s for s in (universe or start.prices) if s in start.prices]
    index = equal_weight_index(points, symbols)
    trades_all = closed_trades(fills_all)
    trades = [t for t in trades_all if (since is None or t.at >= since) and t.at <= end.at]
    unrealized = sum(h.unrealized_pl for h in end.holdings.values())
    bench_ret = (index[-1] - 1.0) * 100 if symbols else None
    total_ret = (end.equity / start.equity - 1.0) * 100 if start.equity > 0 else 0.0
    out.returns = Returns(
        start_equity=start.equity,
        end_equity=end.equity,
        total_pl=end.equity - start.equity,
        realized_pl=sum(t.pnl for t in trades),
        unrealized_pl=unrealized,
        total_return_pct=total_ret,
        benchmark_return_pct=bench_ret,
        excess_return_pct=None if bench_ret is None else total_ret - bench_ret,
    )

    # risk-adjusted
    equity = [p.equity for p in points]
    rets = simple_returns(equity)
    ppy = TRADING_DAYS * per_session
    spacing = out.period.frequency_minutes
    every = f"{spacing:g}-minute " if spacing else ""
    out.risk = RiskAdjusted(
        sharpe=sharpe_ratio(rets, ppy),
        sortino=sortino_ratio(rets, ppy),
        benchmark_sharpe=sharpe_ratio(simple_returns(index), ppy) if symbols else None,
        volatility_pct=(
            statistics.stdev(rets) * math.sqrt(ppy) * 100 if len(rets) >= 2 else None
        ),
        periods=len(rets),
        periods_per_year=ppy,
        basis=(
            f"{len(rets)} per-cycle ({every}snapshot-to-snapshot) returns over {sessions} "
            f"session(s), annualized by √(252 × {per_session:g} cycles/session), "
            "risk-free rate 0"
        ),
    )
    out.drawdown = max_drawdown([(p.at, p.equity) for p in points])
    out.trades = trade_stats([t.pnl for t in trades])

    # activity
    traded = sum(f.qty * f.price for f in fills)
    avg_equity = statistics.fmean(equity)
    exposures = [p.gross_exposure / p.equity * 100 if p.equity > 0 else 0.0 for p in points]
    out.activity = Activity(
        fills=len(fills),
        buys=sum(1 for f in fills if f.side is Side.BUY),
        sells=sum(1 for f in fills if f.side is Side.SELL),
        traded_notional=traded,
        avg_equity=avg_equity,
        turnover=traded / avg_equity if avg_equity > 0 else 0.0,
        turnover_per_session=(traded / avg_equity / sessions) if avg_equity > 0 else 0.0,
        avg_exposure_pct=statistics.fmean(exposures),
        max_exposure_pct=max(exposures),
        time_in_market_pct=sum(1 for p in points if p.holdings) / len(points) * 100,
    )

    # per symbol
    names = list(dict.fromkeys([*symbols, *(f.symbol for f in fills), *end.holdings]))
    for sym in names:
        sym_fills = [f for f in fills if f.symbol == sym]
        sym_trades = [t.pnl for t in trades if t.symbol == sym]
        holding = end.holdings.get(sym)
        first_px = start.prices.get(sym)
        last_px = next((p.prices[sym] for p in reversed(points) if sym in p.prices), None)
        stats = trade_stats(sym_trades)
        out.symbols.append(
            SymbolPerformance(
                symbol=sym,
                fills=len(sym_fills),
                traded_notional=sum(f.qty * f.price for f in sym_fills),
                realized_pl=sum(sym_trades),
                unrealized_pl=holding.unrealized_pl if holding else 0.0,
                position_qty=holding.qty if holding else 0.0,
                trades=stats.trades,
                win_rate=stats.win_rate,
                buy_hold_return_pct=(
                    (last_px / first_px - 1) * 100 if first_px and last_px else None
                ),
            )
        )

    curve = [
        CurvePoint(at=p.at, equity=p.equity, benchmark=start.equity * i if symbols else None)
        for p, i in zip(points, index, strict=True)
    ]
    out.curve = downsample(curve, max_curve_points)
    return out
