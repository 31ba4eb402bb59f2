"""Performance measurement from memory: equity, realized/unrealized P&L, win rate, drawdown.

Realized P&L uses average cost per symbol, the same convention brokers use for the
position's ``avg_entry_price``; a "trade" is a sell fill that closes (part of) a long.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from perun_tui.models import Fill, PerformanceMetrics, Position, Side


def realized_trades(fills: Iterable[Fill]) -> list[float]:
    """P&L of every closing fill, in fill order, by average cost."""
    qty: dict[str, float] = {}
    cost: dict[str, float] = {}
    out: list[float] = []
    for f in sorted(fills, key=lambda f: f.ts):
        held = qty.get(f.symbol, 0.0)
        if f.side is Side.BUY:
            cost[f.symbol] = cost.get(f.symbol, 0.0) + f.qty * f.price
            qty[f.symbol] = held + f.qty
            continue
        if held <= 0:
            continue  # a short or an external position: not scored here
        closing = min(f.qty, held)
        avg = cost[f.symbol] / held
        out.append((f.price - avg) * closing)
        qty[f.symbol] = held - closing
        cost[f.symbol] = avg * qty[f.symbol]
    return out


def max_drawdown_pct(curve: Iterable[float]) -> float:
    peak = 0.0
    worst = 0.0
    for value in curve:
        peak = max(peak, value)
        if peak > 0:
            worst = max(worst, (peak - value) / peak * 100)
    return worst


def compute_metrics(
    *,
    at: datetime,
    equity: float,
    cash: float,
    positions: Iterable[Position],
    fills: Iterable[Fill],
    equity_curve: Iterable[float],
) -> PerformanceMetrics:
    trades = realized_trades(fills)
    wins = sum(1 for t in trades if t > 0)
    return PerformanceMetrics(
        at=at,
        equity=equity,
        cash=cash,
        realized_pl=sum(trades),
        unrealized_pl=sum(p.unrealized_pl for p in positions),
        trades=len(trades),
        wins=wins,
        win_rate=wins / len(trades) if trades else 0.0,
        max_drawdown_pct=max_drawdown_pct([*list(equity_curve), equity]),
    )
