"""The one-line header: mode badge, daemon state, next cycle, market hours, analyst."""

from __future__ import annotations

from datetime import datetime

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label

from perun_tui.events import AnalystStatus, DaemonState, ScheduleUpdated
from perun_tui.models import MarketClock
from perun_tui.tui.clock import ScreenClock
from perun_tui.tui.format import duration, et_time, market_line

_STATE_CLASSES = {state: f"-{state.value}" for state in DaemonState}


class StatusBar(Horizontal):
    """Everything a glance at the top line should answer: which money, doing what, when."""

    def __init__(self, clock: ScreenClock, mode: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._clock = clock
        self._mode = mode
        self._state = DaemonState.STARTING
        self._reason = ""
        self._next_cycle: datetime | None = None
        self._market: MarketClock | None = None
        self._analyst = ""
        self._analyst_detail = ""
        self._analyst_ok = True
        self._stopping = False
        self._compact = False
        self._texts: dict[str, str] = {}

    def _set(self, widget_id: str, text: str) -> Label:
        """Update a label only when its text changes (an update re-lays out the bar)."""
        label = self.query_one(f"#{widget_id}", Label)
        if self._texts.get(widget_id) != text:
            self._texts[widget_id] = text
            label.update(text)
        return label

    def compose(self) -> ComposeResult:
        yield Label("Perun", id="brand")
        yield Label(self._mode.upper(), id="mode", classes=f"-{self._mode}")
        yield Label("", id="state")
        yield Label("", id="schedule")
        yield Label("", id="market")
        yield Label("", id="analyst")

    def on_mount(self) -> None:
        self._render_state()
        self.tick()

    # ------------------------------------------------------------------ updates

    def set_state(self, state: DaemonState, reason: str = "") -> None:
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
        self._analyst = event.name
        self._analyst_detail = event.detail
        self._analyst_ok = event.available
        text = event.name if event.available or not event.detail else (
            f"{event.name} · {event.detail}"
        )
        label = self._set("analyst", text)
        label.set_class(not event.available, "-fallback")
        label.tooltip = event.detail or None

    def set_compact(self, compact: bool) -> None:
        self._compact = compact
        self.tick()

    @property
    def state(self) -> DaemonState:
        return self._state

    def _render_state(self) -> None:
        if self._stopping and self._state not in (DaemonState.STOPPED,):
            text, cls = "● stopping…", "-stopping"
        else:
            text = f"● {self._state.value}"
            if self._reason and self._state in (DaemonState.HALTED, DaemonState.PAUSED):
                text += f" ({self._reason})"
            cls = _STATE_CLASSES[self._state]
        label = self._set("state", text)
        for other in _STATE_CLASSES.values():
            label.set_class(other == cls, other)
        label.set_class(cls == "-stopping", "-stopping")

    def tick(self) -> None:
        """Refresh the clock-dependent parts (called about once a second)."""
        now = self._clock.now()
        if self._next_cycle is None or self._state in (
            DaemonState.HALTED,
            DaemonState.STOPPED,
            DaemonState.STOPPING,
        ):
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
            line = market_line(self._market, now)
            market = line.removesuffix(" ET") if self._compact else line
        self._set("market", market)
