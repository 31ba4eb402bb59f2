"""Optimization: Perun measures itself, scores its signals and suggests changes (step 10).

The pieces live in their own modules — ``history`` (reading), ``performance`` (equity and
fill metrics), ``scoring`` (signals vs outcomes), ``frequency`` (replay at other
frequencies) and ``suggestions`` (changes with evidence, applied and reverted). This
module puts them together:

* ``compute_metrics(...)`` — the quick since-inception numbers the daemon publishes every
  N cycles, made with the same functions as the report (trades, drawdown);
* ``performance_report(memory, settings)`` — the full ``PerformanceReport`` that both
  ``perun report`` and the TUI's performance screen render;
* ``Optimizer`` — the daemon's periodic run: the report in a worker thread, then (with
  ``optimization.auto_apply``) the changes that stay within the configured bounds;
* ``DailySummary`` — a summary of each session to the notifiers once it is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pydantic import Field

from perun_tui.bus import EventBus
from perun_tui.config import Settings
from perun_tui.events import Event, Level, ScheduleUpdated
from perun_tui.models import Fill, PerformanceMetrics, Position
from perun_tui.services.frequency import FrequencyAnalysis, analyze_frequency
from perun_tui.services.history import (
    History,
    load_history,
    read_history,
    session_bounds,
    snapshot_span,
)
from perun_tui.services.memory import EXCHANGE_TZ, Memory
from perun_tui.services.notification import NotificationService
from perun_tui.services.performance import (
    Activity,
    CurvePoint,
    Drawdown,
    Period,
    Returns,
    RiskAdjusted,
    SymbolPerformance,
    TradeStats,
    analyze_performance,
    closed_trades,
    deepest_fall,
    period_book,
    trade_stats,
    unrealized,
)
from perun_tui.services.report_model import ReportModel
from perun_tui.services.scoring import (
    SignalScoring,
    TrackRecord,
    score_signals,
    summarize_scores,
    track_records,
)
from perun_tui.services.suggestions import (
    ParameterChange,
    Suggestion,
    SuggestionError,
    apply_suggestion,
    dismiss_suggestion,
    load_changes,
    load_dismissed,
    make_suggestions,
    revert_change,
    show_value,
)

log = logging.getLogger(__name__)

SUMMARY_KEY = "notify.last_daily_summary"


# --------------------------------------------------------------------------- quick metrics


def compute_metrics(
    *,
    at: datetime,
    equity: float,
    cash: float,
    positions: Iterable[Position],
    fills: Iterable[Fill],
    equity_curve: Iterable[float],
) -> PerformanceMetrics:
    """Since inception: every fill by average cost, the broker's open positions, and the
    drawdown of the stored equity curve up to ``equity`` now."""
    stats = trade_stats([t.pnl for t in closed_trades(fills)])
    fall = deepest_fall([*equity_curve, equity])
    return PerformanceMetrics(
        at=at,
        equity=equity,
        cash=cash,
        realized_pl=stats.gross_win - stats.gross_loss,
        unrealized_pl=sum(p.unrealized_pl for p in positions),
        trades=stats.trades,
        wins=stats.wins,
        win_rate=stats.win_rate or 0.0,
        max_drawdown_pct=fall[2] if fall else 0.0,
        extra={"profit_factor": stats.profit_factor, "expectancy": stats.expectancy},
    )


# --------------------------------------------------------------------------- the report


class PerformanceReport(ReportModel):
    """Everything ``perun report`` and the performance screen show, as one value."""

    mode: str
    generated_at: datetime
    since: datetime | None = None
    until: datetime | None = None
    period: Period = Field(default_factory=Period)
    returns: Returns = Field(default_factory=Returns)
    risk: RiskAdjusted = Field(default_factory=RiskAdjusted)
    drawdown: Drawdown = Field(default_factory=Drawdown)
    trades: TradeStats = Field(default_factory=TradeStats)
    activity: Activity = Field(default_factory=Activity)
    symbols: list[SymbolPerformance] = Field(default_factory=list)
    curve: list[CurvePoint] = Field(default_factory=list)
    scoring: SignalScoring = Field(default_factory=SignalScoring)
    track_records: dict[str, TrackRecord] = Field(default_factory=dict)
    frequency: FrequencyAnalysis = Field(default_factory=FrequencyAnalysis)
    suggestions: list[Suggestion] = Field(default_factory=list)
    changes: list[ParameterChange] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    # when the range holds no cycle: the span of everything stored, to say so plainly
    stored_from: datetime | None = None
    stored_until: datetime | None = None

    @property
    def empty(self) -> bool:
        return self.period.snapshots == 0


def build_report(
    history: History,
    settings: Settings,
    *,
    changes: Sequence[ParameterChange] = (),
    dismissed: Sequence[str] = (),
    max_curve_points: int = 400,
    now: datetime | None = None,
) -> PerformanceReport:
    """The whole report from loaded history (pure and synchronous: run it in a thread)."""
    opt = settings.optimization
    universe = list(settings.trading.symbols)
    core = analyze_performance(
        history.points,
        history.fills,
        universe=[s for s in universe if history.points and s in history.points[0].prices]
        or None,
        max_curve_points=max_curve_points,
    )
    scores = score_signals(history.signals, history.points, history.transitions, opt.horizons)
    scoring = summarize_scores(scores, opt.horizons, opt.primary_horizon, opt.min_samples)
    by_symbol = {g.group: g for g in scoring.by_symbol}
    for sym in core.symbols:
        group = by_symbol.get(sym.symbol)
        if group is not None:
            st = group.horizons.get(scoring.primary)
            sym.signals = group.signals
            if st is not None:
                sym.hit_rate = st.hit_rate
                sym.mean_return_pct = st.mean_return_pct
    frequency = analyze_frequency(history.points, universe, opt.replay_steps)
    report = PerformanceReport(
        mode=settings.trading.mode,
        generated_at=now or datetime.now(UTC),
        since=history.since,
        until=history.until,
        period=core.period,
        returns=core.returns,
        risk=core.risk,
        drawdown=core.drawdown,
        trades=core.trades,
        activity=core.activity,
        symbols=core.symbols,
        curve=core.curve,
        scoring=scoring,
        track_records=track_records(scores, opt.primary_horizon),
        frequency=frequency,
        changes=list(changes),
    )
    report.suggestions = suggestions(report, settings, dismissed=dismissed)
    report.notes = _notes(report)
    return report


def suggestions(
    report: PerformanceReport, settings: Settings, *, dismissed: Sequence[str] = ()
) -> list[Suggestion]:
    """Suggestions the report's evidence supports under ``settings`` (current values)."""
    return make_suggestions(
        report.scoring,
        settings,
        realized_by_symbol={s.symbol: s.realized_pl for s in report.symbols},
        frequency=report.frequency,
        changes=report.changes,
        dismissed=dismissed,
    )


