"""Performance screen (key ``o``): metrics, equity vs benchmark, calibration, suggestions.

Proposed file: perun_tui/tui/screens/performance.py. It only renders what
``Optimizer.report()`` returns (the same ``PerformanceReport`` and the same Rich
renderables as ``perun report``) and calls ``Optimizer.apply/dismiss/revert``.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from perun_tui.report_view import (
    changes_table,
    curve_chart,
    frequency_table,
    metrics_table,
    overrides_text,
    scoring_table,
    symbols_table,
)
from perun_tui.services.optimization import Optimizer, PerformanceReport
from perun_tui.services.suggestions import SuggestionError
from perun_tui.tui.screens.confirm import ConfirmModal


class PerformanceScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,o,q", "close", "Close", id="perf-close"),
        Binding("a", "apply", "Apply suggestion", id="perf-apply",
                tooltip="Apply the selected suggestion (asks first; recorded and reversible)"),
        Binding("d", "dismiss_suggestion", "Dismiss", id="perf-dismiss"),
        Binding("u", "undo", "Undo last change", id="perf-undo"),
        Binding("r", "refresh", "Refresh", id="perf-refresh"),
    ]

    def __init__(self, optimizer: Optimizer) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.report: PerformanceReport | None = optimizer.last_report

    def compose(self) -> ComposeResult:
        with Vertical(id="perf-dialog"):
            yield Label("Performance · a apply · d dismiss · u undo · r refresh · esc close",
                        id="perf-title")
            with VerticalScroll(id="perf-body"):
                yield Static(Text("measuring…", style="dim"), id="perf-metrics")
                yield Static(id="perf-curve")
                yield DataTable(id="perf-suggestions", cursor_type="row", zebra_stripes=True)
                yield Static(id="perf-scoring")
                yield Static(id="perf-symbols")
                yield Static(id="perf-frequency")
                yield Static(id="perf-changes")

    def on_mount(self) -> None:
        table = self.query_one("#perf-suggestions", DataTable)
        table.add_columns("strength", "change", "evidence")
        if self.report is not None:
            self._show_report()
        self.action_refresh()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("apply", "dismiss_suggestion"):
            return self._selected() is not None or None  # greyed out without a selection
        if action == "undo":
            return self._last_change_id() is not None or None
        return True

    # ------------------------------------------------------------------ data

    @work(exclusive=True, group="performance", exit_on_error=False)
    async def action_refresh(self) -> None:
        self.report = await self.optimizer.report()
        self._show_report()

    def _show_report(self) -> None:
        report = self.report
        if report is None:
            return
        if report.empty:
            self.query_one("#perf-metrics", Static).update(
                "No history yet: let a few cycles run."
            )
            return
        width = max(40, self.size.width - 6)
        self.query_one("#perf-metrics", Static).update(metrics_table(report))
        self.query_one("#perf-curve", Static).update(curve_chart(report, width=width))
        table = self.query_one("#perf-suggestions", DataTable)
        table.clear()
        for s in report.suggestions:
            p = f" p={s.p_value:.2f}" if s.p_value is not None else ""
            change = f"{s.key}: {s.old} → {s.new}" if s.key else "advice"
            table.add_row(s.strength + p, change, s.why, key=s.id)
        self.query_one("#perf-scoring", Static).update(scoring_table(report))
        self.query_one("#perf-symbols", Static).update(symbols_table(report))
        self.query_one("#perf-frequency", Static).update(frequency_table(report))
        changes = changes_table(report)
        self.query_one("#perf-changes", Static).update(
            changes if changes is not None else overrides_text(report)
        )
        self.refresh_bindings()

    def _selected(self) -> str | None:
        table = self.query_one("#perf-suggestions", DataTable)
        if self.report is None or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return key if isinstance(key, str) else None

    def _last_change_id(self) -> str | None:
        if self.report is None:
            return None
        live = [c for c in self.report.changes if c.in_force]
        return live[-1].id if live else None

    # ------------------------------------------------------------------ actions

    def action_apply(self) -> None:
        sid = self._selected()
        found = next((s for s in (self.report.suggestions if self.report else [])
                      if s.id == sid), None)
        if found is None or found.key is None:
            self.app.notify("That suggestion is advice: nothing to apply.", severity="warning")
            return
        body = f"{found.key}: {found.old} → {found.new}\n\n{found.why}"
        if found.restart:
            body += "\n\nTakes effect after a restart."

        async def confirmed(ok: bool | None) -> None:
            if not ok:
                return
            try:
                change = await self.optimizer.apply(found.id)
            except SuggestionError as exc:
                self.app.notify(str(exc), title="Not applied", severity="error", markup=False)
                return
            self.app.notify(f"{change.key} = {change.new} (undo with u)", title="Applied")
            self.report = self.optimizer.last_report
            self._show_report()

        self.app.push_screen(ConfirmModal("Apply this change?", body, "Apply", danger=False),
                             confirmed)

    async def action_dismiss_suggestion(self) -> None:
        sid = self._selected()
        if sid is None:
            return
        await self.optimizer.dismiss(sid)
        self.report = self.optimizer.last_report
        self._show_report()

    async def action_undo(self) -> None:
        cid = self._last_change_id()
        if cid is None:
            return
        try:
            change = await self.optimizer.revert(cid)
        except SuggestionError as exc:
            self.app.notify(str(exc), title="Not undone", severity="error", markup=False)
            return
        self.app.notify(f"{change.key} is {change.old} again", title="Undone")
        self.report = self.optimizer.last_report
        self._show_report()

    def action_close(self) -> None:
        self.dismiss(None)
