"""The main screen: every panel, the keys, and the commands they send to the daemon.

Bus events arrive as one :class:`BusBatch` per frame from the bridge and are applied
inside ``batch_update()``. Commands are plain async calls on the daemon, run in workers
so the screen never waits on them; their outcome comes back as a toast, and the signal's
new status comes back through the bus like everything else.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import DataTable, Footer

from perun_tui.config import Settings
from perun_tui.events import (
    AnalysisFinished,
    AnalysisStarted,
    AnalystStatus,
    CycleFinished,
    DaemonState,
    DaemonStateChanged,
    ErrorRaised,
    Event,
    Level,
    Notification,
    PerformanceUpdated,
    PortfolioUpdated,
    QuotesUpdated,
    ReasoningDelta,
    ScheduleUpdated,
    SignalChanged,
)
from perun_tui.models import Signal, SignalStatus
from perun_tui.redact import redact
from perun_tui.services.notification import ScreenAlerts
from perun_tui.tui.bridge import Bridge
from perun_tui.tui.clock import ScreenClock
from perun_tui.tui.format import money
from perun_tui.tui.messages import BusBatch, ErrorRecord
from perun_tui.tui.protocol import DaemonAPI
from perun_tui.tui.screens.confirm import ConfirmModal
from perun_tui.tui.screens.details import DetailsChoice, DetailsView, SignalDetailsModal
from perun_tui.tui.screens.errors import ErrorsModal
from perun_tui.tui.screens.help import HelpScreen, KeyRow
from perun_tui.tui.widgets.log_panel import LogPanel
from perun_tui.tui.widgets.market import MarketPanel
from perun_tui.tui.widgets.portfolio import PortfolioPanel
from perun_tui.tui.widgets.reasoning import ReasoningPanel, stored_doc
from perun_tui.tui.widgets.signals import SignalsPanel
from perun_tui.tui.widgets.status_bar import StatusBar

COMPACT_WIDTH = 100
HEADER_COMPACT_WIDTH = 112  # the full header (times in ET, the market line) needs ~111
MAX_ERRORS = 50
DETAILS_TIMEOUT_S = 10.0
ERROR_DEDUP_S = 2.0
_BAD_OUTCOME = ("expired", "refused", "failed", "rejected", "error", "not ", "unknown", "halted")
_RUNNING = frozenset({DaemonState.WAITING, DaemonState.CYCLING})
_STARTING = frozenset({DaemonState.STARTING, DaemonState.RECONCILING})
_DECIDED = (
    SignalStatus.APPROVED, SignalStatus.REJECTED, SignalStatus.EXPIRED, SignalStatus.REFUSED,
    SignalStatus.SUBMITTED, SignalStatus.FILLED, SignalStatus.PARTIALLY_FILLED,
    SignalStatus.CANCELED, SignalStatus.FAILED,
)
HISTORY_LOOKBACK = 500
"""How many stored analyses ``[`` searches for an older cycle than those in memory."""


@dataclass(frozen=True, slots=True)
class Command:
    """One thing the user can ask for: a key, a footer label, and a line of help.

    The same list feeds the bindings, the help screen and the command palette, so the
    three never disagree.
    """

    key: str
    action: str
    label: str
    help: str
    when: str = ""
    show: bool = True
    key_display: str | None = None


COMMANDS: tuple[Command, ...] = (
    Command("a", "approve", "Approve", "Approve the highlighted pending signal",
            "a pending signal is highlighted"),
    Command("r", "reject", "Reject", "Reject the highlighted pending signal",
            "a pending signal is highlighted"),
    Command("A", "approve_all", "Approve all", "Approve every pending signal (asks first)",
            "signals are pending", show=False, key_display="A"),
    Command("c", "cycle_now", "Cycle", "Run a trading cycle now", "the daemon is waiting"),
    Command("p", "pause", "Pause", "Pause the trading cycles (approvals still work)",
            "the daemon is running"),
    Command("p", "resume", "Resume", "Resume the trading cycles", "paused"),
    Command("k", "halt", "Halt", "Kill switch: halt all trading until cleared (asks first)",
            "not halted"),
    Command("k", "clear_halt", "Clear halt", "Clear the halt and resume trading (asks first)",
            "halted"),
    Command("l", "log_level", "Log", "Cycle the log filter: debug, info, warning, error"),
    Command("e", "errors", "Errors", "Show the recent errors in full", show=False),
    Command("o", "performance", "Perf",
            "Performance: metrics, equity vs benchmark, calibration, suggestions to apply"),
    Command("m", "pull_model", "Pull model",
            "Download the configured Ollama model when the server does not have it",
            "the Ollama server lacks the model", show=False),
    Command("left_square_bracket", "prev_cycle", "Prev cycle",
            "Reasoning: show the previous cycle", show=False, key_display="["),
    Command("right_square_bracket", "next_cycle", "Next cycle",
            "Reasoning: show the next cycle (back to live)", show=False, key_display="]"),
    Command("question_mark", "help", "Help", "Show this list of keys", key_display="?"),
)

EXTRA_KEYS: tuple[KeyRow, ...] = (
    ("enter", "Open the highlighted signal's details (approve/reject from there)",
     "a pending signal is highlighted"),
    ("↑ ↓", "Move between pending signals (the oldest is highlighted by default)", ""),
    ("tab", "Move focus between panels", ""),
    ("q / ctrl+c", "Quit: stop the daemon gracefully, then exit", ""),
    ("ctrl+p", "Command palette: every action here, by name", ""),
)


class CommandFinished(Message):
    def __init__(self, signal_ids: tuple[str, ...]) -> None:
        super().__init__()
        self.signal_ids = signal_ids


class MainScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            c.key, c.action, c.label, show=c.show, key_display=c.key_display,
            tooltip=c.help, id=c.action,
        )
        for c in COMMANDS
    ]
    AUTO_FOCUS = "#pending"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (COMPACT_WIDTH, "-wide")]  # noqa: RUF012
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]  # noqa: RUF012

    def __init__(self, settings: Settings, clock: ScreenClock) -> None:
        super().__init__(id="main")
        self.settings = settings
        self.clock = clock
        self.daemon: DaemonAPI | None = None
        self.bridge: Bridge | None = None
        self.errors: deque[ErrorRecord] = deque(maxlen=MAX_ERRORS)
        self.alerts = ScreenAlerts.from_settings(settings)
        self._compact: bool | None = None
        self._last_error_toast = -1e9
        self._key_state: tuple[object, ...] = ()
        self.missing_model = ""  # the Ollama server lacks it: `m` pulls it
        self._offered: set[str] = set()  # models a pull was offered for (once each)
        self._pulling = False
        self._seed_market = False

    def size_classes(self, width: int, height: int) -> None:
        """Set the breakpoint classes for a terminal of this size before the screen is
        composed: Textual sets them on the first resize, after the first styling, and
        changing them then restyles every widget a second time (~15 ms of start-up)."""
        classes: dict[str, bool] = {}
        for size, points in ((width, self.HORIZONTAL_BREAKPOINTS),
                             (height, self.VERTICAL_BREAKPOINTS)):
            active = max((p for p in points if size >= p[0]), default=None)
            classes.update({name: (limit, name) == active for limit, name in points})
        self.update_classes(classes, update=False)

    def compose(self) -> ComposeResult:
        yield StatusBar(self.clock, self.settings.trading.mode, id="status")
        with Grid(id="body"):
            yield MarketPanel(
                self.settings.trading.symbols,
                bar_minutes=self.settings.trading.frequency_minutes,
                id="market",
            )
            yield PortfolioPanel(id="portfolio")
            yield ReasoningPanel(id="reasoning")
            yield SignalsPanel(id="signals")
            yield LogPanel(id="log-panel")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.set_interval(1.0, self.tick)
        self.tick()

    # ------------------------------------------------------------------ panels

    @cached_property  # one query: the widget is composed once
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @cached_property  # one query: the widget is composed once
    def market(self) -> MarketPanel:
        return self.query_one(MarketPanel)

    @cached_property  # one query: the widget is composed once
    def portfolio(self) -> PortfolioPanel:
        return self.query_one(PortfolioPanel)

    @cached_property  # one query: the widget is composed once
    def reasoning(self) -> ReasoningPanel:
        return self.query_one(ReasoningPanel)

    @cached_property  # one query: the widget is composed once
    def signals(self) -> SignalsPanel:
        return self.query_one(SignalsPanel)

    @cached_property  # one query: the widget is composed once
    def log_panel(self) -> LogPanel:
        return self.query_one(LogPanel)

    # ------------------------------------------------------------------ wiring

    def attach(self, daemon: DaemonAPI) -> Bridge:
        """Subscribe to the daemon's bus and seed what is already known (call before run)."""
        self.daemon = daemon
        self.bridge = Bridge(daemon.bus, self, self.clock.now)
        self.run_worker(self.bridge.run(), name="bridge", group="bridge", exit_on_error=False)
        self.status.set_state(daemon.state)
        self.signals.seed(daemon.pending_signals())
        self._update_keys()
        self.run_worker(
            self._load_decisions(), name="decisions", group="history", exit_on_error=False
        )
        return self.bridge

    async def _load_decisions(self) -> None:
        """The recent decisions from the database, so a restart does not start empty
        (the daemon's memory; nothing to load for a daemon without one)."""
        memory = getattr(self.daemon, "memory", None)
        signals = getattr(memory, "signals", None)
        if signals is None:
            return
        try:
            recent = await signals(statuses=_DECIDED, limit=self.signals.keep_decisions)
        except Exception as exc:  # the screen works without them
            self.report_error("recent decisions", f"{type(exc).__name__}: {exc}", toast=False)
            return
        self.signals.seed_decisions(recent)

    async def on_bus_batch(self, message: BusBatch) -> None:
        try:
            with self.app.batch_update():
                for event in message.events:
                    await self._apply(event)
                await self.reasoning.flush()  # one repaint for the frame's reasoning
                if message.logs or message.skipped_logs:
                    self.log_panel.add(message.logs, message.skipped_logs)
                if self._seed_market:
                    self._seed_market = False
                    self._seed_market_from_daemon()
            self._update_keys()
        finally:
            # the next frame is sent once this one is on screen: self-pacing
            if self.bridge is not None:
                self.call_after_refresh(self.bridge.ack)

    async def _apply(self, event: Event) -> None:
        """Route one event to its panel. A panel failing on one event is reported and the
        rest of the frame still lands: a display bug must not take trading down."""
        try:
            await self._route(event)
        except Exception as exc:
            self.report_error(
                f"screen ({event.kind})",
                f"{type(exc).__name__}: {exc}",
                "The daemon is unaffected; this panel may be out of date until the next update.",
                toast=False,
            )

    async def _route(self, event: Event) -> None:
        if isinstance(event, QuotesUpdated):
            self.market.update_quotes(event.quotes)
        elif isinstance(event, PortfolioUpdated):
            self.portfolio.update_portfolio(event)
        elif isinstance(event, ReasoningDelta):
            await self.reasoning.append(event.cycle, event.channel, event.text)
        elif isinstance(event, SignalChanged):
            self.signals.apply(event)
        elif isinstance(event, DaemonStateChanged):
            starting = self.status.state in _STARTING
            reason = event.reason
            if event.state is DaemonState.HALTED and not reason:
                # merged away on the bus (a newer "halted" without one): ask the daemon
                reason = self._daemon_halt_reason()
            self.status.set_state(event.state, reason)
            if starting and self.daemon is not None and event.state not in _STARTING:
                # pending signals restored from the database during start-up are not
                # published one by one: take them from the daemon once it is up
                self.signals.seed(self.daemon.pending_signals())
        elif isinstance(event, ScheduleUpdated):
            self.status.set_schedule(event)
        elif isinstance(event, AnalystStatus):
            self.status.set_analyst(event)
            self._analyst_changed(event)
        elif isinstance(event, CycleFinished):
            if not self.market.seeded:
                self._seed_market = True  # the daemon now has its bar window
                freeze = getattr(self.app, "freeze_heap", None)
                if freeze is not None:
                    freeze()  # what the first cycle loaded stays: out of the GC's walk
        elif isinstance(event, AnalysisStarted):
            await self.reasoning.start(event.cycle, event.analyst, self.clock.now())
        elif isinstance(event, AnalysisFinished):
            # a failed analysis also arrives as ErrorRaised: that one is toasted and kept
            await self.reasoning.finish(event)
        elif isinstance(event, ErrorRaised):
            self.report_error(event.where, event.message, event.detail)
        elif isinstance(event, Notification):
            self._notify(event)
        elif isinstance(event, PerformanceUpdated):
            m = event.metrics
            self.portfolio.border_subtitle = (
                f"realized {money(m.realized_pl)} · win {m.win_rate:.0%} "
                f"· max dd {m.max_drawdown_pct:.1f}%"
            )

    def _seed_market_from_daemon(self) -> None:
        recent_bars = getattr(self.daemon, "recent_bars", None)
        if recent_bars is not None:
            self.market.seed(recent_bars())

    # ------------------------------------------------------------------ the model

    def _analyst_changed(self, event: AnalystStatus) -> None:
        """A missing Ollama model: offer to pull it, once per model (``m`` any time)."""
        self.missing_model = event.missing_model
        model = event.missing_model
        if not model or model in self._offered or self._pulling:
            return
        if getattr(self.daemon, "pull_model", None) is None:
            return
        self._offered.add(model)
        self._ask_to_pull(model)

    def _ask_to_pull(self, model: str) -> None:
        host = self.settings.llm.host
        body = (
            f"model {model} not found on {host} — pull it now?\n\n"
            "The download can take a while (several GB); the rules analyst stands in "
            "meanwhile if llm.fallback is \"rules\". escape cancels it."
        )

        def answered(ok: bool | None) -> None:
            if ok:
                self._pull(model)

        self.app.push_screen(
            ConfirmModal(f"Pull {model}?", body, "Pull", danger=False), answered
        )

    def action_pull_model(self) -> None:
        if self.missing_model and not self._pulling:
            self._ask_to_pull(self.missing_model)

    def _pull(self, model: str) -> None:
        pull_model = getattr(self.daemon, "pull_model", None)
        if pull_model is None or self._pulling:
            return
        self._pulling = True
        self._update_keys()

        # imported on first use: the progress bar is off the path to the first frame
        from perun_tui.tui.screens.pull import PullModal, PullOutcome

        def done(outcome: PullOutcome | None) -> None:
            self._pulling = False
            self._update_keys()
            if outcome is None:
                return
            severity: SeverityLevel = (
                "information" if outcome.ok else "warning" if outcome.cancelled else "error"
            )
            self.app.notify(
                redact(outcome.message), title=f"Pull {model}", severity=severity, markup=False
            )

        self.app.push_screen(PullModal(model, self.settings.llm.host, pull_model), done)

    def _notify(self, event: Notification) -> None:
        """A notification for the screen: a toast and/or the terminal bell, as
        ``notify.toast_events`` / ``notify.bell_events`` (and ``notify.bell``) say."""
        toast, bell = self.alerts.toast(event), self.alerts.bell(event)
        recent_error = time.monotonic() - self._last_error_toast < ERROR_DEDUP_S
        if toast and event.level is Level.ERROR and recent_error:
            toast = False  # the same failure was just toasted from its ErrorRaised
        if toast:
            severity: SeverityLevel = (
                "error" if event.level is Level.ERROR
                else "warning" if event.level is Level.WARNING
                else "information"
            )
            self.app.notify(
                redact(event.message), title=redact(event.title), severity=severity,
                markup=False,
            )
        if bell:
            self.app.bell()

    def report_error(
        self, where: str, message: str, detail: str = "", *, toast: bool = True
    ) -> None:
        """Keep an error for the details modal and say it briefly in a toast."""
        where, message, detail = redact(where), redact(message), redact(detail)
        self.errors.append(ErrorRecord(self.clock.now(), where, message, detail))
        if toast:
            self._last_error_toast = time.monotonic()
            short = message if len(message) <= 160 else message[:157] + "…"
            self.app.notify(
                f"{short}\n(press e for details)", title=where, severity="error", markup=False,
                timeout=8,
            )

    def tick(self) -> None:
        """Refresh what depends on the clock (once a second, and when it changes)."""
        now = self.clock.now()
        self.status.tick()
        self.signals.tick(now)
        self.reasoning.tick(now)

    def on_resize(self) -> None:
        compact = self.size.width < COMPACT_WIDTH
        self.status.set_compact(self.size.width < HEADER_COMPACT_WIDTH)
        if compact != self._compact:
            self._compact = compact
            self.market.set_compact(compact)
            self.portfolio.set_compact(compact)
            self.signals.set_compact(compact)
            self.query_one(Footer).show_command_palette = not compact

    def _update_keys(self) -> None:
        """Refresh the footer only when something that enables or disables a key changed:
        the footer rebuilds itself on every refresh, which is too costly per frame."""
        signals = self.signals
        sid = signals.selected_id()
        key_state = (
            self.daemon is not None,
            self.status.state,
            sid is not None and not signals.is_busy(sid),
            bool(signals.pending),
        )
        if key_state != self._key_state:
            self._key_state = key_state
            self.refresh_bindings()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._update_keys()

    def on_command_finished(self, message: CommandFinished) -> None:
        for sid in message.signal_ids:
            self.signals.mark_busy(sid, False)
        self._show_daemon_state()  # e.g. halted: shown now, not a bridge frame later

    # ------------------------------------------------------------------ key state

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """False hides a key, None greys it out (shown but disabled)."""
        ready = self.daemon is not None
        state = self.status.state if self.is_mounted else DaemonState.STARTING
        if action in ("approve", "reject", "details"):
            sid = self.signals.selected_id() if self.is_mounted else None
            return True if ready and sid is not None and not self.signals.is_busy(sid) else None
        if action == "approve_all":
            return True if ready and self.signals.pending else None
        if action == "pause":
            if state is DaemonState.PAUSED:
                return False
            return True if ready and state in _RUNNING else None
        if action == "resume":
            return state is DaemonState.PAUSED
        if action == "halt":
            if state is DaemonState.HALTED:
                return False
            return True if ready and state not in (DaemonState.STOPPING, DaemonState.STOPPED) \
                else None
        if action == "clear_halt":
            return state is DaemonState.HALTED
        if action == "cycle_now":
            return True if ready and state is DaemonState.WAITING else None
        if action == "pull_model":
            return True if self.missing_model and not self._pulling else None
        if action == "performance":
            return True if getattr(self.daemon, "optimizer", None) is not None else None
        return True

    # ------------------------------------------------------------------ commands

    def _run_command(
        self,
        title: str,
        call: Callable[[DaemonAPI], Awaitable[object]],
        signal_ids: tuple[str, ...] = (),
    ) -> None:
        daemon = self.daemon
        if daemon is None:
            return
        for sid in signal_ids:
            self.signals.mark_busy(sid, True)
        self._update_keys()

        async def run() -> None:
            try:
                result = await call(daemon)
            except Exception as exc:  # a failed command is reported, never fatal
                self.report_error(title, f"{title} failed: {exc}", _what_to_do(title))
            else:
                if isinstance(result, str) and result:
                    bad = result.lower().startswith(_BAD_OUTCOME)
                    self.app.notify(
                        redact(result), title=title, severity="warning" if bad else "information",
                        markup=False,
                    )
            finally:
                self.post_message(CommandFinished(signal_ids))

        self.run_worker(run(), group="commands", exit_on_error=False)

    def action_approve(self) -> None:
        signal = self.signals.selected()
        if signal is not None and not self.signals.is_busy(signal.id):
            self._approve(signal)

    def _approve(self, signal: Signal) -> None:
        self._run_command(
            f"Approve {signal.action.value.upper()} {signal.symbol}",
            lambda d: d.approve(signal.id),
            (signal.id,),
        )

    def action_reject(self) -> None:
        signal = self.signals.selected()
        if signal is not None and not self.signals.is_busy(signal.id):
            self._reject(signal)

    def _reject(self, signal: Signal) -> None:
        self._run_command(
            f"Reject {signal.action.value.upper()} {signal.symbol}",
            lambda d: d.reject(signal.id, reason="rejected by user"),
            (signal.id,),
        )

    def action_approve_all(self) -> None:
        signals = [s for s in self.signals.pending if not self.signals.is_busy(s.id)]
        if not signals:
            return
        lines = "\n".join(
            f"  {s.action.value.upper():4} {s.symbol:6} {s.qty:g} sh ≈ ${s.notional:,.0f}"
            f"  conf {s.confidence:.2f}"
            for s in signals
        )
        body = (
            f"Approve all {len(signals)} pending signal(s)? Each is re-checked against a "
            f"fresh quote before it is sent.\n\n{lines}"
        )

        def confirmed(ok: bool | None) -> None:
            if not ok:
                return
            ids = tuple(s.id for s in signals)

            async def approve_all(d: DaemonAPI) -> str:
                outcomes = []
                for s in signals:
                    try:
                        outcomes.append(f"{s.symbol}: {await d.approve(s.id)}")
                    except Exception as exc:
                        outcomes.append(f"{s.symbol}: failed ({exc})")
                return "\n".join(outcomes)

            self._run_command(f"Approve {len(ids)} signal(s)", approve_all, ids)

        self.app.push_screen(
            ConfirmModal("Approve all pending signals?", body, "Approve all", danger=False),
            confirmed,
        )

    def action_details(self) -> None:
        signal = self.signals.selected()
        daemon = self.daemon
        if signal is None or daemon is None:
            return

        async def fetch() -> None:
            try:
                details = await asyncio.wait_for(
                    daemon.signal_details(signal.id), DETAILS_TIMEOUT_S
                )
                view = DetailsView.from_daemon(details, signal)
            except Exception as exc:
                view = DetailsView(signal=signal, note=f"could not fetch details: {exc}")
            self.show_details(view)

        self.run_worker(fetch(), group="details", exclusive=True, exit_on_error=False)

    def show_details(self, view: DetailsView) -> None:
        def chosen(choice: DetailsChoice | None) -> None:
            signal = next((s for s in self.signals.pending if s.id == view.signal.id), None)
            if signal is None or self.signals.is_busy(signal.id):
                if choice is not None:
                    self.app.notify("That signal is no longer pending.", severity="warning")
                return
            if choice == "approve":
                self._approve(signal)
            elif choice == "reject":
                self._reject(signal)

        self.app.push_screen(
            SignalDetailsModal(view, self.clock.now(), self.settings.approval.max_drift_pct),
            chosen,
        )

    def action_cycle_now(self) -> None:
        if self.daemon is not None:
            self.daemon.run_now()
            self.app.notify("A cycle will run now.", title="Cycle now")

    def action_pause(self) -> None:
        if self.daemon is not None:
            self.daemon.pause()
            self._show_daemon_state()

    def action_resume(self) -> None:
        if self.daemon is not None:
            self.daemon.resume()
            self._show_daemon_state()

    def _show_daemon_state(self) -> None:
        """Feedback at once: the header and the keys from the daemon's state right after
        the command, not a bridge frame later (up to half a second under a flood). The
        event on the bus confirms it (with its reason) when it arrives."""
        daemon = self.daemon
        if daemon is not None:
            state = daemon.state
            if state is not self.status.state:
                halted = state is DaemonState.HALTED
                self.status.set_state(state, self._daemon_halt_reason() if halted else "")
        self._update_keys()

    def _daemon_halt_reason(self) -> str:
        return getattr(self.daemon, "halt_reason", None) or ""

    def action_halt(self) -> None:
        cancel = self.settings.risk.cancel_on_halt
        body = (
            "Halt all trading now? No new orders are sent until you clear the halt "
            "(k again); the halt survives a restart.\n"
            + ("Open orders will be canceled." if cancel else "Open orders stay open.")
            + " Pending signals stay pending."
        )

        def confirmed(ok: bool | None) -> None:
            if ok:
                self._run_command("Halt", lambda d: d.halt("kill switch (k) pressed"))

        self.app.push_screen(ConfirmModal("Halt trading?", body, "Halt"), confirmed)

    def action_clear_halt(self) -> None:
        def confirmed(ok: bool | None) -> None:
            if ok:
                self._run_command("Clear halt", lambda d: d.clear_halt())

        self.app.push_screen(
            ConfirmModal(
                "Clear the halt?",
                "Trading resumes: the next cycle may propose and send orders again.",
                "Clear halt",
            ),
            confirmed,
        )

    def action_log_level(self) -> None:
        self.log_panel.cycle_level()  # the panel's title shows the level

    def action_errors(self) -> None:
        self.app.push_screen(ErrorsModal(list(self.errors)))

    async def action_prev_cycle(self) -> None:
        if not await self.reasoning.step(-1):
            oldest = self.reasoning.oldest_cycle
            if oldest is not None and oldest > 1:
                self.run_worker(
                    self._load_cycle_before(oldest), name="reasoning-history",
                    group="history", exclusive=True, exit_on_error=False,
                )

    async def _load_cycle_before(self, cycle: int) -> None:
        """The newest stored analysis older than ``cycle`` (``[`` past what is kept in
        memory), from the daemon's database."""
        memory = getattr(self.daemon, "memory", None)
        analyses = getattr(memory, "analyses", None)
        if analyses is None:
            return
        try:
            stored = await analyses(HISTORY_LOOKBACK)
        except Exception as exc:
            self.report_error("reasoning history", f"{type(exc).__name__}: {exc}", toast=False)
            return
        older = [a for a in stored if a.cycle is not None and a.cycle < cycle]
        if not older:
            self.app.notify("No older cycle is stored.", title="Reasoning", timeout=3)
            return
        found = max(older, key=lambda a: a.cycle)
        result = found.result
        finished = result.finished(found.cycle, found.elapsed_s)
        doc = stored_doc(
            found.cycle, analyst=result.analyst, elapsed_s=found.elapsed_s,
            reasoning=result.reasoning, reply=result.raw_reply, finished=finished,
        )
        await self.reasoning.add_history(doc)

    async def action_next_cycle(self) -> None:
        await self.reasoning.step(+1)

    def action_performance(self) -> None:
        optimizer = getattr(self.daemon, "optimizer", None)
        if optimizer is not None:
            # imported on first use: the analysis stack stays off the path to the first frame
            from perun_tui.tui.screens.performance import PerformanceScreen

            self.app.push_screen(PerformanceScreen(optimizer))

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(help_rows(), _HELP_INTRO))

    def palette_commands(self) -> list[tuple[str, str, str]]:
        """(name, help, action) for every command available right now."""
        out = []
        for c in COMMANDS:
            if self.check_action(c.action, ()) is True and c.action != "help":
                out.append((c.label, c.help, c.action))
        if self.check_action("details", ()) is True:
            out.append(("Details", "Open the highlighted signal's details", "details"))
        out.append(("Help", "Show every key", "help"))
        return out


_HELP_INTRO = (
    "Perun runs the trading cycle in the background and shows it live. Signals that need "
    "you wait in the Signals panel, oldest highlighted: a approves, r rejects, enter shows "
    "why. Greyed keys in the footer are not available right now."
)


def help_rows() -> list[KeyRow]:
    rows: list[KeyRow] = [(c.key_display or c.key, c.help, c.when) for c in COMMANDS]
    rows.extend(EXTRA_KEYS)
    return rows


def _what_to_do(title: str) -> str:
    return (
        f"{title} did not complete. The daemon keeps running; check the log panel "
        "(l to show warnings) and try again."
    )