def _notes(report: PerformanceReport) -> list[str]:
    notes = [
        "P&L by average cost; no fees or slippage are modelled beyond the fill prices",
        f"Sharpe/Sortino: {report.risk.basis}" if report.risk.basis else "",
    ]
    if report.period.sessions and report.period.sessions < 20:
        notes.append(
            f"only {report.period.sessions} session(s) of history: treat every ratio as a "
            "rough indication"
        )
    sc = report.scoring
    if sc.scored:
        notes.append(
            f"signal tests count overlapping outcome windows once: {sc.independent} of "
            f"{sc.scored} scored signals are independent at {sc.primary} cycles"
        )
    if report.suggestions:
        notes.append(
            "each p-value is for one test, and several groups (symbols, actions, thresholds, "
            "calibration) are tested on the same history: treat a moderate one as a lead to "
            "watch, not a finding"
        )
    if report.scoring.signals and report.scoring.scored < report.scoring.signals:
        notes.append(
            f"{report.scoring.signals - report.scoring.scored} signal(s) are too recent to "
            f"score at {report.scoring.primary} cycles"
        )
    return [n for n in notes if n]


async def performance_report(
    memory: Memory,
    settings: Settings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    max_curve_points: int = 400,
) -> PerformanceReport:
    """Load the history of ``memory``'s database and build the report, off the loop."""
    history = await load_history(memory.path, since=since, until=until)
    changes = await load_changes(memory)
    dismissed = await load_dismissed(memory)
    report = await asyncio.to_thread(
        build_report,
        history,
        settings,
        changes=changes,
        dismissed=dismissed,
        max_curve_points=max_curve_points,
    )
    if report.empty:
        report.stored_from, report.stored_until = await asyncio.to_thread(
            snapshot_span, memory.path
        )
    return report


# --------------------------------------------------------------------------- the daemon's step


