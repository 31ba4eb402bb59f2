"""Performance screen (key ``o``): the report of ``perun report``, with the suggestions to
apply, dismiss and undo.

It shows the parts ``report_view.report_parts`` gives ``perun report`` — the same
renderables, so the screen and the command cannot drift apart — except two it draws
itself: the equity curve, sized to its own widget (not the screen), and the suggestions,
as a table to pick from with the highlighted one's whole evidence beneath it. Applying a
suggestion writes the config file; ``Optimizer.apply`` does that in a worker thread.

A full screen, not a modal: its own footer shows its own keys (``a`` applies here).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from rich.console import RenderableType
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Label, Static

from perun_tui.report_view import (
    curve_chart,
    report_parts,
    suggestion_change,
    suggestion_evidence,
    suggestion_strength,
    when,
)
from perun_tui.services.optimization import Optimizer, PerformanceReport
from perun_tui.services.suggestions import Suggestion, SuggestionError, show_value
from perun_tui.tui.screens.confirm import ConfirmModal

# the parts of the report shown as they are, in the order report_parts gives them
PLAIN_PARTS = ("metrics", "symbols", "scoring", "calibration", "overrides", "frequency",
               "changes", "notes")
CHART_ROWS = 12


class CurveView(Widget):
    """The equity curve against the benchmark, drawn to this widget's own width."""

    DEFAULT_CSS = f"CurveView {{ height: {CHART_ROWS + 1}; }}"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.report: PerformanceReport | None = None

    def show(self, report: PerformanceReport) -> None:
        self.report = report
        self.refresh()

    def render(self) -> RenderableType:
        if self.report is None:
            return Text("")
        chart = curve_chart(self.report, width=max(24, self.content_size.width),
                            height=CHART_ROWS)
        chart.no_wrap = True
        chart.overflow = "crop"
        return chart


