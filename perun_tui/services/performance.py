"""Performance from stored history: small, tested functions and the models they fill.

Conventions, stated once so every number can be checked by hand:

* **The period** runs from its first snapshot to its last. Positions held at the first
  snapshot are *marked* at its prices: over the period they count as if bought there.
  So realized + unrealized P&L = end − start equity for any date range (no fees are
  modelled beyond the fill prices), whether or not the range starts at the beginning.
* **Realized P&L** uses average cost per symbol (what brokers report as
  ``avg_entry_price``), starting from those marks. A *closed trade* is a fill that
  reduces a position; its P&L is ``(exit - average cost) × closed qty`` (sign flipped for
  shorts). **Unrealized** is the open positions at the last snapshot against that cost.
* **Sharpe and Sortino** use daily returns: the equity at the last snapshot of each
  session against the one before (the first session against the period's start),
  annualized by ``√252``, risk-free rate 0. Per-cycle returns would mix 15-minute moves
  with overnight gaps under one annualization factor. With a single session there is no
  daily return to speak of, and the per-cycle returns of that session are used, annualized
  by ``√(252 × cycles per session)``; the report states which basis it used.
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from pydantic import Field

from perun_tui.models import Fill, Side
from perun_tui.services.history import Point
from perun_tui.services.report_model import ReportModel

TRADING_DAYS = 252


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


@dataclass(frozen=True, slots=True)
class Lot:
    """A position as the P&L arithmetic sees it: signed quantity at an average cost."""

    qty: float
    avg: float


def closed_trades(
    fills: Iterable[Fill], opening: Mapping[str, Lot] | None = None
) -> list[ClosedTrade]:
    """Every position-reducing fill as a trade, by average cost, in fill order."""
    return replay_fills(fills, opening)[0]


def replay_fills(
    fills: Iterable[Fill], opening: Mapping[str, Lot] | None = None
) -> tuple[list[ClosedTrade], dict[str, Lot]]:
    """Apply ``fills`` in time order to the ``opening`` positions (none: flat): the
    closed trades, and the positions left (``qty`` 0 once closed)."""
    qty: dict[str, float] = {s: lot.qty for s, lot in (opening or {}).items()}
    avg: dict[str, float] = {s: lot.avg for s, lot in (opening or {}).items()}
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
    return out, {s: Lot(q, avg.get(s, 0.0)) for s, q in qty.items()}


def period_book(
    points: Sequence[Point], fills: Iterable[Fill]
) -> tuple[list[Fill], list[ClosedTrade], dict[str, Lot]]:
    """The period's own P&L book: the fills after its first snapshot up to its last, the
    trades they closed and the positions left — starting from the positions held at the
    first snapshot, marked at that snapshot's prices (see the module doc)."""
    if not points:
        return [], [], {}
    start, end = points[0], points[-1]
    inside = sorted((f for f in fills if start.at < f.ts <= end.at), key=lambda f: f.ts)
    opening = {s: Lot(h.qty, h.market_price) for s, h in start.holdings.items()}
    trades, book = replay_fills(inside, opening)
    return inside, trades, book


def unrealized(end: Point, book: Mapping[str, Lot]) -> dict[str, float]:
    """Open positions at ``end`` against the period's cost (the book's average cost, or
    the broker's when the book does not know the position, e.g. a fill not stored)."""
    out: dict[str, float] = {}
    for sym, h in end.holdings.items():
        lot = book.get(sym)
        cost = lot.avg if lot is not None and abs(lot.qty - h.qty) < 1e-9 else h.avg_price
        out[sym] = (h.market_price - cost) * h.qty
    return out


class TradeStats(ReportModel):
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


class Drawdown(ReportModel):
    max_drawdown_pct: float = 0.0
    max_drawdown_abs: float = 0.0
    peak_at: datetime | None = None
    peak_equity: float | None = None
    trough_at: datetime | None = None
    trough_equity: float | None = None
    recovered_at: datetime | None = None  # back at the peak; None: not (yet) recovered
    duration: timedelta | None = None  # peak → recovery, or peak → end when not recovered


def deepest_fall(values: Sequence[float]) -> tuple[int, int, float] | None:
    """(peak index, trough index, fall in %) of the deepest fall from a running peak;
    None when the values never fall. The one drawdown algorithm: the report dates it
    (``max_drawdown``), the daemon's quick metrics use the percentage."""
    best: tuple[int, int, float] | None = None
    peak_index = 0
    for i, value in enumerate(values):
        peak = values[peak_index]
        if value > peak:
            peak_index = i
            continue
        if peak <= 0:
            continue
        depth = (peak - value) / peak * 100
        if depth > 0 and (best is None or depth > best[2]):
            best = (peak_index, i, depth)
    return best


def max_drawdown(curve: Sequence[tuple[datetime, float]]) -> Drawdown:
    """The deepest peak-to-trough fall (in %) of the curve, with its dates."""
    found = deepest_fall([v for _, v in curve])
    if found is None:
        return Drawdown()
    p, t, depth = found
    (peak_at, peak), (trough_at, trough) = curve[p], curve[t]
    recovered = next((at for at, v in curve[t + 1 :] if v >= peak), None)
    return Drawdown(
        max_drawdown_pct=depth,
        max_drawdown_abs=peak - trough,
        peak_at=peak_at,
        peak_equity=peak,
        trough_at=trough_at,
        trough_equity=trough,
        recovered_at=recovered,
        duration=(recovered or curve[-1][0]) - peak_at,
    )


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


