"""The bus vocabulary: one class per event.

Two kinds of event travel on the bus:

* **state** events describe "the latest value of X" (a quote, the portfolio, the
  daemon state, a chunk of reasoning). A slow subscriber may see them coalesced: only
  the newest per ``coalesce_key`` survives, or — for text deltas — they are merged.
* **record** events describe something that happened (a signal changed status, an order
  filled, an error). They are never dropped or merged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel

from perun_tui.models import (
    Account,
    CycleReport,
    Fill,
    MarketClock,
    Order,
    OrderStatus,
    PerformanceMetrics,
    Position,
    Quote,
    Signal,
    SignalStatus,
    SignalTransition,
)

RATIONALE_CHARS = 160  # of the analyst's rationale, on a signal's first line


class DaemonState(StrEnum):
    STARTING = "starting"
    RECONCILING = "reconciling"
    WAITING = "waiting"
    CYCLING = "cycling"
    PAUSED = "paused"
    HALTED = "halted"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Level(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(slots=True)
class Event:
    """Base class. ``coalesce_key`` is None for record events."""

    STATE: ClassVar[bool] = False

    def coalesce_key(self) -> object | None:
        return None

    def merge(self, newer: Event) -> Event:
        """Combine with a newer event of the same key; default: keep the newer."""
        return newer

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.kind}
        for f in dataclasses.fields(self):
            out[f.name] = _plain(getattr(self, f.name))
        return out

    def describe(self) -> str:
        """One readable line, for the headless runner and the log panel."""
        return self.kind


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _money(x: float) -> str:
    return f"{x:,.2f}"


# --------------------------------------------------------------------------- state events


@dataclass(slots=True)
class QuotesUpdated(Event):
    """Latest quotes; merged per symbol when coalesced."""

    STATE: ClassVar[bool] = True
    quotes: dict[str, Quote]

    def coalesce_key(self) -> object:
        return "quotes"

    def merge(self, newer: Event) -> Event:
        assert isinstance(newer, QuotesUpdated)
        return QuotesUpdated(quotes={**self.quotes, **newer.quotes})

    def describe(self) -> str:
        return "quotes " + "  ".join(f"{s} {q.last:.2f}" for s, q in self.quotes.items())


@dataclass(slots=True)
class PortfolioUpdated(Event):
    STATE: ClassVar[bool] = True
    account: Account
    positions: list[Position]
    open_orders: list[Order]

    def coalesce_key(self) -> object:
        return "portfolio"

    def describe(self) -> str:
        a = self.account
        return (
            f"portfolio equity {_money(a.equity)} cash {_money(a.cash)} "
            f"positions {len(self.positions)} open orders {len(self.open_orders)}"
        )


@dataclass(slots=True)
class DaemonStateChanged(Event):
    STATE: ClassVar[bool] = True
    state: DaemonState
    reason: str = ""

    def coalesce_key(self) -> object:
        return "daemon_state"

    def describe(self) -> str:
        return f"state {self.state.value}" + (f" ({self.reason})" if self.reason else "")


@dataclass(slots=True)
class ScheduleUpdated(Event):
    """When the next cycle runs and how the market stands."""

    STATE: ClassVar[bool] = True
    next_cycle_at: datetime | None
    now: datetime
    market: MarketClock | None = None

    def coalesce_key(self) -> object:
        return "schedule"

    def describe(self) -> str:
        nxt = self.next_cycle_at.isoformat(timespec="minutes") if self.next_cycle_at else "-"
        return f"next cycle {nxt}"


@dataclass(slots=True)
class AnalystStatus(Event):
    """Which analyst is in use and whether the preferred one is available."""

    STATE: ClassVar[bool] = True
    name: str  # e.g. "qwen3:8b" or "rules"
    available: bool
    detail: str = ""  # e.g. "Ollama not reachable at http://…; using rules"
    missing_model: str = ""  # the configured model when the server lacks it (offer a pull)

    def coalesce_key(self) -> object:
        return "analyst"

    def describe(self) -> str:
        return f"analyst {self.name}" + (f" — {self.detail}" if self.detail else "")


@dataclass(slots=True)
class ReasoningDelta(Event):
    """Streamed analyst text; consecutive deltas of one cycle merge into one."""

    STATE: ClassVar[bool] = True
    cycle: int
    text: str
    channel: str = "content"  # "thinking" or "content"

    def coalesce_key(self) -> object:
        return ("reasoning", self.cycle, self.channel)

    def merge(self, newer: Event) -> Event:
        assert isinstance(newer, ReasoningDelta)
        return ReasoningDelta(cycle=self.cycle, text=self.text + newer.text, channel=self.channel)

    def describe(self) -> str:
        return f"reasoning[{self.cycle}] {self.text.strip()[:120]}"


# --------------------------------------------------------------------------- record events


@dataclass(slots=True)
class LogEvent(Event):
    level: Level
    message: str
    source: str = "daemon"

    def describe(self) -> str:
        return f"{self.level.value.upper():7} {self.message}"


@dataclass(slots=True)
class CycleStarted(Event):
    cycle: int
    at: datetime

    def describe(self) -> str:
        return f"cycle {self.cycle} started at {self.at.isoformat(timespec='seconds')}"


@dataclass(slots=True)
class CycleFinished(Event):
    report: CycleReport

    def describe(self) -> str:
        r = self.report
        if r.skipped:
            return f"cycle {r.cycle} skipped: {r.skipped}"
        errs = f", {len(r.errors)} error(s)" if r.errors else ""
        return (
            f"cycle {r.cycle} done in {r.duration_s:.2f}s: {r.signals} signal(s), "
            f"{r.refused} refused, {r.pending} pending, {r.submitted} submitted{errs}"
        )


@dataclass(slots=True)
class AnalysisStarted(Event):
    cycle: int
    analyst: str

    def describe(self) -> str:
        return f"analysis {self.cycle} by {self.analyst}"


@dataclass(slots=True)
class AnalysisFinished(Event):
    cycle: int
    analyst: str
    market_view: str
    signals: int
    elapsed_s: float
    tokens: int | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    load_ms: float | None = None
    tokens_per_s: float | None = None

    def usage_text(self) -> str:
        """``456 in / 63 out · load 48 ms · 45 tok/s``, or "" when the analyst has none."""
        if self.prompt_tokens is None or self.completion_tokens is None:
            return ""
        parts = [f"{self.prompt_tokens} in / {self.completion_tokens} out"]
        if self.load_ms:
            parts.append(f"load {self.load_ms:.0f} ms")
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:.0f} tok/s")
        return " · ".join(parts)

    def describe(self) -> str:
        if self.error:
            return f"analysis {self.cycle} FAILED ({self.analyst}): {self.error}"
        usage = self.usage_text()
        tok = f", {usage}" if usage else ""
        return (
            f"analysis {self.cycle} by {self.analyst}: {self.signals} idea(s) in "
            f"{self.elapsed_s:.1f}s{tok} — {self.market_view[:100]}"
        )


@dataclass(slots=True)
class SignalChanged(Event):
    signal: Signal
    transition: SignalTransition

    def describe(self) -> str:
        s, t = self.signal, self.transition
        size = f" {s.qty:g} sh ≈ ${s.notional:,.0f}" if s.qty else ""
        why = f" — {t.reason}" if t.reason else ""
        if t.old in (None, SignalStatus.PROPOSED) and s.rationale:
            # the first time a signal is shown, say why the analyst wants it
            rationale = " ".join(s.rationale.split())
            if len(rationale) > RATIONALE_CHARS:
                rationale = rationale[: RATIONALE_CHARS - 1] + "…"
            why += f" · “{rationale}”"
        return (
            f"signal {s.action.value.upper()} {s.symbol}{size} conf {s.confidence:.2f} "
            f"{t.new.value} (by {t.by}){why}"
        )


@dataclass(slots=True)
class OrderChanged(Event):
    order: Order

    def describe(self) -> str:
        o = self.order
        qty = f"{o.qty:g}" if o.qty is not None else f"${o.notional:,.2f}"
        px = f" @ {o.filled_avg_price:.2f}" if o.filled_avg_price else ""
        state = o.status.value
        if o.status is OrderStatus.FILLED:
            state += px
        elif o.filled_qty:
            state += f", {o.filled_qty:g} filled{px}"
        why = f" — {o.reason}" if o.reason else ""
        ext = "external " if o.external else ""  # at the broker, not placed by Perun
        return (
            f"{ext}order {o.side.value.upper()} {o.symbol} {qty} {state}"
            f" [{o.client_order_id}]{why}"
        )


@dataclass(slots=True)
class FillReceived(Event):
    fill: Fill

    def describe(self) -> str:
        f = self.fill
        return f"fill {f.side.value.upper()} {f.symbol} {f.qty:g} @ {f.price:.2f}"


@dataclass(slots=True)
class ErrorRaised(Event):
    """Something failed; ``message`` is short, ``detail`` says what to do."""

    where: str
    message: str
    detail: str = ""

    def describe(self) -> str:
        return f"ERROR in {self.where}: {self.message}" + (
            f" — {self.detail}" if self.detail else ""
        )


@dataclass(slots=True)
class Notification(Event):
    title: str
    message: str
    level: Level = Level.INFO
    tags: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        return f"notify [{self.level.value}] {self.title}: {self.message}"


@dataclass(slots=True)
class PerformanceUpdated(Event):
    metrics: PerformanceMetrics

    def describe(self) -> str:
        m = self.metrics
        return (
            f"performance equity {_money(m.equity)} realized {_money(m.realized_pl)} "
            f"unrealized {_money(m.unrealized_pl)} win rate {m.win_rate:.0%} "
            f"max drawdown {m.max_drawdown_pct:.2f}%"
        )


ALL_EVENTS: tuple[type[Event], ...] = (
    QuotesUpdated,
    PortfolioUpdated,
    DaemonStateChanged,
    ScheduleUpdated,
    AnalystStatus,
    ReasoningDelta,
    LogEvent,
    CycleStarted,
    CycleFinished,
    AnalysisStarted,
    AnalysisFinished,
    SignalChanged,
    OrderChanged,
    FillReceived,
    ErrorRaised,
    Notification,
    PerformanceUpdated,
)
