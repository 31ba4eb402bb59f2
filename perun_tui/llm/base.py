"""The Analyst contract (Ollama and the rules analyst implement it) and what it sees.

The analyst gets an ``AnalysisContext`` — features per symbol, the account, limits
pre-computed in code, and recalled memory — and returns an ``AnalysisResult``. It never
raises for a bad model reply: the result carries ``error`` instead, and then no signals.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from perun_tui.events import AnalysisFinished
from perun_tui.models import Action

DeltaCallback = Callable[[str, str], None]
"""``on_delta(channel, text)`` where channel is ``"thinking"`` or ``"content"``."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SymbolFeatures(_Model):
    """What the analyst knows about one symbol, computed from bars and quotes."""

    symbol: str
    price: float
    ret_1: float  # % return over the last bar
    ret_5: float  # % over 5 bars
    ret_20: float  # % over 20 bars
    sma_fast: float
    sma_slow: float
    trend_pct: float  # (fast / slow - 1) in %
    zscore: float  # (price - mean20) / std20: mean-reversion pressure
    rsi: float  # 0..100
    volatility_pct: float  # std of 1-bar returns over 20 bars, in %
    volume_ratio: float  # last volume / average volume
    spread_pct: float
    bars: int  # how many bars the features were computed from


class SymbolLimits(_Model):
    """Computed in code so the model chooses within them."""

    symbol: str
    max_buy_qty: float
    held_qty: float
    can_buy: bool
    can_sell: bool
    position_pl_pct: float = 0.0
    note: str = ""  # e.g. "cooldown 35 min", "max open positions reached"


class RecalledSignal(_Model):
    """One past signal with what became of it."""

    cycle: int
    at: datetime
    symbol: str
    action: Action
    confidence: float
    status: str
    price: float
    outcome_pct: float | None = None  # price move since, signed for the action


class AnalysisContext(_Model):
    cycle: int
    now: datetime
    mode: str
    symbols: list[str]
    features: dict[str, SymbolFeatures]
    limits: dict[str, SymbolLimits]
    cash: float
    equity: float
    buying_power: float
    max_position_pct: float
    min_confidence: float
    memory: dict[str, list[RecalledSignal]] = Field(default_factory=dict)
    market_note: str = ""


class ProposedSignal(_Model):
    symbol: str
    action: Action
    confidence: float
    rationale: str
    target_price: float | None = None
    stop_loss: float | None = None


class DroppedIdea(_Model):
    """An idea the analyst had but did not propose because the limits rule it out
    (cooldown, position size, nothing to sell, below risk.min_confidence). Kept with its
    confidence so it is stored as a refused signal and scored like any other."""

    symbol: str
    action: Action
    confidence: float
    reason: str
    rationale: str = ""


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    load_ms: float = 0.0
    total_ms: float = 0.0
    tokens_per_s: float = 0.0


class AnalysisResult(_Model):
    analyst: str
    signals: list[ProposedSignal] = Field(default_factory=list)
    market_view: str = ""
    prompt: str = ""
    raw_reply: str = ""
    reasoning: str = ""
    usage: Usage | None = None
    error: str | None = None
    dropped: list[str] = Field(default_factory=list)  # ideas dropped, each with why
    dropped_ideas: list[DroppedIdea] = Field(default_factory=list)  # the same, scorable
    attempts: int = 1

    def finished(self, cycle: int, elapsed_s: float) -> AnalysisFinished:
        """The bus event that reports this result, with its usage figures."""
        u = self.usage
        return AnalysisFinished(
            cycle=cycle,
            analyst=self.analyst,
            market_view=self.market_view,
            signals=len(self.signals),
            elapsed_s=elapsed_s,
            tokens=u.prompt_tokens + u.completion_tokens if u else None,
            error=self.error,
            prompt_tokens=u.prompt_tokens if u else None,
            completion_tokens=u.completion_tokens if u else None,
            load_ms=u.load_ms if u else None,
            tokens_per_s=u.tokens_per_s if u else None,
        )


class AnalystHealth(_Model):
    ok: bool
    name: str  # what to show in the header: model name or "rules"
    detail: str = ""  # what is wrong and what to do
    missing_model: bool = False


@runtime_checkable
class Analyst(Protocol):
    name: str

    async def check(self) -> AnalystHealth:
        """Cheap availability check (server reachable, model present)."""
        ...

    async def analyze(
        self, context: AnalysisContext, on_delta: DeltaCallback
    ) -> AnalysisResult: ...

    async def close(self) -> None: ...
