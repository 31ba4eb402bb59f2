"""The one-line header: mode badge, daemon state, next cycle, market hours, analyst."""

from __future__ import annotations

from datetime import datetime

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label

from perun_tui.events import AnalystStatus, DaemonState, ScheduleUpdated
from perun_tui.models import MarketClock
from perun_tui.tui.clock import ScreenClock
from perun_tui.tui.format import duration, et_time, fit, market_line

_STATE_CLASSES = {state: f"-{state.value}" for state in DaemonState}
_NO_SCHEDULE = frozenset(
    {DaemonState.HALTED, DaemonState.PAUSED, DaemonState.STOPPED, DaemonState.STOPPING}
)
STATE_WIDTH = len("● waiting")
REASON_CHARS = 40
REASON_CHARS_COMPACT = 18


def analyst_text(event: AnalystStatus) -> str:
    """``qwen3:8b`` when it is in use; else what is used and a short why:
    ``rules · Ollama down``, ``rules · qwen3:8b missing`` (the full story is in the
    tooltip and the log)."""
    if event.available or not event.detail:
        return event.name
    used = event.name.split(" (", 1)[0]  # "rules (fallback)" → "rules"
    detail = event.detail
    if event.missing_model:
        why = f"{event.missing_model} missing"
    elif "not reachable" in detail.lower() or "unreachable" in detail.lower():
        why = "Ollama down"
    else:
        why = fit(detail.split(" — ", 1)[0].split(";", 1)[0], 28)
    return f"{used} · {why}"


class StatusBar(Horizontal):
    """Everything a glance at the top line should answer: which money, doing what, when."""

    def __init__(self, clock: ScreenClock, mode: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock
        self._mode = mode
        self._state = DaemonState.STARTING
        self._reason = ""
        self._halt_reason = ""
        self._next_cycle: datetime | None = None
        self._market: MarketClock | None = None
        self._stopping = False
        self._compact = False
        self._texts: dict[str, str] = {}

    def _set(self, widget_id: str, text: str) -> Label:
        """Update a label only when its text changes; lay the screen out again only when
        its width changes (a layout pass costs the whole screen: the countdown ticking
        from 27s to 26s must not)."""
        label = self.query_one(f"#{widget_id}", Label)
        old = self._texts.get(widget_id)
        if old != text:
            self._texts[widget_id] = text
            label.update(text, layout=old is None or cell_len(old) != cell_len(text))
        return label

    def compose(self) -> ComposeResult:
        yield Label("Perun", id="brand")
        yield Label(self._mode.upper(), id="mode", classes=f"-{self._mode}")
        yield Label("", id="state", markup=False)
        yield Label("", id="schedule", markup=False)
        yield Label("", id="market", markup=False)
        yield Label("", id="analyst", markup=False)

    def on_mount(self) -> None:
        self._render_state()
        self.tick()

    # ------------------------------------------------------------------ updates

    def set_state(self, state: DaemonState, reason: str = "") -> None:
        """The daemon's state and why. Halted keeps its reason until the halt is cleared,
        even when the state is re-announced without one (e.g. after a resume)."""
        if state is DaemonState.HALTED:
            self._halt_reason = reason or self._halt_reason
            reason = self._halt_reason
        elif state in (DaemonState.WAITING, DaemonState.CYCLING):
            self._halt_reason = ""
        if state is self._state and reason == self._reason:
            return
        self._state = state
        self._reason = reason
        self._render_state()
        self.tick()

    def set_stopping(self) -> None:
        self._stopping = True
        self._render_state()

    def set_schedule(self, event: ScheduleUpdated) -> None:
        self._next_cycle = event.next_cycle_at
        if event.market is not None:
            self._market = event.market
        self.tick()

    def set_analyst(self, event: AnalystStatus) -> None:
        label = self._set("analyst", analyst_text(event))
        label.set_class(not event.available, "-fallback")
        label.tooltip = event.detail or None

    def set_compact(self, compact: bool) -> None:
        if compact != self._compact:
            self._compact = compact
            self._render_state()
            self.tick()

    @property
    def state(self) -> DaemonState:
        return self._state

    @property
    def reason(self) -> str:
        return self._reason

    def _render_state(self) -> None:
        if self._stopping and self._state not in (DaemonState.STOPPED,):
            text, cls = "● stopping…", "-stopping"
        else:
            text = f"● {self._state.value}"
            reason = self._reason
            if reason and self._state in (DaemonState.HALTED, DaemonState.STOPPED):
                room = REASON_CHARS_COMPACT if self._compact else REASON_CHARS
                text += f" ({fit(reason, room)})"
            cls = _STATE_CLASSES[self._state]
        # waiting, cycling and paused take the same width: toggling them (every cycle,
        # every `p`) repaints the label without laying the screen out again
        label = self._set("state", text.ljust(STATE_WIDTH))
        label.tooltip = self._reason or None
        for other in _STATE_CLASSES.values():
            label.set_class(other == cls, other)
        label.set_class(cls == "-stopping", "-stopping")

    def tick(self) -> None:
        """Refresh the clock-dependent parts (called about once a second)."""
        now = self._clock.now()
        if self._next_cycle is None or self._state in _NO_SCHEDULE or self._stopping:
            schedule = ""
        elif self._state is DaemonState.CYCLING:
            schedule = "cycle running"
        else:
            left = duration(self._clock.real_seconds_until(self._next_cycle))
            at = et_time(self._next_cycle)
            schedule = (
                f"next {at} in {left}" if self._compact else f"next cycle {at} ET · in {left}"
            )
        self._set("schedule", schedule)
        market = ""
        if self._market is not None:
            market = market_line(self._market, now, compact=self._compact)
        self._set("market", market)