class Optimizer:
    """Step 10: build the report in the background; auto-apply changes within bounds."""

    def __init__(
        self,
        memory: Memory,
        settings: Settings,
        notifications: NotificationService | None = None,
        *,
        settings_path: Path | str | None = None,
    ) -> None:
        self.memory = memory
        self.settings = settings
        self.notifications = notifications
        self.settings_path = settings_path
        self.last_report: PerformanceReport | None = None
        self.last_error: str | None = None
        self.runs = 0  # started so far (the daemon kicks one at start, then every N cycles)
        self._task: asyncio.Task[PerformanceReport | None] | None = None

    def kick(self) -> asyncio.Task[PerformanceReport | None]:
        """Start a run unless one is still going; returns the running task."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name="perun-optimizer"
            )
        return self._task

    async def aclose(self) -> None:
        """Stop a run in flight (daemon shutdown); a half-built report is simply dropped."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _window(self) -> datetime | None:
        """Where the running report starts: ``optimization.window_days`` before the newest
        snapshot, so a run's cost stays bounded however long Perun has been trading
        (``perun report`` covers everything unless given a range)."""
        days = self.settings.optimization.window_days
        if not days:
            return None
        _, last = await asyncio.to_thread(snapshot_span, self.memory.path)
        return None if last is None else last - timedelta(days=days)

    async def run(self) -> PerformanceReport | None:
        self.runs += 1
        try:
            report = await performance_report(
                self.memory, self.settings, since=await self._window()
            )
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("performance analysis failed: %s", self.last_error)
            if self.notifications is not None:
                await self.notifications.notify(
                    "Performance analysis failed", self.last_error, Level.WARNING, "analysis"
                )
            return None
        self.last_error = None
        if self.settings.optimization.auto_apply and await self._auto_apply(report):
            await self._refresh_suggestions(report)
        self.last_report = report
        return report

    # ------------------------------------------------------------ for the screen and the CLI

    async def report(self) -> PerformanceReport:
        """A fresh report (the performance screen's refresh); kept as ``last_report``."""
        report = await performance_report(self.memory, self.settings, since=await self._window())
        self.last_report = report
        return report

    def _suggestion(self, suggestion_id: str) -> Suggestion:
        report = self.last_report
        found = None if report is None else next(
            (s for s in report.suggestions if s.id == suggestion_id), None
        )
        if found is None:
            raise SuggestionError(f"no current suggestion {suggestion_id}: refresh the report")
        return found

    async def apply(self, suggestion_id: str, *, by: str = "user") -> ParameterChange:
        """Apply a suggestion of the last report (after the person confirmed it)."""
        change = await apply_suggestion(
            self.memory, self.settings, self.settings_path, self._suggestion(suggestion_id),
            by=by,
        )
        note = f" ({change.note})" if change.note else ""
        await self._after_change(
            change,
            f"{change.key}: {show_value(change.old)} → {show_value(change.new)}, written to "
            f"{change.persisted_to}{note}; undo: change {change.id}",
        )
        return change

    async def dismiss(self, suggestion_id: str) -> None:
        """Hide a suggestion from now on (it is not applied)."""
        await dismiss_suggestion(self.memory, suggestion_id)
        if self.last_report is not None:
            self.last_report.suggestions = [
                s for s in self.last_report.suggestions if s.id != suggestion_id
            ]

    async def revert(self, change_id: str, *, by: str = "user") -> ParameterChange:
        change = await revert_change(
            self.memory, self.settings, self.settings_path, change_id, by=by
        )
        await self._after_change(
            change,
            f"{change.key} back to {show_value(change.old)} in {change.persisted_to} "
            f"(undid {change.id})",
        )
        return change

    async def _refresh_suggestions(self, report: PerformanceReport) -> None:
        """After a change: the report's record of changes and its suggestions (under the
        settings as they are now) read again."""
        report.changes = await load_changes(self.memory)
        report.suggestions = suggestions(
            report, self.settings, dismissed=await load_dismissed(self.memory)
        )

    async def _after_change(self, change: ParameterChange, text: str) -> None:
        if self.last_report is not None:
            await self._refresh_suggestions(self.last_report)
        if self.notifications is not None:
            await self.notifications.notify("Parameter changed", text, Level.INFO, "change")

    def track_note(self, symbols: Iterable[str], limit: int = 8) -> str:
        """Per-symbol scored outcomes for the analyst's context (``AnalysisContext.market_note``):
        the numbers behind its past calls, so it can weigh its own track record."""
        report = self.last_report
        if report is None:
            return ""
        parts = []
        for sym in list(symbols)[:limit]:
            rec = report.track_records.get(sym)
            if rec is None or not rec.signals or rec.hit_rate is None:
                continue
            parts.append(
                f"{sym} {rec.hit_rate:.0%} of {rec.signals} right, mean "
                f"{rec.mean_return_pct or 0:+.2f}%"
            )
        if not parts:
            return ""
        horizon = report.scoring.primary
        return f"your past signals scored at {horizon} cycles: " + "; ".join(parts)

    async def _auto_apply(self, report: PerformanceReport) -> list[ParameterChange]:
        """At most one automatic change per run, the strongest allowed one."""
        for s in report.suggestions:
            if not s.auto_ok:
                continue
            try:
                change = await apply_suggestion(
                    self.memory, self.settings, self.settings_path, s, by="auto"
                )
            except ValueError as exc:
                log.warning("auto-apply of %s failed: %s", s.key, exc)
                continue
            if self.notifications is not None:
                await self.notifications.notify(
                    "Parameter changed",
                    f"{change.key}: {show_value(change.old)} → {show_value(change.new)}, "
                    f"written to {change.persisted_to} — {change.why} (undo: change "
                    f"{change.id})",
                    Level.WARNING,
                    "change",
                )
            return [change]
        return []


