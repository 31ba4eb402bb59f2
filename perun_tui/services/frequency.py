"""Frequency analysis: would trading more or less often have done better?

Two views, both from stored history:

* **Replay**: the stored cycle prices are sampled every *k*-th cycle (k = 1, 2, 4, ...:
  the run's own frequency and coarser ones) and the rules analyst's decision function is
  run on each sample, long-only, equal weight per symbol, in and out at the sampled
  prices. Comparing k = 1 with k > 1 holds the rule fixed and changes only the frequency.
* **Observed**: when the bot itself ran at different frequencies in the period, the
  per-cycle results of each stretch side by side.

Neither is a forecast; the caveats travel with the numbers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise

from pydantic import Field

from perun_tui.features import compute_features
from perun_tui.llm.rules import RulesAnalyst
from perun_tui.models import Action, Bar
from perun_tui.services.history import Point
from perun_tui.services.performance import (
    TRADING_DAYS,
    cycles_per_session,
    sharpe_ratio,
    typical_spacing_minutes,
)
from perun_tui.services.report_model import ReportModel

WINDOW = 60  # bars of history the replayed rule sees, like trading.history_bars
WARMUP = 20  # samples before the first decision (the slow moving average)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class ReplayRun(ReportModel):
    step: int  # every k-th stored cycle
    frequency_minutes: float | None
    decisions: int = 0  # samples where the rule was asked
    trades: int = 0  # round trips closed (open ones valued at the last price)
    hit_rate: float | None = None
    total_return_pct: float = 0.0
    sharpe: float | None = None
    exposure_pct: float = 0.0
    noise_pct: float | None = None  # σ of per-step returns × √steps: ≈ one standard error


class ObservedRun(ReportModel):
    frequency_minutes: float
    cycles: int
    mean_return_pct: float  # per cycle
    return_per_session_pct: float
    sharpe: float | None


class FrequencyAnalysis(ReportModel):
    base_minutes: float | None = None
    replays: list[ReplayRun] = Field(default_factory=list)
    observed: list[ObservedRun] = Field(default_factory=list)
    best_step: int | None = None
    noise_pct: float | None = None  # ≈ one standard error of the base replay's return
    verdict: str = ""
    caveats: list[str] = Field(default_factory=list)


def _bars(symbol: str, prices: Sequence[float]) -> list[Bar]:
    return [
        Bar(symbol=symbol, ts=_EPOCH, open=p, high=p, low=p, close=p, volume=0.0)
        for p in prices
    ]


def replay(
    points: Sequence[Point],
    symbols: Sequence[str],
    step: int,
    *,
    analyst: RulesAnalyst | None = None,
    per_session: float | None = None,
) -> ReplayRun:
    """Run the rules analyst's decision function on every ``step``-th stored cycle."""
    analyst = analyst or RulesAnalyst()
    sampled = list(points[::step])
    spacing = typical_spacing_minutes(points)
    run = ReplayRun(step=step, frequency_minutes=spacing * step if spacing else None)
    names = [s for s in symbols if all(s in p.prices for p in sampled)]
    if len(sampled) <= WARMUP + 1 or not names:
        return run
    series = {s: [p.prices[s] for p in sampled] for s in names}
    held: dict[str, float | None] = dict.fromkeys(names)  # entry price when long
    trade_returns: list[float] = []
    step_returns: list[float] = []
    in_market = 0
    for i in range(WARMUP, len(sampled) - 1):
        run.decisions += 1
        for s in names:
            window = series[s][max(0, i + 1 - WINDOW) : i + 1]
            idea = analyst.evaluate(compute_features(s, _bars(s, window), None))
            price = series[s][i]
            entry = held[s]
            if idea.action is Action.BUY and entry is None:
                held[s] = price
            elif idea.action is Action.SELL and entry is not None:
                trade_returns.append(price / entry - 1.0)
                held[s] = None
        moves = [
            (series[s][i + 1] / series[s][i] - 1.0) if held[s] is not None else 0.0
            for s in names
        ]
        in_market += any(held[s] is not None for s in names)
        step_returns.append(sum(moves) / len(names))
    for s in names:
        entry = held[s]
        if entry is not None:
            trade_returns.append(series[s][-1] / entry - 1.0)
    growth = math.prod(1.0 + r for r in step_returns)
    per = (per_session or cycles_per_session(points)) / step
    run.trades = len(trade_returns)
    run.hit_rate = (
        sum(1 for r in trade_returns if r > 0) / len(trade_returns) if trade_returns else None
    )
    run.total_return_pct = (growth - 1.0) * 100
    run.sharpe = sharpe_ratio(step_returns, TRADING_DAYS * max(per, 1e-9))
    run.exposure_pct = in_market / len(step_returns) * 100 if step_returns else 0.0
    if len(step_returns) >= 2:
        run.noise_pct = statistics.stdev(step_returns) * math.sqrt(len(step_returns)) * 100
    return run


