"""The built-in rules analyst: deterministic, offline, always available.

It is the fallback when Ollama is unreachable and the analyst the whole cycle is tested
with, so it behaves like an LLM analyst in every visible way — it streams a short markdown
report through ``on_delta`` and returns an ``AnalysisResult`` — while its decisions are a
plain function of the features:

* trend following: fast SMA above the slow one by more than ``trend_threshold_pct`` with
  a positive 5-bar return → buy; the mirror image → sell (only what is held);
* mean reversion: z-score below −``z_entry`` with RSI below ``rsi_low`` → buy; z above
  ``z_entry`` with RSI above ``rsi_high`` → sell (only what is held);
* both agreeing strengthen the idea; disagreeing cancel out (hold).

Confidence grows with the strength of the evidence and is clipped to [0.5, 0.95]. Ideas
the pre-computed limits rule out (``can_buy``/``can_sell`` false) or below the minimum
confidence are not proposed; the report says why. Holds are never emitted as signals.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from perun_tui.llm.base import (
    AnalysisContext,
    AnalysisResult,
    AnalystHealth,
    DeltaCallback,
    DroppedIdea,
    ProposedSignal,
    SymbolFeatures,
    SymbolLimits,
)
from perun_tui.models import Action

CONF_MIN = 0.5
CONF_MAX = 0.95
NO_PROMPT = "(rules analyst: no prompt)"
YIELD_EVERY_S = 0.002  # without a stream delay, give the event loop a turn this often


@dataclass(frozen=True, slots=True)
class _Idea:
    action: Action  # HOLD when there is nothing to do
    confidence: float
    evidence: str  # the numbers behind it, for the rationale
    why_hold: str = ""


def _clip(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def _pct(x: float) -> str:
    return f"{x:+.1f}%"


class RulesAnalyst:
    """Trend following blended with mean reversion; see the module docstring."""

    name = "rules"

    def __init__(
        self,
        *,
        trend_threshold_pct: float = 0.5,
        z_entry: float = 2.0,
        rsi_low: float = 30.0,
        rsi_high: float = 70.0,
        min_bars: int = 6,
        allow_short: bool = False,
        stream_delay_s: float = 0.0,
    ) -> None:
        self.trend_threshold_pct = trend_threshold_pct
        self.z_entry = z_entry
        self.rsi_low = rsi_low
        self.rsi_high = rsi_high
        self.min_bars = min_bars
        self.allow_short = allow_short  # propose sells of symbols not held (if can_sell)
        self.stream_delay_s = stream_delay_s  # pause between streamed lines (demo pacing)

    async def check(self) -> AnalystHealth:
        return AnalystHealth(ok=True, name=self.name, detail="built-in rules analyst")

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------------ the rules

    def _numbers(self, f: SymbolFeatures) -> str:
        rel = ">" if f.sma_fast > f.sma_slow else "<" if f.sma_fast < f.sma_slow else "="
        return (
            f"SMA5 {f.sma_fast:.2f} {rel} SMA20 {f.sma_slow:.2f} ({_pct(f.trend_pct)}), "
            f"5-bar return {_pct(f.ret_5)}, RSI {f.rsi:.0f}, z {f.zscore:+.1f}"
        )

    def evaluate(self, f: SymbolFeatures) -> _Idea:
        """The idea for one symbol, before limits: a pure function of its features."""
        numbers = self._numbers(f)
        if f.bars < self.min_bars or f.price <= 0:
            return _Idea(Action.HOLD, 0.0, numbers,
                         f"too little history ({f.bars} bars, need {self.min_bars})")
        thr = self.trend_threshold_pct

        trend_dir = 0
        trend_conf = 0.0
        if f.trend_pct > thr and f.ret_5 > 0:
            trend_dir = 1
        elif f.trend_pct < -thr and f.ret_5 < 0:
            trend_dir = -1
        if trend_dir:
            strength = _clip((abs(f.trend_pct) - thr) / (3 * thr), 0.0, 1.0)
            momentum = _clip(abs(f.ret_5) / 3.0, 0.0, 1.0)
            trend_conf = 0.55 + 0.25 * strength + 0.10 * momentum

        rev_dir = 0
        rev_conf = 0.0
        if f.zscore < -self.z_entry and f.rsi < self.rsi_low:
            rev_dir = 1
            rsi_strength = _clip((self.rsi_low - f.rsi) / 20.0, 0.0, 1.0)
        elif f.zscore > self.z_entry and f.rsi > self.rsi_high:
            rev_dir = -1
            rsi_strength = _clip((f.rsi - self.rsi_high) / 20.0, 0.0, 1.0)
        if rev_dir:
            z_strength = _clip((abs(f.zscore) - self.z_entry) / 1.5, 0.0, 1.0)
            rev_conf = 0.55 + 0.20 * z_strength + 0.15 * rsi_strength

        if trend_dir and rev_dir and trend_dir != rev_dir:
            return _Idea(Action.HOLD, 0.0, numbers,
                         "trend and mean reversion disagree")
        if not trend_dir and not rev_dir:
            return _Idea(Action.HOLD, 0.0, numbers,
                         f"no clear signal (trend threshold ±{thr:g}%, "
                         f"|z| > {self.z_entry:g} with RSI {self.rsi_low:g}/{self.rsi_high:g})")

        direction = trend_dir or rev_dir
        kinds = []
        if trend_dir:
            kinds.append("uptrend" if direction > 0 else "downtrend")
        if rev_dir:
            kinds.append("oversold" if direction > 0 else "overbought")
        conf = max(trend_conf, rev_conf)
        if trend_dir and rev_dir:
            conf += 0.05  # two independent reasons agree
        evidence = f"{' + '.join(kinds)}: {numbers}"
        if f.volume_ratio >= 1.5:
            conf += 0.03
            evidence += f", volume {f.volume_ratio:.1f}x average"
        conf = round(_clip(conf, CONF_MIN, CONF_MAX), 2)
        return _Idea(Action.BUY if direction > 0 else Action.SELL, conf, evidence)

    @staticmethod
    def levels(f: SymbolFeatures, action: Action) -> tuple[float | None, float | None]:
        """(stop_loss, target) two volatilities away, at least 1% of the price."""
        dist = max(2 * f.price * f.volatility_pct / 100.0, f.price * 0.01)
        dist = min(dist, f.price * 0.5)
        if action is Action.BUY:
            return round(f.price - dist, 2), round(f.price + 2 * dist, 2)
        return round(f.price + dist, 2), round(f.price - 2 * dist, 2)

    # ------------------------------------------------------------------ analyze

    def _market_view(self, feats: list[SymbolFeatures]) -> str:
        if not feats:
            return "no market data"
        up = sum(1 for f in feats if f.trend_pct > 0)
        avg5 = sum(f.ret_5 for f in feats) / len(feats)
        if up * 3 >= len(feats) * 2 and avg5 > 0:
            tone = "broadly up"
        elif up * 3 <= len(feats) and avg5 < 0:
            tone = "broadly down"
        else:
            tone = "mixed"
        return (f"{tone}: {up} of {len(feats)} symbols with SMA5 above SMA20, "
                f"average 5-bar return {_pct(avg5)}")

    async def analyze(self, context: AnalysisContext, on_delta: DeltaCallback) -> (
        AnalysisResult
    ):
        lines: list[str] = []
        last_yield = time.perf_counter()

        async def emit(line: str) -> None:
            nonlocal last_yield
            lines.append(line)
            on_delta("content", line + "\n")
            if self.stream_delay_s > 0:
                await asyncio.sleep(self.stream_delay_s)
            elif time.perf_counter() - last_yield >= YIELD_EVERY_S:
                # let the loop run (screen, cancellation) now and then; a turn per line
                # would cost more than the line
                await asyncio.sleep(0)
                last_yield = time.perf_counter()

        signals: list[ProposedSignal] = []
        ideas: list[DroppedIdea] = []
        holds = 0
        feats: list[SymbolFeatures] = []
        await emit(f"### Rules analyst · cycle {context.cycle}")
        for sym in context.symbols:
            f = context.features.get(sym)
            if f is None:
                holds += 1
                await emit(f"- **{sym}** hold — no market data")
                continue
            feats.append(f)
            idea = self.evaluate(f)
            if idea.action is Action.HOLD:
                holds += 1
                await emit(f"- **{sym}** hold — {idea.why_hold}; {idea.evidence}")
                continue
            lim = context.limits.get(sym) or SymbolLimits(
                symbol=sym, max_buy_qty=0.0, held_qty=0.0, can_buy=True, can_sell=False)
            verb = idea.action.value.upper()
            blocked = self._blocked(idea.action, lim)
            if blocked:
                holds += 1
                ideas.append(DroppedIdea(symbol=sym, action=idea.action, reason=blocked,
                                         confidence=idea.confidence, rationale=idea.evidence))
                await emit(f"- **{sym}** {verb} idea ({idea.confidence:.2f}) not proposed — "
                           f"{blocked}; {idea.evidence}")
                continue
            if idea.confidence < context.min_confidence:
                holds += 1
                why = (f"confidence {idea.confidence:.2f} below min "
                       f"{context.min_confidence:.2f}")
                ideas.append(DroppedIdea(symbol=sym, action=idea.action, reason=why,
                                         confidence=idea.confidence, rationale=idea.evidence))
                await emit(f"- **{sym}** {verb} idea not proposed — {why}; {idea.evidence}")
                continue
            stop, target = self.levels(f, idea.action)
            if idea.action is Action.SELL and lim.held_qty > 0:
                stop = target = None  # closing a long: no levels to manage
            signals.append(ProposedSignal(
                symbol=sym, action=idea.action, confidence=idea.confidence,
                rationale=idea.evidence, stop_loss=stop, target_price=target))
            levels = (f"stop {stop:.2f}, target {target:.2f}; "
                      if stop is not None and target is not None else "")
            await emit(f"- **{sym}** {verb} {idea.confidence:.2f} — {levels}{idea.evidence}")

        view = self._market_view(feats)
        buys = sum(1 for s in signals if s.action is Action.BUY)
        sells = len(signals) - buys
        await emit("")
        await emit(f"**Summary:** {buys} buy{'s' * (buys != 1)}, "
                   f"{sells} sell{'s' * (sells != 1)}, {holds} hold{'s' * (holds != 1)}. "
                   f"Market {view}.")
        raw = json.dumps(
            {"market_view": view, "signals": [s.model_dump(mode="json") for s in signals]},
            ensure_ascii=False,
        )
        return AnalysisResult(
            analyst=self.name,
            signals=signals,
            market_view=view,
            prompt=NO_PROMPT,
            raw_reply=raw,
            reasoning="\n".join(lines) + "\n",
            dropped=[f"{i.symbol} {i.action.value}: {i.reason}" for i in ideas],
            dropped_ideas=ideas,
        )

    def _blocked(self, action: Action, lim: SymbolLimits) -> str:
        """Why the limits rule an idea out, or "" when it may be proposed."""
        if action is Action.BUY:
            if not lim.can_buy:
                return f"cannot buy ({lim.note or 'limits'})"
            return ""
        if lim.held_qty <= 0 and not self.allow_short:
            return "bearish, but nothing held to sell (no shorting)"
        if not lim.can_sell:
            return f"cannot sell ({lim.note or 'limits'})"
        return ""