# --------------------------------------------------------------------------- daily summary


def daily_summary_text(history: History, day: date) -> tuple[str, str] | None:
    """(title, message) summarizing one session, or None when nothing was stored for it.

    The P&L is the session's own, as ``perun report`` over that one day computes it:
    positions held at its first snapshot are marked at that snapshot's prices, so the
    realized and unrealized figures add up to the equity change shown (not to the P&L
    since each position was first bought)."""
    points = [p for p in history.points if p.session == day]
    if not points:
        return None
    start, end = points[0], points[-1]
    lo, hi = session_bounds(day)
    fills = [f for f in history.fills if lo <= f.ts < hi]
    _, trades, book = period_book(points, history.fills)
    signals = [s for s in history.signals if s.created_at.astimezone(EXCHANGE_TZ).date() == day]
    change = end.equity - start.equity
    pct = change / start.equity * 100 if start.equity > 0 else 0.0
    names = [s for s in start.prices if s in end.prices]
    bench = (
        sum(end.prices[s] / start.prices[s] for s in names) / len(names) * 100 - 100
        if names
        else None
    )
    statuses: dict[str, int] = {}
    for s in signals:
        statuses[s.status.value] = statuses.get(s.status.value, 0) + 1
    lines = [
        f"equity {end.equity:,.2f} ({change:+,.2f}, {pct:+.2f}%)"
        + (f" vs universe {bench:+.2f}%" if bench is not None else ""),
        f"{len(points)} cycles · {len(signals)} signal(s)"
        + (
            " (" + ", ".join(f"{n} {k}" for k, n in sorted(statuses.items())) + ")"
            if statuses
            else ""
        )
        + f" · {len(fills)} fill(s) · realized {sum(t.pnl for t in trades):+,.2f}",
    ]
    if end.holdings:
        held = ", ".join(f"{s} {h.qty:g}" for s, h in sorted(end.holdings.items()))
        unreal = sum(unrealized(end, book).values())
        lines.append(f"open: {held} (unrealized {unreal:+,.2f})")
    else:
        lines.append("no open positions")
    return f"Daily summary {day.isoformat()}", "\n".join(lines)


class DailySummary:
    """Sends one summary per session once it is over (the market closed, or a new session
    began — the simulated clock skips closed hours). Persisted, so a restart does not send
    a session twice."""

    def __init__(self, memory: Memory, notifications: NotificationService, *, enabled: bool = True):
        self.memory = memory
        self.notifications = notifications
        self.enabled = enabled
        self._session: date | None = None
        self._first = True
        self._tasks: set[asyncio.Task[bool]] = set()
        self._sent: set[date] = set()

    def attach(self, bus: EventBus) -> None:
        bus.listen(self._on_event, ScheduleUpdated)

    def _on_event(self, event: Event) -> None:
        if not self.enabled or not isinstance(event, ScheduleUpdated) or event.market is None:
            return
        market = event.market
        first, self._first = self._first, False
        if market.is_open:
            day = market.ts.astimezone(EXCHANGE_TZ).date()
            if self._session is not None and day != self._session:
                self._spawn(self._session)
            self._session = day
        elif self._session is not None:
            self._spawn(self._session)
            self._session = None
        elif first:
            self._spawn(None)  # closed at start: the last stored session, if not sent yet

    def _spawn(self, day: date | None) -> None:
        if day is not None and day in self._sent:
            return
        with contextlib.suppress(RuntimeError):
            task = asyncio.get_running_loop().create_task(self.send(day))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def send(self, day: date | None) -> bool:
        """Summarize ``day`` (None: the latest stored session) unless it was sent before."""
        try:
            if day is None:
                snap = await self.memory.last_snapshot()
                if snap is None:
                    return False
                day = snap.at.astimezone(EXCHANGE_TZ).date()
            if day in self._sent:
                return False
            self._sent.add(day)
            last = await self.memory.get_state(SUMMARY_KEY)
            if last is not None and last >= day.isoformat():
                return False
            lo, hi = session_bounds(day)
            history = await asyncio.to_thread(read_history, self.memory.path, since=lo, until=hi)
            text = daily_summary_text(history, day)
            if text is None:
                return False
            await self.memory.set_state(SUMMARY_KEY, day.isoformat())
            await self.notifications.notify(text[0], text[1], Level.INFO, "summary")
            return True
        except Exception as exc:  # a summary must never break anything
            log.warning("daily summary for %s failed: %s", day, exc)
            return False

    async def wait(self) -> None:
        """Wait for summaries in flight (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
