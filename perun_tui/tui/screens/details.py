"""Signal details: full rationale, sizing, risk checks, price then and now, history.

Opened with ``enter`` on a pending signal. From here ``a`` approves and ``r`` rejects;
the modal returns which (or None) and the main screen carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from perun_tui.models import Quote, RiskCheck, Signal, SignalStatus, SignalTransition
from perun_tui.tui.format import age, et_time, money, qty, time_left
from perun_tui.tui.widgets.tones import tone

DetailsChoice = Literal["approve", "reject"]


@dataclass(slots=True)
class DetailsView:
    """What the modal shows, independent of the daemon's own details type."""

    signal: Signal
    transitions: list[SignalTransition] = field(default_factory=list)
    price_now: float | None = None
    quoted_at: datetime | None = None
    note: str = ""

    @classmethod
    def from_daemon(cls, details: Any, fallback: Signal) -> DetailsView:
        """Accept the daemon's ``SignalDetails`` (signal, transitions, quote_now), duck-typed
        so a field added there never breaks the modal; None means "not found"."""
        if details is None:
            return cls(signal=fallback, note="the daemon has no details for this signal")
        signal = getattr(details, "signal", None)
        if not isinstance(signal, Signal):
            signal = fallback
        transitions = [
            t for t in (getattr(details, "transitions", None) or [])
            if isinstance(t, SignalTransition)
        ]
        quote = getattr(details, "quote_now", None) or getattr(details, "quote", None)
        price_now = getattr(details, "price_now", None)
        quoted_at = None
        if isinstance(quote, Quote):
            price_now = quote.last
            quoted_at = quote.ts
        note = str(getattr(details, "note", "") or getattr(details, "quote_error", "") or "")
        return cls(
            signal=signal,
            transitions=transitions,
            price_now=float(price_now) if isinstance(price_now, int | float) else None,
            quoted_at=quoted_at,
            note=note,
        )

    @property
    def drift_pct(self) -> float | None:
        if self.price_now is None or not self.signal.price:
            return None
        return (self.price_now / self.signal.price - 1) * 100


class SignalDetailsModal(ModalScreen[DetailsChoice | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="details-close"),
        Binding("a", "approve", "Approve", id="details-approve"),
        Binding("r", "reject", "Reject", id="details-reject"),
    ]

    def __init__(self, view: DetailsView, now: datetime, max_drift_pct: float) -> None:
        super().__init__()
        self._view = view
        self._now = now
        self._max_drift = max_drift_pct

    @property
    def _pending(self) -> bool:
        return self._view.signal.status is SignalStatus.PENDING

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("approve", "reject"):
            return self._pending or None
        return True

    def compose(self) -> ComposeResult:
        s = self._view.signal
        with Vertical(id="details-dialog"):
            yield Label(self._headline(), id="details-title")
            with VerticalScroll(id="details-body"):
                yield Static(self._summary(), id="details-summary")
                yield Label("Rationale", classes="details-section")
                yield Static(Text(s.rationale or "(none given)"), id="details-rationale")
                yield Label("Sizing and prices", classes="details-section")
                yield Static(self._sizing(), id="details-sizing")
                yield Label("Risk checks", classes="details-section")
                yield Static(self._checks(s.risk_checks), id="details-checks")
                yield Label("History", classes="details-section")
                yield Static(self._history(), id="details-history")
            with Horizontal(id="dialog-buttons"):
                yield Button("Close", id="close", variant="default")
                yield Button("Reject", id="reject", variant="warning", disabled=not self._pending)
                yield Button(
                    "Approve", id="approve", variant="success", disabled=not self._pending
                )

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    # ------------------------------------------------------------------ content

    def _headline(self) -> str:
        s = self._view.signal
        return f"{s.action.value.upper()} {s.symbol} · signal {s.id}"

    def _summary(self) -> Text:
        s = self._view.signal
        out = Text()
        out.append(f"{s.action.value.upper()} {s.symbol}", style="bold")
        if s.qty:
            out.append(f"  {qty(s.qty)} sh ≈ ${money(s.notional, 0)}")
        out.append(f"  conf {s.confidence:.2f}")
        out.append(f"  by {s.analyst}", style="dim")
        out.append("\n")
        out.append(f"status {s.status.value}")
        if s.reason:
            out.append(f" — {s.reason}")
        out.append(f"  · cycle {s.cycle} · proposed {et_time(s.created_at, True)} ET")
        out.append(f" ({age(s.created_at, self._now)} ago)")
        if s.status is SignalStatus.PENDING:
            out.append(f" · expires in {time_left(s.expires_at, self._now)}")
        return out

    def _sizing(self) -> Table:
        s = self._view.signal
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim")
        grid.add_column()
        grid.add_row("quantity", f"{qty(s.qty)} sh" if s.qty else "–")
        grid.add_row("≈ notional", f"${money(s.notional)}" if s.notional else "–")
        grid.add_row("price when proposed", money(s.price))
        view = self._view
        if view.price_now is not None:
            drift = view.drift_pct or 0.0
            style = tone(self, "warning") if abs(drift) > self._max_drift else ""
            when = f" at {et_time(view.quoted_at, True)} ET" if view.quoted_at else ""
            grid.add_row(
                "price now",
                Text(f"{money(view.price_now)}  ({drift:+.2f}%{when}; "
                     f"limit ±{self._max_drift:g}%)", style=style),
            )
        else:
            grid.add_row("price now", Text(view.note or "no fresh quote", style="dim"))
        grid.add_row("target", money(s.target_price) if s.target_price else "–")
        grid.add_row("stop loss", money(s.stop_loss) if s.stop_loss else "–")
        if s.client_order_id:
            grid.add_row("client order id", s.client_order_id)
        if s.fill_price:
            grid.add_row("filled at", money(s.fill_price))
        return grid

    def _checks(self, checks: list[RiskCheck]) -> Text | Table:
        if not checks:
            return Text("no risk checks recorded", style="dim")
        grid = Table.grid(padding=(0, 1))
        grid.add_column()
        grid.add_column(style="bold")
        grid.add_column()
        ok, bad = tone(self, "success"), tone(self, "error")
        for check in checks:
            grid.add_row(
                Text("✓" if check.ok else "✗", style=ok if check.ok else bad),
                check.name,
                Text(check.detail),
            )
        return grid

    def _history(self) -> Text | Table:
        if not self._view.transitions:
            return Text("no transitions recorded", style="dim")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim")
        grid.add_column()
        grid.add_column(style="dim")
        grid.add_column()
        for t in self._view.transitions:
            old = t.old.value if t.old is not None else "–"
            grid.add_row(
                f"{et_time(t.at, True)} ET", f"{old} → {t.new.value}", t.by, Text(t.reason)
            )
        return grid

    # ------------------------------------------------------------------ actions

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#approve")
    def action_approve(self) -> None:
        if self._pending:
            self.dismiss("approve")

    @on(Button.Pressed, "#reject")
    def action_reject(self) -> None:
        if self._pending:
            self.dismiss("reject")