def observed_runs(points: Sequence[Point], min_cycles: int = 10) -> list[ObservedRun]:
    """Per-cycle equity returns grouped by the spacing the bot actually ran at."""
    groups: dict[float, list[float]] = {}
    for a, b in pairwise(points):
        if a.session != b.session or a.equity <= 0:
            continue
        gap = float(round((b.at - a.at).total_seconds() / 60))
        if gap <= 0:
            continue
        groups.setdefault(gap, []).append(b.equity / a.equity - 1.0)
    out: list[ObservedRun] = []
    for minutes, rets in sorted(groups.items()):
        if len(rets) < min_cycles:
            continue
        per_session = 390.0 / minutes
        out.append(
            ObservedRun(
                frequency_minutes=minutes,
                cycles=len(rets),
                mean_return_pct=statistics.fmean(rets) * 100,
                return_per_session_pct=statistics.fmean(rets) * per_session * 100,
                sharpe=sharpe_ratio(rets, TRADING_DAYS * per_session),
            )
        )
    return out


def analyze_frequency(
    points: Sequence[Point],
    symbols: Sequence[str],
    steps: Sequence[int] = (1, 2, 4),
    *,
    max_points: int = 2000,
) -> FrequencyAnalysis:
    recent = list(points[-max_points:])
    base = typical_spacing_minutes(recent)
    analyst = RulesAnalyst()
    per_session = cycles_per_session(recent)
    result = FrequencyAnalysis(base_minutes=base)
    result.replays = [
        replay(recent, symbols, k, analyst=analyst, per_session=per_session) for k in steps
    ]
    result.observed = observed_runs(points)
    usable = [r for r in result.replays if r.decisions >= 10]
    base_run = next((r for r in usable if r.step == 1), None)
    result.caveats = [
        "replay runs the rules analyst's decision function on stored cycle prices only "
        "(no intra-cycle high/low or volume), long-only, equal weight, with no fees, "
        "slippage, risk limits or approval delays",
        "prices are stored only when the bot ran, so only the run's own frequency and "
        "coarser multiples of it can be replayed",
        "the same history is used to compare the frequencies (in-sample): treat "
        "differences within the noise estimate as no difference",
    ]
    if len(points) > max_points:
        result.caveats.append(f"only the last {max_points} stored cycles are replayed")
    if base_run is None:
        result.verdict = (
            f"not enough stored cycles to replay (need more than {WARMUP + 10} per frequency)"
        )
        return result
    noise = base_run.noise_pct
    result.noise_pct = noise
    best = max(usable, key=lambda r: r.total_return_pct)
    result.best_step = best.step
    diff = best.total_return_pct - base_run.total_return_pct
    label = f"{best.frequency_minutes:g} min" if best.frequency_minutes else f"every {best.step}"
    if best.step == 1 or diff <= 0:
        result.verdict = "the current frequency did best in the replay"
    elif noise is not None and diff < noise:
        result.verdict = (
            f"{label} did {diff:+.2f} points better in the replay, within the noise "
            f"(≈ ±{noise:.2f} points): no clear case for changing the frequency"
        )
    else:
        result.verdict = (
            f"{label} did {diff:+.2f} points better than the current frequency in the "
            f"replay (noise ≈ ±{noise or 0:.2f} points)"
        )
    return result
