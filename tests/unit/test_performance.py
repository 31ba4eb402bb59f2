"""Performance metrics against numbers worked out by hand (the arithmetic is in comments)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from perun_tui.models import Fill, Position, Side
from perun_tui.services.frequency import analyze_frequency, observed_runs, replay
from perun_tui.services.history import Holding, Point
from perun_tui.services.optimization import compute_metrics
from perun_tui.services.performance import (
    analyze_performance,
    closed_trades,
    cycles_per_session,
    downsample,
    equal_weight_index,
    max_drawdown,
    sharpe_ratio,
    simple_returns,
    sortino_ratio,
    trade_stats,
    typical_spacing_minutes,
)

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)  # a Monday, 09:30 New York


def fill(n: int, symbol: str, side: Side, qty: float, price: float, minutes: int = 0) -> Fill:
    return Fill(
        fill_id=f"f{n}", client_order_id=f"o{n}", symbol=symbol, side=side, qty=qty,
        price=price, ts=T0 + timedelta(minutes=minutes if minutes else n),
    )


def point(
    minutes: float,
    equity: float,
    prices: dict[str, float],
    holdings: dict[str, Holding] | None = None,
    cycle: int | None = None,
) -> Point:
    return Point(
        cycle=cycle, at=T0 + timedelta(minutes=minutes), equity=equity, cash=0.0,
        prices=prices, holdings=holdings or {},
    )


# --------------------------------------------------------------------------- trades


def test_closed_trades_use_average_cost() -> None:
    fills = [
        fill(1, "AAPL", Side.BUY, 10, 100),  # 10 @ 100
        fill(2, "AAPL", Side.BUY, 10, 110),  # 20 @ avg 105
        fill(3, "AAPL", Side.SELL, 5, 120),  # (120 - 105) × 5 = +75, 15 left @ 105
        fill(4, "AAPL", Side.SELL, 15, 100),  # (100 - 105) × 15 = -75, flat
    ]
    trades = closed_trades(fills)
    assert [t.pnl for t in trades] == pytest.approx([75.0, -75.0])
    assert [t.entry for t in trades] == pytest.approx([105.0, 105.0])


def test_closed_trades_shorts_and_flips() -> None:
    fills = [
        fill(1, "X", Side.SELL, 5, 50),  # opens a short 5 @ 50
        fill(2, "X", Side.BUY, 5, 40),  # covers: (50 - 40) × 5 = +50
        fill(3, "X", Side.BUY, 10, 100),  # long 10 @ 100
        fill(4, "X", Side.SELL, 15, 110),  # closes 10: +100, opens short 5 @ 110
        fill(5, "X", Side.BUY, 5, 100),  # covers 5: (110 - 100) × 5 = +50
    ]
    trades = closed_trades(fills)
    assert [t.pnl for t in trades] == pytest.approx([50.0, 100.0, 50.0])
    assert [t.long for t in trades] == [False, True, False]
    assert trades[2].entry == pytest.approx(110.0)


def test_trade_stats_by_hand() -> None:
    st = trade_stats([100.0, -50.0, 30.0, -10.0])
    assert (st.trades, st.wins, st.losses) == (4, 2, 2)
    assert st.win_rate == 0.5
    assert st.gross_win == 130.0 and st.gross_loss == 60.0
    assert st.profit_factor == pytest.approx(130 / 60)
    assert st.avg_win == 65.0 and st.avg_loss == -30.0
    assert st.expectancy == 17.5  # 70 / 4
    assert (st.largest_win, st.largest_loss) == (100.0, -50.0)
    assert trade_stats([5.0]).profit_factor is None  # no losses: not infinite
    assert trade_stats([]).trades == 0


# --------------------------------------------------------------------------- returns


def test_sharpe_and_sortino_by_hand() -> None:
    r = [0.01, -0.005, 0.02, 0.0]
    # mean 0.00625; deviations .00375 -.01125 .01375 -.00625 → squares sum 3.6875e-4,
    # sample variance /3 = 1.2292e-4, sd 0.0110868; 0.00625 / 0.0110868 × √252 = 8.9490
    assert sharpe_ratio(r, 252) == pytest.approx(8.9490, abs=1e-4)
    # downside deviation √((0.005²) / 4) = 0.0025; 0.00625 / 0.0025 × √252 = 39.6863
    assert sortino_ratio(r, 252) == pytest.approx(39.6863, abs=1e-4)
    assert sharpe_ratio([0.01], 252) is None
    assert sharpe_ratio([0.01, 0.01], 252) is None  # no variance
    assert sortino_ratio([0.01, 0.02], 252) is None  # no downside
    assert simple_returns([100, 110, 99]) == pytest.approx([0.1, -0.1])


def test_max_drawdown_with_dates() -> None:
    at = [T0 + timedelta(hours=h) for h in range(6)]
    curve = list(zip(at, [100.0, 120.0, 90.0, 110.0, 125.0, 100.0], strict=True))
    dd = max_drawdown(curve)
    # peak 120 (hour 1) → trough 90 (hour 2): 30 / 120 = 25%; back above 120 at hour 4;
    # the later 125 → 100 fall is 20%, smaller
    assert dd.max_drawdown_pct == pytest.approx(25.0)
    assert dd.max_drawdown_abs == pytest.approx(30.0)
    assert (dd.peak_at, dd.trough_at, dd.recovered_at) == (at[1], at[2], at[4])
    assert dd.duration == timedelta(hours=3)
    open_dd = max_drawdown(list(zip(at[:3], [100.0, 120.0, 90.0], strict=True)))
    assert open_dd.recovered_at is None and open_dd.duration == timedelta(hours=1)
    assert max_drawdown([(at[0], 1.0), (at[1], 2.0)]).max_drawdown_pct == 0.0


def test_equal_weight_index_carries_missing_prices() -> None:
    pts = [
        point(0, 1, {"A": 10, "B": 50}),
        point(15, 1, {"A": 20}),  # B missing: keeps 50
        point(30, 1, {"A": 20, "B": 25}),
    ]
    # A ×2, B ×1 → 1.5; then A ×2, B ×0.5 → 1.25
    assert equal_weight_index(pts) == pytest.approx([1.0, 1.5, 1.25])


def test_cycles_per_session_and_spacing() -> None:
    day2 = 24 * 60
    pts = [point(m, 1, {}) for m in (0, 15, 30, day2, day2 + 15, day2 + 30, day2 + 45)]
    assert cycles_per_session(pts) == 3.5  # median of 3 and 4
    assert typical_spacing_minutes(pts) == 15.0  # the overnight gap is not counted


def test_analyze_performance_small_case_by_hand() -> None:
    fills = [
        fill(1, "A", Side.BUY, 10, 100, minutes=1),  # buy 10 A @ 100 = 1,000
        fill(2, "A", Side.SELL, 5, 120, minutes=31),  # (120 - 100) × 5 = +100
    ]
    pts = [
        point(0, 10_000, {"A": 100, "B": 50}, cycle=1),
        point(15, 10_050, {"A": 105, "B": 50}, {"A": Holding(10, 100, 105)}, cycle=2),
        point(30, 10_200, {"A": 120, "B": 55}, {"A": Holding(10, 100, 120)}, cycle=3),
        point(45, 10_150, {"A": 110, "B": 55}, {"A": Holding(5, 100, 110)}, cycle=4),
    ]
    core = analyze_performance(pts, fills, universe=["A", "B"])
    r = core.returns
    assert r.total_pl == 150.0
    assert r.total_return_pct == pytest.approx(1.5)
    assert r.realized_pl == pytest.approx(100.0)
    assert r.unrealized_pl == pytest.approx(50.0)  # (110 - 100) × 5
    # benchmark at the end: A 110/100, B 55/50 → (1.1 + 1.1) / 2 = 1.1 → +10%
    assert r.benchmark_return_pct == pytest.approx(10.0)
    assert r.excess_return_pct == pytest.approx(-8.5)
    a = core.activity
    assert (a.fills, a.buys, a.sells) == (2, 1, 1)
    assert a.traded_notional == pytest.approx(1600.0)  # 1,000 + 600
    avg_equity = (10_000 + 10_050 + 10_200 + 10_150) / 4  # 10,100
    assert a.avg_equity == pytest.approx(avg_equity)
    assert a.turnover == pytest.approx(1600 / avg_equity)
    # exposure: 0, 1050/10050, 1200/10200, 550/10150 → mean in %
    expected = (0 + 1050 / 10050 + 1200 / 10200 + 550 / 10150) / 4 * 100
    assert a.avg_exposure_pct == pytest.approx(expected)
    assert a.time_in_market_pct == 75.0
    assert core.trades.trades == 1 and core.trades.win_rate == 1.0
    assert core.drawdown.max_drawdown_pct == pytest.approx(50 / 10_200 * 100)
    sym = {s.symbol: s for s in core.symbols}
    assert sym["A"].realized_pl == pytest.approx(100.0)
    assert sym["A"].buy_hold_return_pct == pytest.approx(10.0)
    assert sym["B"].fills == 0
    assert core.period.snapshots == 4 and core.period.frequency_minutes == 15.0
    assert core.risk.periods == 3
    assert core.risk.periods_per_year == 252 * 4
    assert core.risk.period == "per-cycle"  # one session: no daily return exists
    assert core.risk.basis.startswith("one session only: 3 per-cycle (15-minute) returns")
    assert "√(252 × 4 cycles/session)" in core.risk.basis
    rets = [10_050 / 10_000 - 1, 10_200 / 10_050 - 1, 10_150 / 10_200 - 1]
    assert core.risk.sharpe == pytest.approx(sharpe_ratio(rets, 252 * 4))
    # benchmark curve: start equity × (1, (1.05 + 1) / 2, (1.2 + 1.1) / 2, 1.1)
    assert [c.benchmark for c in core.curve] == pytest.approx(
        [10_000, 10_250, 11_500, 11_000]
    )


def test_a_range_marks_positions_held_at_its_start() -> None:
    # bought 10 A @ 100 before the range; the range starts at A 120 (equity 10,200), sells 5
    # @ 120 and ends at A 110 with 5 left (equity 10,150): total P&L -50
    before = fill(1, "A", Side.BUY, 10, 100, minutes=1)
    sell = fill(2, "A", Side.SELL, 5, 120, minutes=31)
    pts = [
        point(30, 10_200, {"A": 120}, {"A": Holding(10, 100, 120)}, cycle=3),
        point(45, 10_150, {"A": 110}, {"A": Holding(5, 100, 110)}, cycle=4),
    ]
    r = analyze_performance(pts, [before, sell]).returns
    assert r.total_pl == -50.0
    assert r.realized_pl == pytest.approx(0.0)  # sold at the 120 the range started at
    assert r.unrealized_pl == pytest.approx(-50.0)  # (110 - 120) × 5
    assert r.realized_pl + r.unrealized_pl == pytest.approx(r.total_pl)
    core = analyze_performance(pts, [before, sell])
    assert core.activity.fills == 1 and core.trades.trades == 1  # the buy was before
    assert {s.symbol: s.unrealized_pl for s in core.symbols}["A"] == pytest.approx(-50.0)


def test_realized_plus_unrealized_is_the_equity_change_over_any_range() -> None:
    # cash 1,000; buys 4 A @ 10, then 4 more @ 15, sells 6 @ 20, A ends at 12
    fills = [
        fill(1, "A", Side.BUY, 4, 10, minutes=1),
        fill(2, "A", Side.BUY, 4, 15, minutes=16),
        fill(3, "A", Side.SELL, 6, 20, minutes=31),
    ]
    rows = [  # (minutes, cash, qty, price)
        (0, 1000, 0, 10), (15, 960, 4, 14), (30, 900, 8, 18), (45, 1020, 2, 12),
    ]
    pts = [
        point(m, cash + q * px, {"A": px}, {"A": Holding(q, 0.0, px)} if q else None)
        for m, cash, q, px in rows
    ]
    for lo in range(3):
        core = analyze_performance(pts[lo:], fills)
        r = core.returns
        assert r.realized_pl + r.unrealized_pl == pytest.approx(r.total_pl), lo
    # from the start: average cost 12.5 on 8; 6 sold @ 20 → +45; 2 left at 12 → -1
    whole = analyze_performance(pts, fills).returns
    assert (whole.realized_pl, whole.unrealized_pl) == pytest.approx((45.0, -1.0))
    # from minute 30: 8 held, marked @ 18; 6 sold @ 20 → +12; 2 left: (12 - 18) × 2 = -12
    late = analyze_performance(pts[2:], fills).returns
    assert (late.realized_pl, late.unrealized_pl, late.total_pl) == pytest.approx(
        (12.0, -12.0, 0.0)
    )


def test_sharpe_on_daily_returns_across_sessions() -> None:
    day = 24 * 60
    pts = [
        point(0, 1000, {"A": 10}), point(15, 1010, {"A": 10}),  # session 1 ends at 1010
        point(day, 1030, {"A": 11}), point(day + 15, 1020, {"A": 11}),  # ends at 1020
        point(2 * day, 1060, {"A": 12}), point(2 * day + 15, 1071, {"A": 12}),  # 1071
    ]
    risk = analyze_performance(pts, []).risk
    # daily: 1010/1000 - 1, 1020/1010 - 1, 1071/1020 - 1 (the overnight jumps are inside)
    daily = [0.01, 1020 / 1010 - 1, 1071 / 1020 - 1]
    assert (risk.period, risk.periods, risk.periods_per_year) == ("daily", 3, 252)
    assert risk.sharpe == pytest.approx(sharpe_ratio(daily, 252))
    assert risk.sortino is None  # no down day
    # benchmark: A 10 → 10 → 11 → 12 at the closes
    assert risk.benchmark_sharpe == pytest.approx(sharpe_ratio([0.0, 0.1, 1 / 11], 252))
    assert risk.basis.startswith("3 daily returns")


def test_fills_after_the_last_snapshot_belong_to_the_next_period() -> None:
    pts = [point(0, 1000, {"A": 10}), point(15, 1000, {"A": 10})]
    late = fill(9, "A", Side.BUY, 1, 10, minutes=20)
    assert analyze_performance(pts, [late]).activity.fills == 0


def test_downsample_keeps_ends() -> None:
    from perun_tui.services.performance import CurvePoint

    items = [CurvePoint(at=T0, equity=float(i)) for i in range(1000)]
    out = downsample(items, 11)
    assert len(out) == 11 and out[0].equity == 0 and out[-1].equity == 999


def test_compute_metrics_still_serves_the_daemon() -> None:
    fills = [fill(1, "A", Side.BUY, 10, 100), fill(2, "A", Side.SELL, 10, 90)]
    m = compute_metrics(
        at=T0, equity=9_900, cash=9_900,
        positions=[Position(symbol="B", qty=2, avg_price=10, market_price=12)],
        fills=fills, equity_curve=[10_000, 10_100],
    )
    assert m.realized_pl == pytest.approx(-100.0)
    assert m.unrealized_pl == pytest.approx(4.0)
    assert (m.trades, m.wins, m.win_rate) == (1, 0, 0.0)
    assert m.max_drawdown_pct == pytest.approx(200 / 10_100 * 100)


# --------------------------------------------------------------------------- frequency


def _trend_points(n: int, step_minutes: int = 15) -> list[Point]:
    pts = []
    for i in range(n):
        wave = 100 * (1 + 0.05 * math.sin(i / 6))  # slow swings: trends to follow
        pts.append(point(i * step_minutes, 10_000 + i, {"A": wave, "B": wave * 2}))
    return pts


def test_replay_steps_and_caveats() -> None:
    pts = _trend_points(200)
    runs = [replay(pts, ["A", "B"], k) for k in (1, 2, 4)]
    assert [r.frequency_minutes for r in runs] == [15.0, 30.0, 60.0]
    assert runs[0].decisions == 200 - 20 - 1
    assert runs[1].decisions == 100 - 20 - 1
    assert runs[0].trades > 0 and runs[0].noise_pct is not None
    analysis = analyze_frequency(pts, ["A", "B"], (1, 2, 4))
    assert analysis.best_step in (1, 2, 4)
    assert analysis.verdict and len(analysis.caveats) >= 3
    short = analyze_frequency(pts[:25], ["A"], (1, 2))
    assert "not enough" in short.verdict


def test_observed_runs_group_by_spacing() -> None:
    pts = [point(i * 15, 1000 * (1.001**i), {}) for i in range(12)]
    pts += [point(11 * 15 + 30 * (i + 1), pts[-1].equity, {}) for i in range(12)]
    runs = observed_runs(pts)
    assert [(r.frequency_minutes, r.cycles) for r in runs] == [(15.0, 11), (30.0, 12)]
    assert runs[0].mean_return_pct == pytest.approx(0.1)
    assert runs[1].mean_return_pct == pytest.approx(0.0)
