"""Signals panel: pending signals awaiting a keypress, and what became of recent ones.

The pending table owns the keyboard focus by default with its cursor on the oldest
pending signal, so ``a`` approves it without any navigation. Rows are keyed by signal id
and updated in place; the age and time-left columns are refreshed once a second.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from functools import cached_property
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.widgets import Label

from perun_tui.events import SignalChanged
from perun_tui.models import Action, Signal, SignalStatus
from perun_tui.tui.format import age, et_time, fit, money, qty, time_left
from perun_tui.tui.widgets.table import CellTable
from perun_tui.tui.widgets.tones import tone

KEEP_DECISIONS = 50

_PENDING_FULL = (
    ("Action", "action"),
    ("Symbol", "sym"),
    ("Qty", "qty"),
    ("≈ $", "notional"),
    ("Conf", "conf"),
    ("Age", "age"),
    ("TTL", "ttl"),
)
_PENDING_COMPACT = (("Signal", "what"), ("Qty", "qty"), ("Conf", "conf"), ("TTL", "ttl"))
_DECISIONS_FULL = (("Time", "time"), ("Signal", "what"), ("Outcome", "outcome"))
_DECISIONS_COMPACT = (("Signal", "what"), ("Outcome", "outcome"))
_RIGHT = frozenset({"qty", "notional", "conf", "age", "ttl"})


def outcome(signal: Signal) -> tuple[str, str]:
    """What became of a signal, and the theme tone to show it in."""
    reason = signal.reason.strip()
    status = signal.status
    if reason.lower().startswith(status.value.replace("_", " ")):
        reason = reason[len(status.value):].strip(" :—-")  # "rejected by user" → "by user"
    why = f": {reason}" if reason else ""
    if status is SignalStatus.FILLED:
        px = f" @ {money(signal.fill_price)}" if signal.fill_price else ""
        return f"filled{px}", "success"
    if status is SignalStatus.PARTIALLY_FILLED:
        px = f" @ {money(signal.fill_price)}" if signal.fill_price else ""
        return f"partially filled{px}", "success"
    if status is SignalStatus.SUBMITTED:
        return "submitted", "accent"
    if status is SignalStatus.APPROVED:
        return f"approved{why}", "accent"
    if status is SignalStatus.REJECTED:
        return f"rejected{why}", "text-muted"
    if status is SignalStatus.EXPIRED:
        return f"expired{why}", "text-muted"
    if status is SignalStatus.REFUSED:
        return f"refused{why}", "warning"
    if status is SignalStatus.CANCELED:
        return f"canceled{why}", "warning"
    if status is SignalStatus.FAILED:
        return f"failed{why}", "error"
    return status.value, ""


def _what(signal: Signal) -> str:
    size = f" {qty(signal.qty)}" if signal.qty else ""
    return f"{signal.action.value.upper()} {signal.symbol}{size}"


class PendingTable(CellTable):
    """The pending signals; ``enter`` opens the details of the highlighted one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "screen.details", "Details", id="details", tooltip="Signal details"),
    ]


