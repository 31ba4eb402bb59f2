"""Portfolio panel: account summary, positions (diffed by symbol) and open orders."""

from __future__ import annotations

from functools import cached_property

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from perun_tui.events import PortfolioUpdated
from perun_tui.models import Order, Position
from perun_tui.tui.format import money, qty, signed_money, signed_pct
from perun_tui.tui.widgets.table import CellTable
from perun_tui.tui.widgets.tones import sign_tone

_COLUMNS = (
    ("Symbol", "sym"),
    ("Qty", "qty"),
    ("Avg", "avg"),
    ("Value", "value"),
    ("P&L", "pl"),
    ("P&L %", "plpct"),
)
_COMPACT = frozenset({"sym", "qty", "avg", "pl"})


class PortfolioPanel(Vertical):
    BORDER_TITLE = "Portfolio"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._positions: dict[str, Position] = {}
        self._compact = False
        self._last: PortfolioUpdated | None = None
        self._statics: dict[str, tuple[str, tuple[tuple[int, int, str], ...]]] = {}

    def compose(self) -> ComposeResult:
        yield Static("waiting for the account…", id="account")
        table = CellTable(
            right=("qty", "avg", "value", "pl", "plpct"), id="positions", cursor_type="none"
        )
        table.can_focus = False
        yield table
        yield Static("", id="orders")

    @cached_property  # one query: the widget is composed once
    def table(self) -> CellTable:
        return self.query_one("#positions", CellTable)

    def on_mount(self) -> None:
        self._build()

    def set_compact(self, compact: bool) -> None:
        if compact != self._compact:
            self._compact = compact
            self._build()
            if self._last is not None:
                self.update_portfolio(self._last)

    def _build(self) -> None:
        self._positions.clear()
        self.table.reset(c for c in _COLUMNS if not self._compact or c[1] in _COMPACT)

    def update_portfolio(self, event: PortfolioUpdated) -> None:
        self._last = event
        a = event.account
        day = a.day_pl
        day_style = sign_tone(self, day)
        places = 0 if self._compact else 2
        summary = Text()
        summary.append("equity ", style="dim")
        summary.append(money(a.equity, places))
        summary.append("  day ", style="dim")
        summary.append(f"{signed_money(day)} ({signed_pct(a.day_pl_pct, 2)})", style=day_style)
        summary.append("\ncash ", style="dim")
        summary.append(money(a.cash, places))
        summary.append("  buying power ", style="dim")
        summary.append(money(a.buying_power, places))
        self._update_static("account", summary)
        self._update_positions(event.positions)
        self._update_orders(event.open_orders)

    def _update_positions(self, positions: list[Position]) -> None:
        table = self.table
        incoming = {p.symbol: p for p in positions if p.qty != 0}
        for sym in [s for s in self._positions if s not in incoming]:
            table.drop_row(sym)
            del self._positions[sym]
        for sym, pos in sorted(incoming.items()):
            self._positions[sym] = pos
            pl = pos.unrealized_pl
            pl_tone = sign_tone(self, pl)
            table.write_row(sym, {
                "sym": (sym, ""),
                "qty": (qty(pos.qty), ""),
                "avg": (money(pos.avg_price), ""),
                "value": (money(pos.market_value), ""),
                "pl": (signed_money(pl), pl_tone),
                "plpct": (signed_pct(pos.unrealized_pl_pct), pl_tone),
            })

    def _update_orders(self, orders: list[Order]) -> None:
        if not orders:
            self._update_static("orders", Text("no open orders", style="dim"))
            return
        parts: list[str] = []
        for o in orders:
            size = qty(o.qty) if o.qty is not None else f"${money(o.notional or 0, 0)}"
            px = f" @ {money(o.limit_price)}" if o.limit_price else ""
            ext = " external" if o.external else ""  # at the broker, not placed by Perun
            parts.append(f"{o.side.value.upper()} {o.symbol} {size}{px} {o.status.value}{ext}")
        text = Text(f"open orders ({len(orders)}): ", style="dim")
        text.append(" · ".join(parts))
        self._update_static("orders", text)

    def _update_static(self, widget_id: str, text: Text) -> None:
        """Only touch a Static when its content changed, and lay the screen out again
        only when its height may change: a different number of lines, or a line that no
        longer fits (wraps)."""
        stamp = (text.plain, tuple((sp.start, sp.end, str(sp.style)) for sp in text.spans))
        old = self._statics.get(widget_id)
        if old == stamp:
            return
        self._statics[widget_id] = stamp
        static = self.query_one(f"#{widget_id}", Static)
        width = static.content_region.width
        lines = text.plain.split("\n")
        same_height = (
            old is not None
            and width > 0
            and len(lines) == len(old[0].split("\n"))
            and all(cell_len(line) <= width for line in lines + old[0].split("\n"))
        )
        static.update(text, layout=not same_height)

    @property
    def positions(self) -> dict[str, Position]:
        return dict(self._positions)
