"""The performance report as Rich renderables: ``perun report`` prints them, and the TUI's
performance screen can show the same objects in ``Static`` widgets.

Also a small braille line chart (no plotting dependency): the equity curve against the
benchmark in any terminal that shows Unicode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from perun_tui.services.memory import EXCHANGE_TZ
from perun_tui.services.optimization import PerformanceReport
from perun_tui.services.scoring import GroupScore, HorizonStats
from perun_tui.services.suggestions import Suggestion
from perun_tui.services.suggestions import show_value as _show

# --------------------------------------------------------------------------- formatting


def money(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+,.2f}" if signed else f"{x:,.2f}"


def pct(x: float | None, signed: bool = True, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.{digits}f}%" if signed else f"{x:.{digits}f}%"


def ratio(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def share(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def when(at: datetime | None) -> str:
    if at is None:
        return "—"
    return at.astimezone(EXCHANGE_TZ).strftime("%Y-%m-%d %H:%M ET")


def span(d: timedelta | None) -> str:
    if d is None:
        return "—"
    hours = d.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


def _tone(x: float | None) -> str:
    if x is None or x == 0:
        return ""
    return "green" if x > 0 else "red"


# --------------------------------------------------------------------------- the chart


_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # [row][col]


def _resample(values: Sequence[float], n: int) -> list[float]:
    if not values:
        return []
    if len(values) == 1:
        return [values[0]] * n
    return [values[round(i * (len(values) - 1) / max(1, n - 1))] for i in range(n)]


def line_chart(
    series: Sequence[tuple[str, Sequence[float], str]],
    *,
    width: int = 72,
    height: int = 12,
) -> Text:
    """Braille line chart of ``(label, values, style)`` series sharing one y axis.

    Each character cell holds 2×4 dots; where two series share a cell the first listed
    one's colour wins. The y axis shows the top, middle and bottom values.
    """
    usable = [(lab, list(v), st) for lab, v, st in series if v]
    if not usable:
        return Text("(no data to plot)", style="dim")
    lo = min(min(v) for _, v, _ in usable)
    hi = max(max(v) for _, v, _ in usable)
    if hi - lo < 1e-12:
        hi, lo = hi + 1, lo - 1
    label_w = max(len(f"{hi:,.0f}"), len(f"{lo:,.0f}"))
    plot_w = max(8, width - label_w - 2)
    xs = plot_w * 2
    ys = height * 4
    cells: list[list[int]] = [[0] * plot_w for _ in range(height)]
    owner: list[list[int]] = [[-1] * plot_w for _ in range(height)]

    def y_of(v: float) -> int:
        return min(ys - 1, max(0, round((hi - v) / (hi - lo) * (ys - 1))))

    for index, (_, values, _) in enumerate(usable):
        pts = [y_of(v) for v in _resample(values, xs)]
        for x, y in enumerate(pts):
            prev = pts[x - 1] if x else y
            for yy in range(min(prev, y), max(prev, y) + 1):
                row, col = yy // 4, x // 2
                cells[row][col] |= _DOTS[yy % 4][x % 2]
                if owner[row][col] == -1:
                    owner[row][col] = index
    text = Text()
    mid = (hi + lo) / 2
    for r in range(height):
        label = ""
        if r == 0:
            label = f"{hi:,.0f}"
        elif r == height - 1:
            label = f"{lo:,.0f}"
        elif r == height // 2:
            label = f"{mid:,.0f}"
        text.append(label.rjust(label_w) + " ┤", style="dim")
        for c in range(plot_w):
            mask = cells[r][c]
            if mask:
                text.append(chr(0x2800 + mask), style=usable[owner[r][c]][2])
            else:
                text.append(" ")
        text.append("\n")
    legend = Text(" " * (label_w + 2))
    for lab, _, st in usable:
        legend.append("⣿ ", style=st)
        legend.append(f"{lab}   ")
    text.append_text(legend)
    return text


# --------------------------------------------------------------------------- tables


def metrics_table(report: PerformanceReport) -> Table:
    r, k, d, t, a = report.returns, report.risk, report.drawdown, report.trades, report.activity
    p = report.period
    title = (
        f"Performance ({report.mode}) · {when(p.start)} → {when(p.end)} · "
        f"{p.sessions} session(s), {p.snapshots} cycle(s)"
    )
    table = _table(title)
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("note", overflow="fold", style="dim")

    def row(name: str, value: str, note: str = "", tone: float | None = None) -> None:
        table.add_row(name, Text(value, style=_tone(tone)), note)

    row("equity", f"{money(r.start_equity)} → {money(r.end_equity)}")
    row("total P&L", money(r.total_pl, True), "end − start equity", r.total_pl)
    row("realized P&L", money(r.realized_pl, True),
        "closed trades by average cost; what was held at the start counts at its prices",
        r.realized_pl)
    row("unrealized P&L", money(r.unrealized_pl, True), "open positions at the end, same cost",
        r.unrealized_pl)
    row("return", pct(r.total_return_pct), "", r.total_return_pct)
    row("benchmark return", pct(r.benchmark_return_pct), r.benchmark, r.benchmark_return_pct)
    row("vs benchmark", pct(r.excess_return_pct).replace("%", " pts"), "strategy − benchmark",
        r.excess_return_pct)
    every = f"{p.frequency_minutes:g}-min " if p.frequency_minutes else ""
    basis = (
        f"{k.periods} daily returns, ×√252, rf 0"
        if k.period == "daily"
        else f"{k.periods} {every}cycle returns of one session, ×√(252×"
        f"{p.cycles_per_session:g}), rf 0"
    )
    row("Sharpe", ratio(k.sharpe), basis)
    row("Sortino", ratio(k.sortino), "same returns, downside deviation")
    row("benchmark Sharpe", ratio(k.benchmark_sharpe), "same basis")
    row("volatility", pct(k.volatility_pct, signed=False), "annualized")
    row(
        "max drawdown",
        f"{pct(d.max_drawdown_pct, signed=False)} ({money(d.max_drawdown_abs)})",
        f"peak {when(d.peak_at)} → trough {when(d.trough_at)}; "
        + (f"recovered {when(d.recovered_at)}" if d.recovered_at else "not recovered")
        + f"; {span(d.duration)}",
    )
    row("closed trades", str(t.trades), f"{t.wins} won, {t.losses} lost")
    row("win rate", share(t.win_rate))
    row("profit factor", ratio(t.profit_factor), "gross wins / gross losses")
    row("average win", money(t.avg_win, True), "", t.avg_win)
    row("average loss", money(t.avg_loss, True), "", t.avg_loss)
    row("expectancy", money(t.expectancy, True), "mean P&L per closed trade", t.expectancy)
    row("largest win / loss", f"{money(t.largest_win, True)} / {money(t.largest_loss, True)}")
    row("fills", str(a.fills), f"{a.buys} buys, {a.sells} sells")
    row("traded notional", money(a.traded_notional))
    row("turnover", f"{a.turnover:.2f}×", f"traded / average equity; "
        f"{a.turnover_per_session:.2f}× per session")
    row("exposure", f"{a.avg_exposure_pct:.1f}% avg", f"gross / equity; max "
        f"{a.max_exposure_pct:.1f}%; invested in {a.time_in_market_pct:.0f}% of cycles")
    return table


def curve_chart(report: PerformanceReport, width: int = 78, height: int = 12) -> Text:
    equity = [c.equity for c in report.curve]
    bench = [c.benchmark for c in report.curve if c.benchmark is not None]
    series: list[tuple[str, Sequence[float], str]] = [("equity", equity, "bold cyan")]
    if bench and len(bench) == len(equity):
        series.append(("benchmark (equal-weight buy & hold)", bench, "yellow"))
    return line_chart(series, width=width, height=height)


def symbols_table(report: PerformanceReport) -> Table:
    table = _table("Per symbol")
    for col in ("symbol", "fills", "traded", "real.", "unreal.", "pos", "trades", "won",
                "B&H", "sig", f"hit{report.scoring.primary}"):
        table.add_column(col, justify="left" if col == "symbol" else "right", no_wrap=True)
    for s in report.symbols:
        table.add_row(
            s.symbol, str(s.fills), f"{s.traded_notional:,.0f}",
            Text(f"{s.realized_pl:+,.0f}", style=_tone(s.realized_pl)),
            Text(f"{s.unrealized_pl:+,.0f}", style=_tone(s.unrealized_pl)),
            f"{s.position_qty:g}", str(s.trades), share(s.win_rate),
            pct(s.buy_hold_return_pct, digits=1), str(s.signals), share(s.hit_rate),
        )
    return table


def _table(title: str) -> Table:
    return Table(
        title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
        pad_edge=False, collapse_padding=True,
    )


def _cell(st: HorizonStats | None) -> Text:
    if st is None or st.n == 0:
        return Text("—", style="dim")
    rate = st.hit_rate or 0.0
    style = "green" if rate > 0.55 else "red" if rate < 0.45 else ""
    return Text(f"{rate:.0%} {pct(st.mean_return_pct)}", style=style)


def scoring_table(report: PerformanceReport) -> Table:
    sc = report.scoring
    table = _table(
        f"Signal scoring · {sc.signals} signal(s), {sc.scored} scored at {sc.primary} cycles"
        " · hit rate and mean signed return"
    )
    table.add_column("group", overflow="fold")  # the one column that may wrap when narrow
    table.add_column("n", justify="right", no_wrap=True)
    for h in sc.horizons:
        table.add_column(h if h == "close" else f"{h} cyc", justify="right", no_wrap=True)

    def section(name: str, groups: Sequence[GroupScore]) -> None:
        if not groups:
            return
        table.add_row(Text(name, style="bold"), *["" for _ in range(len(sc.horizons) + 1)])
        for i, g in enumerate(groups):
            table.add_row(
                f"  {g.group}",
                str(g.signals),
                *[_cell(g.horizons.get(h)) for h in sc.horizons],
                end_section=i == len(groups) - 1,
            )

    section("all signals", [sc.overall])
    section("confidence", sc.by_confidence)
    section("action", sc.by_action)
    section("symbol", sc.by_symbol)
    section("what happened", sc.by_disposition)
    return table


def overrides_text(report: PerformanceReport) -> Text:
    o = report.scoring.overrides
    text = Text("Human overrides: ", style="bold")
    if not o.rejected and not o.approved_by_person and not o.expired:
        text.append("none in this period (every decision was the model's or the policy's)")
        return text
    parts = []
    if o.rejected:
        parts.append(
            f"{o.rejected} rejected by hand — {o.rejected_scored} scored: person right "
            f"{o.person_right} (would have lost), model right {o.model_right}"
        )
    if o.approved_by_person:
        parts.append(
            f"{o.approved_by_person} approved by hand — {o.approved_won} of "
            f"{o.approved_scored} scored won"
        )
    if o.expired:
        parts.append(
            f"{o.expired} expired unanswered — {o.expired_would_have_won} would have won"
        )
    text.append("; ".join(parts) + f" (at {o.horizon} cycles)")
    return text


def frequency_table(report: PerformanceReport) -> Group:
    f = report.frequency
    table = _table("Frequency analysis · stored prices replayed with the rules analyst")
    for col in ("frequency", "asked", "trades", "hit rate", "return", "Sharpe", "invested",
                "±noise"):
        table.add_column(col, justify="right" if col != "frequency" else "left", no_wrap=True)
    for r in f.replays:
        label = f"{r.frequency_minutes:g} min" if r.frequency_minutes else f"every {r.step}"
        if r.step == 1:
            label += " (now)"
        table.add_row(
            label, str(r.decisions), str(r.trades), share(r.hit_rate),
            Text(pct(r.total_return_pct), style=_tone(r.total_return_pct)),
            ratio(r.sharpe), f"{r.exposure_pct:.0f}%", pct(r.noise_pct, signed=False),
        )
    parts: list[RenderableType] = [table]
    if f.observed:
        obs = _table("Observed, per cycle, at the frequencies actually run")
        for col in ("frequency", "cycles", "mean / cycle", "per session", "Sharpe"):
            obs.add_column(col, justify="right" if col != "frequency" else "left")
        for o in f.observed:
            obs.add_row(
                f"{o.frequency_minutes:g} min", str(o.cycles), pct(o.mean_return_pct, digits=4),
                pct(o.return_per_session_pct, digits=3), ratio(o.sharpe),
            )
        parts.append(obs)
    parts.append(Text(f"Verdict: {f.verdict}", style="bold"))
    for c in f.caveats:
        parts.append(Text(f"  caveat: {c}", style="dim"))
    return Group(*parts)


def suggestion_change(s: Suggestion) -> Text:
    """The setting a suggestion changes, or "advice" when there is none."""
    if s.key is None:
        return Text("advice", style="dim")
    return Text(f"{s.key}: {_show(s.old)} → {_show(s.new)}")


def suggestion_strength(s: Suggestion, sep: str = " ") -> Text:
    style = {"strong": "green", "moderate": "yellow", "weak": "dim"}[s.strength]
    p = f"{sep}p={s.p_value:.3f}" if s.p_value is not None else ""
    return Text(s.strength + p, style=style)


def suggestion_evidence(s: Suggestion) -> Text:
    """The evidence sentence, then whether it may be applied automatically and why not."""
    text = Text(s.why)
    auto = "auto-apply: yes" if s.auto_ok else f"auto-apply: no, {s.auto_note}"
    if s.restart:
        auto += "; needs a restart"
    text.append(f"\n{auto}", style="dim")
    return text


def suggestions_table(report: PerformanceReport) -> Table:
    table = _table("Suggestions")
    table.add_column("id", no_wrap=True)
    table.add_column("change", overflow="fold")
    table.add_column("evidence", overflow="fold", ratio=1)
    table.add_column("strength", no_wrap=True)
    if not report.suggestions:
        table.add_row("—", "none", "the evidence does not support a change yet", "")
    for s in report.suggestions:
        table.add_row(s.id, suggestion_change(s), suggestion_evidence(s),
                      suggestion_strength(s, "\n"), end_section=True)
    return table


def changes_table(report: PerformanceReport) -> Table | None:
    if not report.changes:
        return None
    table = _table("Parameter changes (newest last)")
    for col in ("id", "when", "by", "change", "why", "state"):
        table.add_column(col, overflow="fold")
    for c in report.changes:
        state = f"reverted {when(c.reverted_at)}" if c.reverted_at else c.state
        if c.note:
            state += f" · {c.note}"
        table.add_row(
            c.id, when(c.at), c.by, f"{c.key}: {_show(c.old)} → {_show(c.new)}", c.why, state
        )
    return table


def empty_text(report: PerformanceReport) -> Text:
    """Why there is nothing to report: no history at all, or none in the asked range."""
    if (report.since is None and report.until is None) or report.stored_from is None:
        return Text("No history yet: run some cycles first (`perun run --headless --cycles 5`).")
    first = report.since.astimezone(EXCHANGE_TZ).date().isoformat() if report.since else "…"
    # ``until`` is the exclusive end: midnight after the last day asked for
    last = (
        (report.until - timedelta(microseconds=1)).astimezone(EXCHANGE_TZ).date().isoformat()
        if report.until
        else "…"
    )
    asked = f"{first} to {last}, New York days"
    return Text(
        f"No cycles ran in the range asked ({asked}). The stored {report.mode} history runs "
        f"from {when(report.stored_from)} to {when(report.stored_until)}."
    )


def report_parts(
    report: PerformanceReport, *, width: int = 100
) -> list[tuple[str, RenderableType]]:
    """The report in reading order as (part, renderable). ``perun report`` prints them
    all; the performance screen shows the same parts, drawing "curve" to its own width
    and "suggestions" as a table to pick from."""
    if report.empty:
        return [("empty", empty_text(report))]
    parts: list[tuple[str, RenderableType]] = [
        ("metrics", metrics_table(report)),
        ("curve", Group(Text("Equity vs benchmark", style="bold"),
                        curve_chart(report, width=min(width, 100)))),
        ("symbols", symbols_table(report)),
        ("scoring", scoring_table(report)),
        ("calibration", Text(f"Calibration: {report.scoring.calibration}")),
        ("overrides", overrides_text(report)),
        ("frequency", frequency_table(report)),
        ("suggestions", suggestions_table(report)),
    ]
    changes = changes_table(report)
    if changes is not None:
        parts.append(("changes", changes))
    parts.append(("notes", notes_text(report)))
    return parts


def notes_text(report: PerformanceReport) -> Text:
    """The period and the caveats that go with every number."""
    return Text("\n".join(f"note: {n}" for n in report.notes), style="dim")


GAP_AFTER = frozenset({"curve", "overrides", "frequency", "suggestions", "changes"})


def render_report(report: PerformanceReport, *, width: int = 100) -> Group:
    """Every part of the report, in reading order."""
    out: list[RenderableType] = []
    for name, part in report_parts(report, width=width):
        out.append(part)
        if name in GAP_AFTER:
            out.append(Text(""))
    return Group(*out)