class SignalsPanel(Vertical):
    BORDER_TITLE = "Signals awaiting approval"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._pending: dict[str, Signal] = {}
        self._decisions: OrderedDict[str, Signal] = OrderedDict()
        self._busy: set[str] = set()
        self._room = 0
        self._compact = False
        self._now: datetime | None = None

    def compose(self) -> ComposeResult:
        yield PendingTable(right=_RIGHT, id="pending", cursor_type="row", zebra_stripes=False)
        yield Label("Recent decisions", id="decisions-title")
        decisions = CellTable(id="decisions", cursor_type="none", show_header=False)
        decisions.can_focus = False
        yield decisions

    @cached_property  # one query: the widget is composed once
    def pending_table(self) -> PendingTable:
        return self.query_one("#pending", PendingTable)

    @cached_property  # one query: the widget is composed once
    def decisions_table(self) -> CellTable:
        return self.query_one("#decisions", CellTable)

    def on_mount(self) -> None:
        self._build()

    def set_compact(self, compact: bool) -> None:
        if compact != self._compact:
            self._compact = compact
            self._build()

    def _build(self) -> None:
        selected = self.selected_id()
        table = self.pending_table
        table.reset(_PENDING_COMPACT if self._compact else _PENDING_FULL)
        for sid in self._pending:
            self._paint_pending(sid)
        if selected in self._pending:
            table.move_cursor(row=table.get_row_index(selected), animate=False)
        self._rebuild_decisions()
        self._retitle()

    def _rebuild_decisions(self) -> None:
        self.decisions_table.reset(_DECISIONS_COMPACT if self._compact else _DECISIONS_FULL)
        self._paint_decisions(self._outcome_room())

    def _paint_decisions(self, room: int) -> None:
        for sid in self._decisions:
            self._paint_decision(sid, room)

    # ------------------------------------------------------------------ queries

    def selected_id(self) -> str | None:
        table = self.pending_table
        if not self._pending or table.row_count == 0:
            return None
        row = table.cursor_row
        if not 0 <= row < table.row_count:
            return None
        key = table.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value
        return key if key in self._pending else None

    def selected(self) -> Signal | None:
        sid = self.selected_id()
        return self._pending.get(sid) if sid is not None else None

    @property
    def pending(self) -> list[Signal]:
        """Pending signals in table order (oldest first)."""
        return list(self._pending.values())

    def is_busy(self, signal_id: str) -> bool:
        return signal_id in self._busy

    def decision(self, signal_id: str) -> Signal | None:
        return self._decisions.get(signal_id)

    # ------------------------------------------------------------------ updates

    def seed(self, signals: list[Signal]) -> None:
        """Pending signals known before the first event (e.g. after a restart)."""
        for signal in sorted(signals, key=lambda s: s.created_at):
            if signal.status is SignalStatus.PENDING:
                self._put_pending(signal)
        self._after_change(None)

    @property
    def keep_decisions(self) -> int:
        return KEEP_DECISIONS

    def seed_decisions(self, signals: list[Signal]) -> None:
        """Recent decisions from the database (after a restart); what the bus has shown
        meanwhile is newer and wins. The table is rebuilt in time order."""
        merged = {
            s.id: s for s in signals
            if s.action is not Action.HOLD and s.status is not SignalStatus.PENDING
        }
        merged.update(self._decisions)
        ordered = sorted(merged.values(), key=lambda s: s.updated_at or s.created_at)
        self._decisions = OrderedDict((s.id, s) for s in ordered[-KEEP_DECISIONS:])
        self._rebuild_decisions()
        self.decisions_table.scroll_end(animate=False)

    def apply(self, event: SignalChanged) -> None:
        selected = self.selected_id()
        signal = event.signal
        if signal.status is SignalStatus.PENDING:
            self._put_pending(signal)
        else:
            self._drop_pending(signal.id)
            if signal.status is not SignalStatus.PROPOSED and signal.action is not Action.HOLD:
                self._put_decision(signal)
        self._after_change(selected)

    def mark_busy(self, signal_id: str, busy: bool) -> None:
        if busy:
            self._busy.add(signal_id)
        else:
            self._busy.discard(signal_id)
        if signal_id in self._pending:
            self._paint_pending(signal_id)

    def tick(self, now: datetime) -> None:
        self._now = now
        for sid in self._pending:
            self._paint_pending(sid)

    def _put_pending(self, signal: Signal) -> None:
        self._pending[signal.id] = signal
        self._paint_pending(signal.id)

    def _drop_pending(self, signal_id: str) -> None:
        if signal_id in self._pending:
            del self._pending[signal_id]
            self._busy.discard(signal_id)
            self.pending_table.drop_row(signal_id)

    def _put_decision(self, signal: Signal) -> None:
        table = self.decisions_table
        if signal.id not in self._decisions:
            while len(self._decisions) >= KEEP_DECISIONS:
                old, _ = self._decisions.popitem(last=False)
                table.drop_row(old)
        self._decisions[signal.id] = signal
        self._paint_decision(signal.id)
        table.scroll_end(animate=False)

    def _after_change(self, previously_selected: str | None) -> None:
        """Keep the cursor on what it was on; else put it on the oldest pending signal."""
        table = self.pending_table
        if table.row_count:
            if previously_selected in self._pending:
                row = table.get_row_index(previously_selected)
            else:
                row = 0
            if table.cursor_row != row:
                table.move_cursor(row=row, animate=False)
        self._retitle()

    def _retitle(self) -> None:
        n = len(self._pending)
        self.border_title = (
            f"Signals awaiting approval ({n})" if n else "Signals awaiting approval"
        )

    def _paint_pending(self, sid: str) -> None:
        signal = self._pending[sid]
        now = self._now
        act_tone = tone(self, "success" if signal.action is Action.BUY else "error")
        ttl = "…" if sid in self._busy else (
            time_left(signal.expires_at, now) if now is not None else ""
        )
        cells = {
            "action": (signal.action.value.upper(), act_tone),
            "sym": (signal.symbol, ""),
            "what": (f"{signal.action.value.upper()} {signal.symbol}", act_tone),
            "qty": (qty(signal.qty) if signal.qty else "–", ""),
            "notional": (money(signal.notional, 0) if signal.notional else "–", ""),
            "conf": (f"{signal.confidence:.2f}", ""),
            "age": (age(signal.created_at, now) if now is not None else "", ""),
            "ttl": (ttl, tone(self, "warning") if ttl == "expired" else ""),
        }
        self.pending_table.write_row(sid, cells)

    def _paint_decision(self, sid: str, room: int | None = None) -> None:
        """``room``: the outcome's width (``_outcome_room()``), given when painting many."""
        signal = self._decisions[sid]
        text, tone_name = outcome(signal)
        at = signal.updated_at or signal.created_at
        if room is None:
            room = self._outcome_room()
        cells = {
            "time": (et_time(at), "dim"),
            "what": (_what(signal), ""),
            "outcome": (fit(text, room), tone(self, tone_name)),
        }
        self.decisions_table.write_row(sid, cells)

    def _outcome_room(self) -> int:
        """How wide an outcome may be to fit the panel (ends at a word, with "…")."""
        width = self.content_region.width
        if width <= 0:
            return 0  # not laid out yet: as is
        what = max((len(_what(s)) for s in self._decisions.values()), default=0)
        used = (what + 2) + 2 + 1  # the signal column, the outcome's padding, a scrollbar
        if not self._compact:
            used += 5 + 2  # the time
        return max(12, width - used)

    def on_resize(self) -> None:
        room = self._outcome_room()
        if room != self._room:
            self._room = room
            self._paint_decisions(room)