class Returns(ReportModel):
    start_equity: float = 0.0
    end_equity: float = 0.0
    total_pl: float = 0.0  # end - start equity
    realized_pl: float = 0.0  # closed trades in the period (positions marked at its start)
    unrealized_pl: float = 0.0  # open positions at the end, against the same cost
    total_return_pct: float = 0.0
    benchmark_return_pct: float | None = None
    excess_return_pct: float | None = None  # strategy minus benchmark, in points
    benchmark: str = "equal-weight buy-and-hold of the universe"


class RiskAdjusted(ReportModel):
    sharpe: float | None = None
    sortino: float | None = None
    benchmark_sharpe: float | None = None
    volatility_pct: float | None = None  # annualized, of the same returns
    periods: int = 0  # returns used
    periods_per_year: float = 0.0
    period: str = ""  # "daily" or "per-cycle" (a single session)
    basis: str = ""  # the period used, in words


class Activity(ReportModel):
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


class SymbolPerformance(ReportModel):
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


class CurvePoint(ReportModel):
    at: datetime
    equity: float
    benchmark: float | None = None


class Period(ReportModel):
    start: datetime | None = None
    end: datetime | None = None
    first_cycle: int | None = None
    last_cycle: int | None = None
    snapshots: int = 0
    sessions: int = 0
    cycles_per_session: float = 0.0
    frequency_minutes: float | None = None  # median spacing of snapshots within a session


class PerformanceCore(ReportModel):
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


def session_closes(points: Sequence[Point]) -> list[int]:
    """Index of the last snapshot of every session in ``points``."""
    last = len(points) - 1
    return [i for i, p in enumerate(points) if i == last or points[i + 1].session != p.session]


def risk_adjusted(points: Sequence[Point], index: Sequence[float] | None) -> RiskAdjusted:
    """Sharpe, Sortino and volatility on daily returns (one session: per-cycle returns),
    for the strategy and, when ``index`` is given, the benchmark (see the module doc)."""
    closes = [i for i in session_closes(points) if i > 0]
    sessions = len({p.session for p in points})
    if sessions >= 2:
        marks = [0, *closes]
        ppy: float = TRADING_DAYS
        period = "daily"
        basis = (
            f"{len(marks) - 1} daily returns (equity at each session's last cycle, the first "
            "against the period's start), annualized by √252, risk-free rate 0"
        )
    else:
        marks = list(range(len(points)))
        per_session = cycles_per_session(points)
        ppy = TRADING_DAYS * per_session
        period = "per-cycle"
        spacing = typical_spacing_minutes(points)
        every = f" ({spacing:g}-minute)" if spacing else ""
        basis = (
            f"one session only: {len(marks) - 1} per-cycle{every} returns, annualized by "
            f"√(252 × {per_session:g} cycles/session), risk-free rate 0"
        )
    rets = simple_returns([points[i].equity for i in marks])
    bench = simple_returns([index[i] for i in marks]) if index else None
    return RiskAdjusted(
        sharpe=sharpe_ratio(rets, ppy),
        sortino=sortino_ratio(rets, ppy),
        benchmark_sharpe=sharpe_ratio(bench, ppy) if bench is not None else None,
        volatility_pct=statistics.stdev(rets) * math.sqrt(ppy) * 100 if len(rets) >= 2 else None,
        periods=len(rets),
        periods_per_year=ppy,
        period=period,
        basis=basis,
    )


def analyze_performance(
    points: Sequence[Point],
    fills_all: Sequence[Fill],
    *,
    universe: Sequence[str] | None = None,
    max_curve_points: int = 400,
) -> PerformanceCore:
    """Every equity/fill metric of the report, over the span of ``points``. ``fills_all``
    may hold fills from before it (they are ignored: positions held at the first snapshot
    are marked at its prices) and after it (they belong to the next period)."""
    out = PerformanceCore()
    if not points:
        return out
    start, end = points[0], points[-1]
    fills, trades, book = period_book(points, fills_all)
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
    open_pl = unrealized(end, book)
    bench_ret = (index[-1] - 1.0) * 100 if symbols else None
    total_ret = (end.equity / start.equity - 1.0) * 100 if start.equity > 0 else 0.0
    out.returns = Returns(
        start_equity=start.equity,
        end_equity=end.equity,
        total_pl=end.equity - start.equity,
        realized_pl=sum(t.pnl for t in trades),
        unrealized_pl=sum(open_pl.values()),
        total_return_pct=total_ret,
        benchmark_return_pct=bench_ret,
        excess_return_pct=None if bench_ret is None else total_ret - bench_ret,
    )
    out.risk = risk_adjusted(points, index if symbols else None)
    out.drawdown = max_drawdown([(p.at, p.equity) for p in points])
    out.trades = trade_stats([t.pnl for t in trades])
    equity = [p.equity for p in points]

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
                unrealized_pl=open_pl.get(sym, 0.0),
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
