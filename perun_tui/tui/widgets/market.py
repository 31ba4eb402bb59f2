"""Market panel: one row per symbol, updated cell by cell as quotes arrive."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import date

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable

from perun_tui.models import Quote
from perun_tui.tui.format import ET, money, signed_pct, sparkline
from perun_tui.tui.widgets.tones import tone

HISTORY = 48
VOLUME_WINDOW = 20


@dataclass(slots=True)
class _SymbolState:
    """What the panel remembers per symbol to draw change, trend and relative volume."""

    last: float = 0.0
    reference: float = 0.0  # first price seen in the current session
    session: date | None = None
    prices: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    volumes: deque[float] = field(default_factory=lambda: deque(maxlen=VOLUME_WINDOW))
    last_ts: object = None

    def add(self, quote: Quote) -> None:
        day = quote.ts.astimezone(ET).date()
        if self.session != day:
            self.session = day
            self.reference = quote.last
        if quote.ts == self.last_ts and self.prices:
            self.prices[-1] = quote.last  # same bar re-sent: replace, do not append
        else:
            self.prices.append(quote.last)
            if quote.volume > 0:
                self.volumes.append(quote.volume)
        self.last_ts = quote.ts
        self.last = quote.last

    @property
    def change_pct(self) -> float:
        return (self.last / self.reference - 1) * 100 if self.reference else 0.0

    @property
    def volume_ratio(self) -> float | None:
        if len(self.volumes) < 2:
            return None
        avg = sum(self.volumes) / len(self.volumes)
        return self.volumes[-1] / avg if avg > 0 else None


class MarketPanel(Vertical):
    """Last price, change since the session's first quote, a sparkline, volume vs average."""

    BORDER_TITLE = "Market"

    def __init__(self, symbols: list[str], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._symbols = list(symbols)
        self._state: dict[str, _SymbolState] = {}
        self._cells: dict[tuple[str, str], str] = {}
        self._compact = False

    def compose(self) -> ComposeResult:
        table: DataTable[Text] = DataTable(
            id="market-table", cursor_type="none", zebra_stripes=False
        )
        table.can_focus = False
        yield table

    @property
    def table(self) -> DataTable[Text]:
        return self.query_one("#market-table", DataTable)

    def on_mount(self) -> None:
        self._build()

    def set_compact(self, compact: bool) -> None:
        if compact != self._compact:
            self._compact = compact
            self._build()

    @property
    def spark_width(self) -> int:
        return 8 if self._compact else 16

    def _build(self) -> None:
        """(Re)create columns and rows; only on mount and when the layout changes."""
        table = self.table
        table.clear(columns=True)
        self._cells.clear()
        table.add_column("Symbol", key="sym")
        table.add_column("Last", key="last")
        table.add_column("Chg", key="chg")
        table.add_column("Trend", key="trend", width=self.spark_width)
        if not self._compact:
            table.add_column("Vol", key="vol")
        for sym in self._symbols:
            table.add_row(*(Text("") for _ in table.columns), key=sym)
            self._paint(sym)

    def update_quotes(self, quotes: dict[str, Quote]) -> None:
        for sym, quote in quotes.items():
            state = self._state.get(sym)
            if state is None:
                state = self._state[sym] = _SymbolState()
            state.add(quote)
            if sym not in self._symbols:
                self._symbols.append(sym)
                self.table.add_row(*(Text("") for _ in self.table.columns), key=sym)
            self._paint(sym)

    def _paint(self, sym: str) -> None:
        """Write only the cells whose text changed (by row and column key)."""
        state = self._state.get(sym)
        if state is None:
            cells = {"sym": (sym, ""), "last": ("–", ""), "chg": ("", ""),
                     "trend": ("", ""), "vol": ("", "")}
        else:
            chg = state.change_pct
            chg_tone = tone(self, "success" if chg > 0 else "error" if chg < 0 else "")
            ratio = state.volume_ratio
            vol_tone = tone(self, "warning") if ratio is not None and ratio >= 2 else ""
            cells = {
                "sym": (sym, ""),
                "last": (money(state.last), ""),
                "chg": (signed_pct(chg), chg_tone),
                "trend": (sparkline(state.prices, self.spark_width), tone(self, "accent")),
                "vol": (f"{ratio:.1f}x" if ratio is not None else "–", vol_tone),
            }
        table = self.table
        for col, (text, style) in cells.items():
            if col not in table.columns:
                continue
            cache_key = (sym, col)
            stamp = f"{style}|{text}"
            previous = self._cells.get(cache_key)
            if previous == stamp:
                continue
            self._cells[cache_key] = stamp
            # widths only grow; re-measuring the table on every tick is what is costly
            wider = previous is None or len(stamp) > len(previous)
            right = col in ("last", "chg", "vol")
            table.update_cell(
                sym,
                col,
                Text(text, style=style, justify="right" if right else "left"),
                update_width=wider and col != "trend",
            )

    def last_price(self, sym: str) -> float | None:
        state = self._state.get(sym)
        return state.last if state is not None else None