class PerformanceScreen(Screen[None]):
    DEFAULT_CSS = """
    PerformanceScreen { background: $surface; }
    #perf-header { width: 100%; height: 1; padding: 0 1; background: $panel; text-style: bold; }
    #perf-body { padding: 0 1; }
    #perf-body > Static { margin-bottom: 1; }
    #perf-body > .perf-heading { text-style: bold; margin: 0; }
    #perf-suggestions { height: auto; max-height: 12; }
    #perf-suggestion-detail { padding: 0 1; border-left: thick $accent; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,o", "close", "Close", id="perf-close", tooltip="Back to the main screen"),
        Binding("q", "close", "Close", show=False, id="perf-close-q"),
        Binding("a", "apply", "Apply", id="perf-apply",
                tooltip="Apply the highlighted suggestion (asks first; written to the config "
                "file, recorded and reversible)"),
        Binding("d", "dismiss_suggestion", "Dismiss", id="perf-dismiss",
                tooltip="Hide the highlighted suggestion from now on"),
        Binding("u", "undo", "Undo change", id="perf-undo",
                tooltip="Put the last change that is in force back to its old value"),
        Binding("r", "refresh", "Refresh", id="perf-refresh",
                tooltip="Measure again from the stored history"),
        # the page scrolls with these while up/down pick a suggestion in the table
        Binding("pageup", "page(-1)", "Page up", show=False, priority=True),
        Binding("pagedown,space", "page(1)", "Page down", show=False, priority=True),
        Binding("home", "page_end(0)", "Top", show=False, priority=True),
        Binding("end", "page_end(1)", "Bottom", show=False, priority=True),
    ]

    def __init__(self, optimizer: Optimizer) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.report: PerformanceReport | None = optimizer.last_report
        self.refreshed_at: datetime | None = None

    def compose(self) -> ComposeResult:
        yield Label("Performance · measuring…", id="perf-header")
        with VerticalScroll(id="perf-body"):
            yield Static(id="perf-empty")
            yield Static(id="perf-metrics")
            yield Label("Equity vs benchmark", classes="perf-heading", id="perf-curve-title")
            yield CurveView(id="perf-curve")
            yield Label("Suggestions", classes="perf-heading", id="perf-suggestions-title")
            yield DataTable(id="perf-suggestions", cursor_type="row", zebra_stripes=True)
            yield Static(id="perf-suggestion-detail")
            for name in PLAIN_PARTS:
                if name not in ("metrics",):
                    yield Static(id=f"perf-{name}")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#perf-suggestions", DataTable)
        table.add_columns("strength", "id", "change")
        if self.report is not None:
            self._show_report()
        table.focus(scroll_visible=False)  # the page opens at its top, the metrics
        self.action_refresh()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "apply":
            found = self._selected()
            return True if found is not None and found.key is not None else None
        if action == "dismiss_suggestion":
            return True if self._selected() is not None else None
        if action == "undo":
            return True if self._last_change_id() is not None else None
        return True

    # ------------------------------------------------------------------ data

    @work(exclusive=True, group="performance", exit_on_error=False)
    async def action_refresh(self) -> None:
        self.query_one("#perf-header", Label).update(self._header("measuring…"))
        self.report = await self.optimizer.report()
        self.refreshed_at = datetime.now(UTC)
        self._show_report()

    def _header(self, state: str = "") -> str:
        report = self.report
        if report is None or report.empty:
            return f"Performance · {state or 'no history yet'}"
        text = f"Performance · {report.mode} · {report.period.snapshots} cycles"
        if state:
            return f"{text} · {state}"
        if self.refreshed_at is not None:
            text += f" · measured {when(self.refreshed_at)[11:]}"
        return text

    def _show_report(self) -> None:
        report = self.report
        if report is None:
            return
        self.query_one("#perf-header", Label).update(self._header())
        parts = dict(report_parts(report))
        empty = self.query_one("#perf-empty", Static)
        empty.display = "empty" in parts
        empty.update(parts.get("empty", ""))
        for name in PLAIN_PARTS:
            widget = self.query_one(f"#perf-{name}", Static)
            widget.display = name in parts
            widget.update(parts.get(name, ""))
        for part in ("#perf-curve-title", "#perf-curve", "#perf-suggestions-title",
                     "#perf-suggestions", "#perf-suggestion-detail"):
            self.query_one(part).display = not report.empty
        self.query_one(CurveView).show(report)
        self._fill_suggestions(report)
        self.refresh_bindings()

    def _fill_suggestions(self, report: PerformanceReport) -> None:
        table = self.query_one("#perf-suggestions", DataTable)
        keep = self._selected_id()
        table.clear()
        for s in report.suggestions:
            table.add_row(suggestion_strength(s), s.id, suggestion_change(s), key=s.id)
        if keep is not None and keep in {s.id for s in report.suggestions}:
            table.move_cursor(row=table.get_row_index(keep))
        self._show_detail()

    @on(DataTable.RowHighlighted, "#perf-suggestions")
    def _highlighted(self) -> None:
        self._show_detail()
        self.refresh_bindings()

    def _show_detail(self) -> None:
        detail = self.query_one("#perf-suggestion-detail", Static)
        found = self._selected()
        if found is None:
            detail.update(Text("No suggestion: the evidence does not support a change yet.",
                               style="dim"))
            return
        text = Text(f"{found.id} · ", style="bold")
        text.append_text(suggestion_change(found))
        text.append("\n")
        text.append_text(suggestion_evidence(found))
        keys = ("a apply · d dismiss" if found.key is not None
                else "advice: nothing to apply · d dismiss")
        text.append(f"\n{keys}", style="dim")
        detail.update(text)

    def _selected_id(self) -> str | None:
        table = self.query_one("#perf-suggestions", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return key if isinstance(key, str) else None

    def _selected(self) -> Suggestion | None:
        sid = self._selected_id()
        if self.report is None or sid is None:
            return None
        return next((s for s in self.report.suggestions if s.id == sid), None)

    def _last_change_id(self) -> str | None:
        if self.report is None:
            return None
        live = [c for c in self.report.changes if c.in_force]
        return live[-1].id if live else None

    def _after_action(self) -> None:
        self.report = self.optimizer.last_report
        self._show_report()

    # ------------------------------------------------------------------ actions

    def action_apply(self) -> None:
        found = self._selected()
        if found is None or found.key is None:
            self.app.notify("That suggestion is advice: nothing to apply.", severity="warning")
            return
        body = f"{found.key}: {show_value(found.old)} → {show_value(found.new)}\n\n{found.why}"
        if found.restart:
            body += "\n\nTakes effect after a restart."

        async def confirmed(ok: bool | None) -> None:
            if not ok:
                return
            try:
                await self.optimizer.apply(found.id)  # says so itself: "Parameter changed"
            except SuggestionError as exc:
                self.app.notify(str(exc), title="Not applied", severity="error", markup=False)
                return
            self._after_action()

        self.app.push_screen(
            ConfirmModal("Apply this change?", body, "Apply", danger=False), confirmed
        )

    async def action_dismiss_suggestion(self) -> None:
        found = self._selected()
        if found is None:
            return
        await self.optimizer.dismiss(found.id)
        self.app.notify(f"{found.id} dismissed: it is not suggested again.", title="Dismissed")
        self._after_action()

    async def action_undo(self) -> None:
        cid = self._last_change_id()
        if cid is None:
            return
        try:
            await self.optimizer.revert(cid)  # says so itself: "Parameter changed"
        except SuggestionError as exc:
            self.app.notify(str(exc), title="Not undone", severity="error", markup=False)
            return
        self._after_action()

    def action_page(self, direction: int) -> None:
        body = self.query_one("#perf-body", VerticalScroll)
        if direction < 0:
            body.scroll_page_up()
        else:
            body.scroll_page_down()

    def action_page_end(self, bottom: int) -> None:
        body = self.query_one("#perf-body", VerticalScroll)
        if bottom:
            body.scroll_end()
        else:
            body.scroll_home()

    def action_close(self) -> None:
        self.dismiss(None)
