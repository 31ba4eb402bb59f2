"""The rules analyst: deterministic, explains its numbers, streams, respects the limits."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from perun_tui.config import RiskSettings
from perun_tui.features import compute_features
from perun_tui.llm.base import (
    AnalysisContext,
    AnalysisResult,
    Analyst,
    ProposedSignal,
    SymbolFeatures,
    SymbolLimits,
)
from perun_tui.llm.rules import NO_PROMPT, RulesAnalyst
from perun_tui.models import Account, Action, Bar, Position, Quote
from perun_tui.services.risk import RiskInputs, RiskPolicy

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def feat(sym: str, **kw: Any) -> SymbolFeatures:
    base: dict[str, Any] = {
        "symbol": sym, "price": 100.0, "ret_1": 0.0, "ret_5": 0.0, "ret_20": 0.0,
        "sma_fast": 100.0, "sma_slow": 100.0, "trend_pct": 0.0, "zscore": 0.0, "rsi": 50.0,
        "volatility_pct": 0.5, "volume_ratio": 1.0, "spread_pct": 0.02, "bars": 60,
    }
    return SymbolFeatures(**{**base, **kw})


def lim(sym: str, *, held: float = 0.0, can_buy: bool = True, can_sell: bool | None = None,
        note: str = "") -> SymbolLimits:
    return SymbolLimits(symbol=sym, max_buy_qty=20.0 if can_buy else 0.0, held_qty=held,
                        can_buy=can_buy, can_sell=held > 0 if can_sell is None else can_sell,
                        note=note)


FEATURES = {
    # uptrend: SMA5 above SMA20 by 1.0 %, positive 5-bar return → buy
    "AAPL": feat("AAPL", price=231.42, sma_fast=231.2, sma_slow=228.9, trend_pct=1.0,
                 ret_5=0.8, rsi=61, zscore=1.2, volatility_pct=0.4),
    # flat → hold
    "MSFT": feat("MSFT", price=410.0, sma_fast=410.1, sma_slow=409.9, trend_pct=0.05,
                 ret_5=0.1, rsi=52, zscore=0.3),
    # oversold: z −2.5, RSI 25 → buy (mean reversion)
    "NVDA": feat("NVDA", price=120.0, sma_fast=121.0, sma_slow=121.3, trend_pct=-0.25,
                 ret_5=-1.5, rsi=25, zscore=-2.5, volatility_pct=1.0),
    # downtrend, held → sell
    "TSLA": feat("TSLA", price=180.0, sma_fast=178.0, sma_slow=181.0, trend_pct=-1.66,
                 ret_5=-2.0, rsi=35, zscore=-1.4),
    # uptrend, but the limits forbid buying
    "SPY": feat("SPY", price=500.0, sma_fast=505.0, sma_slow=500.0, trend_pct=1.0, ret_5=1.0,
                rsi=60, zscore=1.0),
    # downtrend, nothing held → no sell
    "AMD": feat("AMD", price=90.0, sma_fast=89.0, sma_slow=90.5, trend_pct=-1.66, ret_5=-2.0,
                rsi=38, zscore=-1.5),
    # overbought, held → sell (mean reversion)
    "META": feat("META", price=600.0, sma_fast=590.0, sma_slow=588.0, trend_pct=0.34,
                 ret_5=0.5, rsi=78, zscore=2.6),
}
LIMITS = {
    "AAPL": lim("AAPL"),
    "MSFT": lim("MSFT"),
    "NVDA": lim("NVDA"),
    "TSLA": lim("TSLA", held=10),
    "SPY": lim("SPY", can_buy=False, note="max open positions 5 reached"),
    "AMD": lim("AMD"),
    "META": lim("META", held=3),
}


def context(**kw: Any) -> AnalysisContext:
    base: dict[str, Any] = {
        "cycle": 7, "now": NOW, "mode": "sim", "symbols": list(FEATURES),
        "features": FEATURES, "limits": LIMITS, "cash": 50_000.0, "equity": 100_000.0,
        "buying_power": 50_000.0, "max_position_pct": 10.0, "min_confidence": 0.55,
    }
    return AnalysisContext(**{**base, **kw})


async def run(ctx: AnalysisContext, analyst: RulesAnalyst | None = None) -> (
    tuple[AnalysisResult, list[tuple[str, str]]]
):
    deltas: list[tuple[str, str]] = []
    a = analyst or RulesAnalyst()
    result = await a.analyze(ctx, lambda ch, text: deltas.append((ch, text)))
    return result, deltas


def by_symbol(result: AnalysisResult) -> dict[str, ProposedSignal]:
    return {s.symbol: s for s in result.signals}


async def test_protocol_and_health() -> None:
    a = RulesAnalyst()
    assert isinstance(a, Analyst)
    assert a.name == "rules"
    health = await a.check()
    assert health.ok and health.name == "rules"
    await a.close()
    await a.close()


async def test_fixed_context_gives_fixed_signals() -> None:
    result, _ = await run(context())
    sigs = by_symbol(result)
    assert [(s.symbol, s.action) for s in result.signals] == [
        ("AAPL", Action.BUY), ("NVDA", Action.BUY), ("TSLA", Action.SELL),
        ("META", Action.SELL),
    ]
    # confidence from the strength of the evidence
    # AAPL: 0.55 + 0.25 × (1.0 − 0.5)/1.5 + 0.10 × 0.8/3 = 0.66
    assert sigs["AAPL"].confidence == 0.66
    # NVDA: 0.55 + 0.20 × (2.5 − 2)/1.5 + 0.15 × (30 − 25)/20 = 0.654 → 0.65
    assert sigs["NVDA"].confidence == 0.65
    for s in result.signals:
        assert 0.5 <= s.confidence <= 0.95
    assert result.analyst == "rules"
    assert result.prompt == NO_PROMPT == "(rules analyst: no prompt)"
    assert result.error is None
    assert result.market_view

    again, _ = await run(context())
    assert again.model_dump() == result.model_dump()


async def test_rationale_names_the_numbers() -> None:
    result, _ = await run(context())
    sigs = by_symbol(result)
    r = sigs["AAPL"].rationale
    assert "SMA5 231.20 > SMA20 228.90 (+1.0%)" in r
    assert "5-bar return +0.8%" in r
    assert "RSI 61" in r
    assert "uptrend" in r
    n = sigs["NVDA"].rationale
    assert "oversold" in n and "z -2.5" in n and "RSI 25" in n
    assert "overbought" in sigs["META"].rationale and "RSI 78" in sigs["META"].rationale


async def test_stop_and_target() -> None:
    result, _ = await run(context())
    aapl = by_symbol(result)["AAPL"]
    # two volatilities (2 × 0.4 % of 231.42 = 1.85) is under the 1 % floor (2.31): the floor
    dist = max(2 * 231.42 * 0.4 / 100, 231.42 * 0.01)
    assert aapl.stop_loss == pytest.approx(round(231.42 - dist, 2))
    assert aapl.target_price == pytest.approx(round(231.42 + 2 * dist, 2))
    nvda = by_symbol(result)["NVDA"]
    assert nvda.stop_loss == pytest.approx(round(120 - 2 * 120 * 0.01, 2))  # 2 × 1 % vol
    for s in result.signals:
        if s.action is Action.BUY:
            assert s.stop_loss is not None and s.target_price is not None
            assert 0 < s.stop_loss < FEATURES[s.symbol].price < s.target_price


async def test_reasoning_is_streamed_line_by_line() -> None:
    result, deltas = await run(context())
    assert deltas, "nothing streamed"
    assert {ch for ch, _ in deltas} == {"content"}
    assert all(text.endswith("\n") for _, text in deltas)
    assert "".join(text for _, text in deltas) == result.reasoning
    lines = result.reasoning.splitlines()
    assert lines[0].startswith("### Rules analyst · cycle 7")
    for sym in FEATURES:
        assert sum(1 for line in lines if line.startswith(f"- **{sym}**")) == 1, sym
    assert lines[-1].startswith("**Summary:** 2 buys, 2 sells, 3 holds.")
    assert result.market_view in lines[-1]


async def test_limits_are_respected_and_said() -> None:
    result, _ = await run(context())
    syms = {s.symbol for s in result.signals}
    assert "SPY" not in syms  # can_buy false
    assert "AMD" not in syms  # nothing held, no shorting
    spy_line = next(line for line in result.reasoning.splitlines() if "**SPY**" in line)
    assert "not proposed" in spy_line and "max open positions 5 reached" in spy_line
    amd_line = next(line for line in result.reasoning.splitlines() if "**AMD**" in line)
    assert "nothing held" in amd_line
    assert any(d.startswith("SPY buy") for d in result.dropped)
    assert any(d.startswith("AMD sell") for d in result.dropped)

    # can_sell false on a held symbol (e.g. a cooldown) blocks the sell too
    limits = {**LIMITS, "TSLA": lim("TSLA", held=10, can_sell=False, note="cooldown 20 min left")}
    result, _ = await run(context(limits=limits))
    assert "TSLA" not in {s.symbol for s in result.signals}
    assert "cooldown 20 min left" in result.reasoning


async def test_holds_are_not_emitted() -> None:
    result, _ = await run(context())
    assert all(s.action is not Action.HOLD for s in result.signals)
    assert "MSFT" not in {s.symbol for s in result.signals}
    msft = next(line for line in result.reasoning.splitlines() if "**MSFT**" in line)
    assert "hold" in msft and "no clear signal" in msft
    # a symbol without features is a hold, not an error
    result, _ = await run(context(symbols=["AAPL", "XYZ"]))
    assert [s.symbol for s in result.signals] == ["AAPL"]
    assert "**XYZ** hold — no market data" in result.reasoning


async def test_raw_reply_is_the_json_of_the_signals() -> None:
    result, _ = await run(context())
    data = json.loads(result.raw_reply)
    assert data["market_view"] == result.market_view
    assert [ProposedSignal.model_validate(s) for s in data["signals"]] == result.signals


async def test_conflicting_evidence_holds() -> None:
    # a strong uptrend that is also overbought: the two rules disagree
    f = feat("AAPL", trend_pct=2.0, ret_5=3.0, zscore=2.5, rsi=80)
    result, _ = await run(context(symbols=["AAPL"], features={"AAPL": f},
                                  limits={"AAPL": lim("AAPL", held=5)}))
    assert result.signals == []
    assert "disagree" in result.reasoning


async def test_agreeing_evidence_is_stronger_and_clipped() -> None:
    strong = feat("AAPL", trend_pct=5.0, ret_5=6.0, zscore=-3.0, rsi=10, volume_ratio=2.0)
    result, _ = await run(context(symbols=["AAPL"], features={"AAPL": strong}))
    (s,) = result.signals
    assert s.confidence == 0.95
    assert "uptrend + oversold" in s.rationale and "volume 2.0x average" in s.rationale


async def test_below_min_confidence_is_not_proposed() -> None:
    weak = feat("AAPL", trend_pct=0.51, ret_5=0.01, sma_fast=100.5, sma_slow=100.0)
    result, _ = await run(context(symbols=["AAPL"], features={"AAPL": weak},
                                  min_confidence=0.6))
    assert result.signals == []
    assert "below min 0.60" in result.reasoning
    result, _ = await run(context(symbols=["AAPL"], features={"AAPL": weak}))
    assert [s.symbol for s in result.signals] == ["AAPL"]


async def test_short_history_holds() -> None:
    f = feat("AAPL", trend_pct=3.0, ret_5=3.0, bars=3)
    result, _ = await run(context(symbols=["AAPL"], features={"AAPL": f}))
    assert result.signals == []
    assert "too little history (3 bars" in result.reasoning


async def test_end_to_end_with_features_and_risk() -> None:
    """Bars → features, account → limits, analyst → signals the risk policy approves."""
    t0 = NOW - timedelta(minutes=15 * 60)
    closes = [100 * (1.004 ** i) for i in range(60)]
    bars = [Bar(symbol="AAPL", ts=t0 + timedelta(minutes=15 * i), open=c, high=c, low=c,
                close=c, volume=1000) for i, c in enumerate(closes)]
    q = Quote(symbol="AAPL", ts=NOW, bid=closes[-1] - 0.01, ask=closes[-1] + 0.01,
              last=closes[-1])
    f = compute_features("AAPL", bars, q)
    policy = RiskPolicy(RiskSettings())
    inputs = RiskInputs(account=Account(cash=1e5, equity=1e5, buying_power=1e5),
                        positions={}, quote=q, now=NOW)
    limits = policy.limits_for("AAPL", inputs)
    ctx = context(symbols=["AAPL"], features={"AAPL": f}, limits={"AAPL": limits})
    result, _ = await run(ctx)
    (s,) = result.signals
    assert s.action is Action.BUY
    assert policy.validate(s, {"AAPL"}) is None
    d = policy.size(s.action, s.symbol, s.confidence, s.stop_loss, inputs)
    assert d.approved and d.qty > 0 and math.isfinite(d.notional)

    # the same position held, price falling: the analyst proposes to sell it all
    falling = [c for c in reversed(closes)]
    bars = [b.model_copy(update={"close": c}) for b, c in zip(bars, falling, strict=True)]
    q = q.model_copy(update={"bid": falling[-1], "ask": falling[-1], "last": falling[-1]})
    held = {"AAPL": Position(symbol="AAPL", qty=12, avg_price=110, market_price=falling[-1])}
    inputs = RiskInputs(account=Account(cash=1e5, equity=1e5, buying_power=1e5),
                        positions=held, quote=q, now=NOW)
    f = compute_features("AAPL", bars, q)
    ctx = context(symbols=["AAPL"], features={"AAPL": f},
                  limits={"AAPL": policy.limits_for("AAPL", inputs)})
    result, _ = await run(ctx)
    (s,) = result.signals
    assert s.action is Action.SELL
    d = policy.size(s.action, s.symbol, s.confidence, s.stop_loss, inputs)
    assert d.approved and d.qty == 12
