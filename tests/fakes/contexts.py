"""Deterministic ``AnalysisContext`` builders for analyst tests and ``bench/llm.py``."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from perun_tui.llm.base import AnalysisContext, RecalledSignal, SymbolFeatures, SymbolLimits
from perun_tui.models import Action

TICKERS: tuple[str, ...] = (
    "AAPL", "MSFT", "NVDA", "SPY", "AMZN", "GOOGL", "META", "TSLA", "AVGO", "JPM", "V", "UNH",
    "XOM", "MA", "JNJ", "PG", "HD", "COST", "MRK", "ABBV", "CVX", "PEP", "KO", "ADBE", "WMT",
    "CRM", "BAC", "NFLX", "AMD", "TMO", "LIN", "MCD", "ACN", "CSCO", "ABT", "ORCL", "DHR",
    "WFC", "INTC", "DIS", "TXN", "PM", "VZ", "CMCSA", "NKE", "NEE", "QCOM", "UPS", "RTX",
    "BRK.B",
)

NOW = datetime(2026, 3, 2, 15, 45, tzinfo=UTC)


def make_context(
    n: int = 4,
    *,
    seed: int = 7,
    held: dict[str, float] | None = None,
    memory_per_symbol: int = 3,
    symbols: list[str] | None = None,
) -> AnalysisContext:
    """A context for ``n`` symbols (the first ``n`` tickers, or ``symbols``).

    ``held`` maps symbols to shares held (default: the first symbol holds 40, so exactly
    one symbol can be sold). Every symbol can be bought. Each symbol gets
    ``memory_per_symbol`` recalled signals (most with an outcome).
    """
    rng = random.Random(seed)
    if symbols is not None:
        syms = symbols
    else:  # real tickers first, then made-up ones for large universes
        syms = list(TICKERS[:n]) + [f"Z{i:03d}" for i in range(max(0, n - len(TICKERS)))]
    holdings = held if held is not None else {syms[0]: 40.0}
    features: dict[str, SymbolFeatures] = {}
    limits: dict[str, SymbolLimits] = {}
    memory: dict[str, list[RecalledSignal]] = {}
    for i, sym in enumerate(syms):
        price = round(rng.uniform(20, 900), 2)
        fast = price * (1 + rng.uniform(-0.02, 0.02))
        slow = price * (1 + rng.uniform(-0.03, 0.03))
        features[sym] = SymbolFeatures(
            symbol=sym,
            price=price,
            ret_1=rng.gauss(0, 0.4),
            ret_5=rng.gauss(0, 1.2),
            ret_20=rng.gauss(0, 3.5),
            sma_fast=fast,
            sma_slow=slow,
            trend_pct=(fast / slow - 1) * 100,
            zscore=rng.gauss(0, 1.1),
            rsi=rng.uniform(20, 80),
            volatility_pct=rng.uniform(0.1, 1.5),
            volume_ratio=rng.uniform(0.4, 2.5),
            spread_pct=rng.uniform(0.005, 0.08),
            bars=60,
        )
        qty = holdings.get(sym, 0.0)
        limits[sym] = SymbolLimits(
            symbol=sym,
            max_buy_qty=float(int(10_000 / price)),
            held_qty=qty,
            can_buy=True,
            can_sell=qty > 0,
            position_pl_pct=round(rng.uniform(-4, 6), 2) if qty else 0.0,
            note="cooldown 35 min" if i == 2 else "",
        )
        memory[sym] = [
            RecalledSignal(
                cycle=10 - k * 3,
                at=NOW - timedelta(minutes=45 * (k + 1)),
                symbol=sym,
                action=rng.choice([Action.BUY, Action.SELL, Action.HOLD]),
                confidence=round(rng.uniform(0.4, 0.95), 2),
                status=rng.choice(["filled", "rejected", "expired", "refused"]),
                price=price * (1 + rng.uniform(-0.03, 0.03)),
                outcome_pct=None if k == 2 else round(rng.gauss(0, 1.5), 2),
            )
            for k in range(memory_per_symbol)
        ]
    return AnalysisContext(
        cycle=12,
        now=NOW,
        mode="sim",
        symbols=syms,
        features=features,
        limits=limits,
        cash=80_120.5,
        equity=101_234.75,
        buying_power=80_120.5,
        max_position_pct=10,
        min_confidence=0.55,
        memory=memory,
    )
