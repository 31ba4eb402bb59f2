"""Market panel: one row per symbol; a tick repaints only its symbol's line.

The trend column is a sparkline of bar closes (one point per ``bar_minutes``, the
trading cycle's bar size; the newest point follows the live price), and the change is
against the previous session's close. Both are seeded from the daemon's bar window once
it has one, so a restart does not start from a flat line at +0.0%.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property

from textual.app import ComposeResult
from textual.containers import Vertical

from perun_tui.models import Bar, Quote
from perun_tui.tui.format import ET, money, signed_pct, sparkline
from perun_tui.tui.widgets.line_table import LineTable
from perun_tui.tui.widgets.tones import sign_tone, tone

HISTORY = 48
VOLUME_WINDOW = 20
_COLUMNS = (("Symbol", "sym"), ("Last", "last"), ("Chg", "chg"), ("Trend", "trend"),
            ("Vol", "vol"))


def _session(at: datetime) -> date:
    return at.astimezone(ET).date()


@dataclass(slots=True)
class SymbolState:
    """What the panel remembers per symbol to draw change, trend and relative volume."""

    bar_s: float = 900.0
    last: float = 0.0
    reference: float = 0.0  # the previous session's close (or the session's first price)
    session: date | None = None
    prices: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    bucket: int | None = None  # the bar period the newest price belongs to
    first_bucket: int | None = None  # ... and the oldest one seen live
    volumes: deque[float] = field(default_factory=lambda: deque(maxlen=VOLUME_WINDOW))
    last_ts: datetime | None = None

    def _bucket(self, at: datetime) -> int:
        return int(at.timestamp() // self.bar_s)

    def add(self, quote: Quote) -> None:
        day = _session(quote.ts)
        if self.session != day:
            # a new session: change is against the last price of the previous one
            self.reference = self.last if self.session is not None and self.last else quote.last
            self.session = day
        bucket = self._bucket(quote.ts)
        if bucket == self.bucket and self.prices:
            self.prices[-1] = quote.last  # the bar in progress follows the price
        else:
            self.prices.append(quote.last)
            self.bucket = bucket
            if self.first_bucket is None:
                self.first_bucket = bucket
        if quote.ts != self.last_ts and quote.volume > 0:
            self.volumes.append(quote.volume)
        self.last_ts = quote.ts
        self.last = quote.last

    def seed(self, bars: Sequence[Bar]) -> None:
        """Put ``bars`` (oldest first) before what was seen live; the previous session's
        close becomes the reference when the bars reach back to it (else the first
        bar's open: the change since the window began)."""
        if not bars:
            return
        live = list(self.prices)
        first_live = self.first_bucket
        older = [b for b in bars if first_live is None or self._bucket(b.ts) < first_live]
        self.prices.clear()
        self.prices.extend(b.close for b in older)
        self.prices.extend(live)
        if not live:
            self.bucket = self.first_bucket = self._bucket(bars[-1].ts)
            self.last = bars[-1].close
        today = self.session or _session(bars[-1].ts)
        before = [b for b in bars if _session(b.ts) < today]
        self.reference = before[-1].close if before else bars[0].open
        self.session = today

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
    """Last price, change since the previous close, a sparkline, volume vs average."""

    BORDER_TITLE = "Market"

    def __init__(
        self, symbols: list[str], *, bar_minutes: int = 15, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self._symbols = list(symbols)
        self._bar_s = bar_minutes * 60.0
        self._state: dict[str, SymbolState] = {}
        self._compact = False
        self.seeded = False

    def compose(self) -> ComposeResult:
        yield LineTable(right=("last", "chg", "vol"), id="market-table")

    @cached_property  # one query: the widget is composed once
    def table(self) -> LineTable:
        return self.query_one("#market-table", LineTable)

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
        columns = [c for c in _COLUMNS if not (self._compact and c[1] == "vol")]
        self.table.reset(columns, {"trend": self.spark_width})
        for sym in self._symbols:
            self._paint(sym)

    def _state_for(self, sym: str) -> SymbolState:
        state = self._state.get(sym)
        if state is None:
            state = self._state[sym] = SymbolState(bar_s=self._bar_s)
            if sym not in self._symbols:
                self._symbols.append(sym)
        return state

    def update_quotes(self, quotes: Mapping[str, Quote]) -> None:
        for sym, quote in quotes.items():
            self._state_for(sym).add(quote)
            self._paint(sym)

    def seed(self, bars: Mapping[str, Sequence[Bar]]) -> None:
        """Recent history (the daemon's bar window): sparklines and previous closes."""
        for sym, series in bars.items():
            if series:
                self._state_for(sym).seed(series)
                self._paint(sym)
                self.seeded = True

    def _paint(self, sym: str) -> None:
        state = self._state.get(sym)
        if state is None:
            cells = {"sym": (sym, ""), "last": ("–", ""), "chg": ("", ""),
                     "trend": ("", ""), "vol": ("", "")}
        else:
            chg = state.change_pct
            chg_tone = sign_tone(self, chg)
            ratio = state.volume_ratio
            vol_tone = tone(self, "warning") if ratio is not None and ratio >= 2 else ""
            cells = {
                "sym": (sym, ""),
                "last": (money(state.last), ""),
                "chg": (signed_pct(chg), chg_tone),
                "trend": (sparkline(state.prices, self.spark_width), tone(self, "accent")),
                "vol": (f"{ratio:.1f}x" if ratio is not None else "–", vol_tone),
            }
        self.table.write_row(sym, cells)
