"""The risk policy: every rule at its boundary, and a property that no limit is ever exceeded."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from perun_tui.config import RiskSettings
from perun_tui.llm.base import ProposedSignal
from perun_tui.models import Account, Action, Position, Quote
from perun_tui.services.risk import (
    CHECK_BUYING_POWER,
    CHECK_ORDER_NOTIONAL,
    CHECK_POSITION_SIZE,
    CHECK_RISK_PER_TRADE,
    RiskDecision,
    RiskInputs,
    RiskPolicy,
    drift_pct,
    needs_human,
    reference_price,
)

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
SYM = "AAPL"

# caps loose enough that none binds unless a test tightens it
LOOSE: dict[str, Any] = {
    "max_position_pct": 100,
    "max_open_positions": 500,
    "max_order_notional": 1e12,
    "risk_per_trade_pct": 100,
    "default_stop_pct": 50,
    "min_confidence": 0.55,
    "daily_loss_limit_pct": 3,
    "cooldown_minutes": 60,
    "max_orders_per_cycle": 5,
    "max_quote_age_s": 900,
    "buying_power_reserve_pct": 0,  # exact boundaries; the reserve has its own test
}


def risk(**kw: Any) -> RiskSettings:
    return RiskSettings(**{**LOOSE, **kw})


def policy(**kw: Any) -> RiskPolicy:
    return RiskPolicy(risk(**kw))


def pos(qty: float, price: float = 100.0, sym: str = SYM) -> Position:
    return Position(symbol=sym, qty=qty, avg_price=price, market_price=price)


def inputs(
    *,
    price: float = 100.0,
    equity: float = 100_000.0,
    buying_power: float | None = None,
    positions: dict[str, Position] | None = None,
    quote_age_s: float = 1.0,
    quote: Quote | str | None = "default",
    **kw: Any,
) -> RiskInputs:
    q: Quote | None
    if quote == "default":
        q = Quote(symbol=SYM, ts=NOW - timedelta(seconds=quote_age_s), bid=price, ask=price,
                  last=price)
    else:
        assert not isinstance(quote, str)
        q = quote
    account = Account(cash=equity, equity=equity,
                      buying_power=equity if buying_power is None else buying_power)
    return RiskInputs(account=account, positions=positions or {}, quote=q, now=NOW, **kw)


def buy(p: RiskPolicy, i: RiskInputs, conf: float = 0.9, stop: float | None = None,
        **kw: Any) -> RiskDecision:
    return p.size(Action.BUY, SYM, conf, stop, i, **kw)


def sell(p: RiskPolicy, i: RiskInputs, conf: float = 0.9, **kw: Any) -> RiskDecision:
    return p.size(Action.SELL, SYM, conf, None, i, **kw)


def refused(d: RiskDecision, *words: str) -> None:
    assert not d.approved, d
    assert d.qty == 0 and d.notional == 0
    for w in words:
        assert w in d.reason, (w, d.reason)


# --------------------------------------------------------------------------- rules


def test_default_settings_size_a_plain_buy() -> None:
    d = RiskPolicy(RiskSettings()).size(Action.BUY, SYM, 0.9, None, inputs())
    # equity 100k: position cap 10k → 100 sh; order cap 5k → 50 sh; risk 1k / $2 → 500 sh
    assert d.approved and d.qty == 50 and d.notional == 5000 and d.price == 100
    assert d.binding == CHECK_ORDER_NOTIONAL
    assert {c.name for c in d.checks} >= {
        "min confidence", "quote", "cooldown", "max orders per cycle", "daily loss limit",
        "max open positions", CHECK_POSITION_SIZE, CHECK_ORDER_NOTIONAL, CHECK_RISK_PER_TRADE,
        CHECK_BUYING_POWER,
    }
    assert all(c.ok for c in d.checks)


def test_min_confidence_boundary() -> None:
    p = policy(min_confidence=0.55)
    assert buy(p, inputs(), conf=0.55).approved
    refused(buy(p, inputs(), conf=0.5499), "confidence 0.5499 below min 0.55")
    refused(buy(p, inputs(), conf=1.01), "confidence")
    refused(buy(p, inputs(), conf=float("nan")), "confidence")
    # applies to sells too
    refused(sell(p, inputs(positions={SYM: pos(10)}), conf=0.5), "confidence")


def test_stale_quote_boundary() -> None:
    p = policy(max_quote_age_s=900)
    assert buy(p, inputs(quote_age_s=900)).approved
    refused(buy(p, inputs(quote_age_s=901)), "quote stale", "901 s old > max 900 s")
    refused(buy(p, inputs(quote=None)), "no quote")
    zero = Quote(symbol=SYM, ts=NOW, bid=0, ask=0, last=0)
    refused(buy(p, inputs(quote=zero)), "no positive price")
    # sells need a fresh quote as well
    refused(sell(p, inputs(quote_age_s=901, positions={SYM: pos(5)})), "quote stale")


def test_cooldown_boundary() -> None:
    p = policy(cooldown_minutes=60)
    assert buy(p, inputs(last_trade_at=NOW - timedelta(minutes=60))).approved
    d = buy(p, inputs(last_trade_at=NOW - timedelta(minutes=59, seconds=30)))
    refused(d, "cooldown 1 min left")
    refused(buy(p, inputs(last_trade_at=NOW - timedelta(minutes=25))), "cooldown 35 min left")
    refused(sell(p, inputs(positions={SYM: pos(5)}, last_trade_at=NOW)), "cooldown")
    assert buy(policy(cooldown_minutes=0), inputs(last_trade_at=NOW)).approved


def test_max_orders_per_cycle_boundary() -> None:
    p = policy(max_orders_per_cycle=5)
    assert buy(p, inputs(orders_this_cycle=4)).approved
    refused(buy(p, inputs(orders_this_cycle=5)), "max orders per cycle 5 reached")
    refused(sell(p, inputs(orders_this_cycle=5, positions={SYM: pos(3)})), "max orders")


def test_daily_loss_limit_blocks_buys_not_sells() -> None:
    p = policy(daily_loss_limit_pct=3)
    assert buy(p, inputs(equity=97_001, day_start_equity=100_000)).approved
    d = buy(p, inputs(equity=97_000, day_start_equity=100_000))
    refused(d, "daily loss limit 3% hit", "down 3.00%")
    held = {SYM: pos(10)}
    s = sell(p, inputs(equity=97_000, day_start_equity=100_000, positions=held))
    assert s.approved and s.qty == 10
    # adding to a held position is new risk too
    refused(buy(p, inputs(equity=96_000, day_start_equity=100_000, positions=held)), "daily")
    # without an explicit day start, the account's last_equity is the reference
    i = RiskInputs(account=Account(cash=0, equity=96_000, buying_power=96_000,
                                   last_equity=100_000),
                   positions={}, quote=inputs().quote, now=NOW)
    refused(buy(p, i), "daily loss limit")


def test_max_open_positions_boundary_and_existing_symbol() -> None:
    p = policy(max_open_positions=5)
    assert buy(p, inputs(open_position_count=4)).approved
    refused(buy(p, inputs(open_position_count=5)), "max open positions 5 reached")
    # a buy in a symbol already held does not open a new position
    assert buy(p, inputs(open_position_count=5, positions={SYM: pos(1)})).approved
    # counted from the positions when not given
    others = {f"S{i}": pos(1, sym=f"S{i}") for i in range(5)}
    refused(buy(p, inputs(positions=others)), "max open positions 5 reached")
    assert buy(p, inputs(positions=dict(list(others.items())[:4]))).approved


def test_max_position_pct_boundary() -> None:
    p = policy(max_position_pct=10)
    d = buy(p, inputs())  # 10% of 100k = 10k at $100
    assert d.approved and d.qty == 100 and d.binding == CHECK_POSITION_SIZE
    d = buy(p, inputs(positions={SYM: pos(99)}))
    assert d.approved and d.qty == 1
    refused(buy(p, inputs(positions={SYM: pos(100)})), "max position size",
            "room $0.00: allows 0 sh")
    # the held value is counted at the current price
    refused(buy(p, inputs(price=100.5, positions={SYM: pos(99)})), "max position size")


def test_max_order_notional_boundary() -> None:
    assert buy(policy(max_order_notional=100), inputs()).qty == 1
    refused(buy(policy(max_order_notional=99.99), inputs()), "max order notional")
    d = buy(policy(max_order_notional=5_000), inputs())
    assert d.qty == 50 and d.binding == CHECK_ORDER_NOTIONAL
    # sells are capped by it as well: 30 held, $2,000 per order at $100 → 20
    s = sell(policy(max_order_notional=2_000), inputs(positions={SYM: pos(30)}))
    assert s.approved and s.qty == 20
    refused(sell(policy(max_order_notional=99), inputs(positions={SYM: pos(30)})),
            "max order notional")


def test_risk_per_trade_without_stop_uses_default_stop() -> None:
    # 1% of 100k = $1,000 at risk; default stop 2% of $100 = $2 → 500 sh
    d = buy(policy(risk_per_trade_pct=1, default_stop_pct=2), inputs())
    assert d.approved and d.qty == 500 and d.binding == CHECK_RISK_PER_TRADE
    # $2 at risk per $2 stop → exactly 1 share; a hair less → refused, naming the rule
    assert buy(policy(risk_per_trade_pct=0.002, default_stop_pct=2), inputs()).qty == 1
    refused(buy(policy(risk_per_trade_pct=0.00199, default_stop_pct=2), inputs()),
            "risk per trade")


def test_risk_per_trade_with_stop() -> None:
    p = policy(risk_per_trade_pct=1, default_stop_pct=2)
    assert buy(p, inputs(), stop=99.0).qty == 1000  # $1 stop distance
    assert buy(p, inputs(), stop=95.0).qty == 200  # $5
    assert buy(policy(risk_per_trade_pct=0.5), inputs(), stop=99.5).qty == 1000  # $0.50
    # insensible stops (at/above the price, ≤ 0, NaN) fall back to the default 2%
    for bad in (100.0, 150.0, 0.0, -5.0, float("nan")):
        assert buy(p, inputs(), stop=bad).qty == 500, bad
    # boundary: $10 at risk, $5 stop → 2 sh; $9.99 → 1 sh; below $5 → refused
    assert buy(policy(risk_per_trade_pct=0.01), inputs(), stop=95.0).qty == 2
    assert buy(policy(risk_per_trade_pct=0.00999), inputs(), stop=95.0).qty == 1
    refused(buy(policy(risk_per_trade_pct=0.00499), inputs(), stop=95.0), "risk per trade",
            "stop 95")


def test_buying_power_including_pending() -> None:
    p = policy(buying_power_reserve_pct=0)
    d = buy(p, inputs(buying_power=10_000))
    assert d.qty == 100 and d.binding == CHECK_BUYING_POWER
    assert buy(p, inputs(buying_power=10_000, pending_buy_notional=9_900)).qty == 1
    refused(buy(p, inputs(buying_power=10_000, pending_buy_notional=9_900.01)),
            "buying power", "pending buys $9,900.01")
    refused(buy(p, inputs(buying_power=50)), "buying power")


def test_buying_power_keeps_a_reserve_for_slippage() -> None:
    # 1% of $10,100 kept back leaves $9,999: 99 shares at $100, not 101
    p = policy(buying_power_reserve_pct=1)
    d = buy(p, inputs(buying_power=10_100))
    assert d.qty == 99 and d.binding == CHECK_BUYING_POWER
    assert "1% reserve = $9,999" in d.reason or any(
        "1% reserve = $9,999" in c.detail for c in d.checks
    )
    assert buy(p, inputs(buying_power=10_101.02)).qty == 100


def test_sell_only_what_is_held() -> None:
    p = policy()
    d = sell(p, inputs(positions={SYM: pos(30)}))
    assert d.approved and d.qty == 30 and d.notional == 3000
    refused(sell(p, inputs()), "no shorting", SYM)
    refused(sell(p, inputs(positions={SYM: pos(0)})), "no shorting")
    # a fractional holding is sold whole
    assert sell(p, inputs(positions={SYM: pos(2.5)})).qty == 2.5


def test_allow_short_opens_short_and_buy_covers() -> None:
    p = policy(allow_short=True, max_position_pct=10)
    d = sell(p, inputs())
    assert d.approved and d.qty == 100  # 10% of equity, like a long
    assert d.qty == int(d.qty)
    # a new short counts against max open positions
    refused(sell(policy(allow_short=True, max_open_positions=1),
                 inputs(open_position_count=1)), "max open positions 1 reached")
    # and is new risk under the daily loss limit
    refused(sell(p, inputs(equity=90_000, day_start_equity=100_000)), "daily loss limit")
    # buying while short covers the short (risk-reducing, allowed after the loss limit)
    short = {SYM: pos(-40)}
    c = buy(p, inputs(positions=short, equity=90_000, day_start_equity=100_000))
    assert c.approved and c.qty == 40
    # shorting with a stop above the price uses it for risk per trade
    wide = policy(allow_short=True, risk_per_trade_pct=1, default_stop_pct=2)
    assert sell(wide, inputs()).qty == 500  # $1,000 at risk / default $2
    assert wide.size(Action.SELL, SYM, 0.9, 101.0, inputs()).qty == 1000  # / $1 stop
    assert wide.size(Action.SELL, SYM, 0.9, 99.0, inputs()).qty == 500  # below: default


def test_hold_is_refused() -> None:
    d = policy().size(Action.HOLD, SYM, 0.9, None, inputs())
    refused(d, "hold: nothing to do")
    d = policy().size("hold", SYM, 0.9, None, inputs())
    refused(d, "hold: nothing to do")
    refused(policy().size("yolo", SYM, 0.9, None, inputs()), "unknown action")


def test_universe_in_inputs() -> None:
    refused(buy(policy(), inputs(universe={"MSFT"})), "not in the universe")
    assert buy(policy(), inputs(universe={SYM})).approved


def test_first_failing_rule_is_the_reason() -> None:
    d = buy(policy(max_orders_per_cycle=1, cooldown_minutes=60),
            inputs(orders_this_cycle=1, last_trade_at=NOW))
    assert d.reason.startswith("cooldown")
    assert [c.name for c in d.failed()] == ["cooldown", "max orders per cycle"]


def test_fractional() -> None:
    p = policy(max_order_notional=250)
    whole = buy(p, inputs(price=300))
    refused(whole, "max order notional")
    frac = buy(p, inputs(price=300), fractional=True)
    assert frac.approved and frac.qty == pytest.approx(0.833333, abs=1e-6)
    assert frac.notional <= 250
    assert round(frac.qty * 1e6) == pytest.approx(frac.qty * 1e6)


def test_naive_datetimes_do_not_crash() -> None:
    naive_now = NOW.replace(tzinfo=None)
    q = Quote(symbol=SYM, ts=NOW, bid=100, ask=100, last=100)
    i = RiskInputs(account=Account(cash=1e5, equity=1e5, buying_power=1e5), positions={},
                   quote=q, now=naive_now, last_trade_at=naive_now - timedelta(hours=2))
    assert policy().size(Action.BUY, SYM, 0.9, None, i).approved


def test_buy_uses_ask_and_sell_uses_bid() -> None:
    q = Quote(symbol=SYM, ts=NOW, bid=99, ask=101, last=100)
    assert reference_price(q, Action.BUY) == 101
    assert reference_price(q, Action.SELL) == 99
    assert reference_price(Quote(symbol=SYM, ts=NOW, bid=0, ask=0, last=100), Action.BUY) == 100
    assert reference_price(None, Action.BUY) == 0.0
    d = buy(policy(max_order_notional=1010), inputs(quote=q))
    assert d.qty == 10 and d.price == 101


# --------------------------------------------------------------------------- validate


def proposal(**kw: Any) -> ProposedSignal:
    base: dict[str, Any] = {"symbol": SYM, "action": Action.BUY, "confidence": 0.7,
                            "rationale": "x"}
    return ProposedSignal(**{**base, **kw})


def test_validate() -> None:
    p = policy()
    universe = {"AAPL", "MSFT"}
    assert p.validate(proposal(), universe) is None
    assert "not in the universe (AAPL, MSFT)" in (p.validate(proposal(symbol="TSLA"), universe)
                                                  or "")
    assert "outside 0..1" in (p.validate(proposal(confidence=1.2), universe) or "")
    assert "outside 0..1" in (p.validate(proposal(confidence=-0.1), universe) or "")
    assert "outside 0..1" in (p.validate(proposal(confidence=float("nan")), universe) or "")
    assert p.validate(proposal(confidence=0.0), universe) is None
    assert p.validate(proposal(confidence=1.0), universe) is None
    assert "stop_loss" in (p.validate(proposal(stop_loss=float("inf")), universe) or "")
    assert "target_price" in (p.validate(proposal(target_price=-1.0), universe) or "")


# --------------------------------------------------------------------------- limits


def test_limits_for() -> None:
    p = RiskPolicy(RiskSettings())
    lim = p.limits_for(SYM, inputs())
    assert lim.can_buy and not lim.can_sell and lim.max_buy_qty == 50 and lim.held_qty == 0
    assert lim.note == ""
    lim = p.limits_for(SYM, inputs(positions={SYM: Position(symbol=SYM, qty=10, avg_price=80,
                                                            market_price=100)}))
    assert lim.can_sell and lim.held_qty == 10 and lim.position_pl_pct == pytest.approx(25)
    lim = p.limits_for(SYM, inputs(last_trade_at=NOW - timedelta(minutes=25)))
    assert not lim.can_buy and lim.max_buy_qty == 0 and lim.note == "cooldown 35 min left"
    lim = p.limits_for(SYM, inputs(open_position_count=5))
    assert not lim.can_buy and lim.note == "max open positions 5 reached"
    # both sides blocked for different reasons: both named
    lim = p.limits_for(SYM, inputs(open_position_count=5, positions={SYM: pos(1)},
                                   equity=90_000, day_start_equity=100_000))
    assert not lim.can_buy and lim.can_sell
    assert lim.note.startswith("daily loss limit")


# --------------------------------------------------------------------------- approval


def test_needs_human() -> None:
    assert needs_human("manual", 0.99, 0.8)
    assert not needs_human("auto", 0.1, 0.8)
    assert needs_human("threshold", 0.79, 0.8)
    assert not needs_human("threshold", 0.8, 0.8)
    assert needs_human("threshold", float("nan"), 0.8)
    assert needs_human("bogus", 0.99, 0.8)


def test_drift_pct() -> None:
    assert drift_pct(100, 101) == pytest.approx(1.0)
    assert drift_pct(100, 99) == pytest.approx(1.0)
    assert drift_pct(100, 100) == 0.0
    assert drift_pct(0, 100) == math.inf
    assert drift_pct(100, float("nan")) == math.inf


# --------------------------------------------------------------------------- property


def fl(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


risk_settings = st.builds(
    RiskSettings,
    max_position_pct=fl(0.01, 100),
    max_open_positions=st.integers(1, 500),
    max_order_notional=fl(0.01, 1e7),
    risk_per_trade_pct=fl(0.001, 100),
    default_stop_pct=fl(0.01, 50),
    min_confidence=fl(0, 1),
    daily_loss_limit_pct=fl(0.01, 100),
    cooldown_minutes=fl(0, 10080),
    max_orders_per_cycle=st.integers(1, 500),
    max_quote_age_s=fl(1, 3600),
    allow_short=st.booleans(),
)
money = fl(-1e4, 1e8)
prices = st.one_of(st.just(0.0), fl(0.0001, 1e5))
any_float = st.one_of(fl(-1e6, 1e6), st.just(float("nan")),
                      st.just(float("inf")))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[RiskSettings, Action, float, float | None, RiskInputs,
                                        bool]:
    """Mostly plausible inputs (so many decisions are approved), each rule adversarial
    about one time in twelve."""

    def odd() -> bool:
        return draw(st.integers(0, 11)) == 0

    rs = draw(risk_settings)
    action = Action.HOLD if odd() else draw(st.sampled_from([Action.BUY, Action.SELL]))
    if odd():
        confidence = draw(st.one_of(fl(-0.5, 1.5), st.just(float("nan"))))
    else:
        confidence = draw(fl(rs.min_confidence, 1))
    stop = draw(st.one_of(st.none(), any_float, fl(0, 1e5)))
    last = draw(fl(0.0001, 1e5))
    spread = draw(fl(0, 0.05))
    bid = 0.0 if odd() else last * (1 - spread)
    ask = 0.0 if odd() else last * (1 + spread)
    age = draw(st.floats(-60, 4000)) if odd() else draw(st.floats(0, rs.max_quote_age_s))
    quote = None if odd() else Quote(symbol=SYM, ts=NOW - timedelta(seconds=age), bid=bid,
                                     ask=ask, last=last)
    if odd():
        held = draw(fl(-1e4, 1e5))
    else:
        held = draw(st.one_of(st.just(0.0), st.integers(0, 10_000).map(float)))
    positions = {}
    if held != 0 or draw(st.booleans()):
        positions[SYM] = Position(symbol=SYM, qty=held, avg_price=draw(prices),
                                  market_price=draw(prices))
    equity = draw(money) if odd() else draw(fl(1, 1e8))
    bp = draw(money) if odd() else draw(fl(0, 4 * max(equity, 1.0)))
    account = Account(cash=draw(money), equity=equity, buying_power=bp)
    if odd():
        last_trade = draw(st.floats(-600, 1e6).map(lambda s: NOW - timedelta(seconds=s)))
    else:
        last_trade = None
    if odd():
        day_start = draw(st.one_of(st.none(), money))
    else:
        day_start = draw(st.one_of(st.none(), st.floats(abs(equity) * 0.95, abs(equity) * 1.2)))
    i = RiskInputs(
        account=account,
        positions=positions,
        quote=quote,
        now=NOW,
        last_trade_at=last_trade,
        orders_this_cycle=draw(st.integers(0, 600)) if odd() else 0,
        open_position_count=draw(st.one_of(st.none(), st.integers(0, 600))) if odd() else None,
        day_start_equity=day_start,
        universe={"MSFT"} if odd() else draw(st.sampled_from([None, {SYM}])),
        pending_buy_notional=draw(money) if odd() else draw(st.floats(0, max(bp, 0.0) / 2 + 1)),
    )
    return rs, action, confidence, stop, i, draw(st.booleans())


def _close(a: float, limit: float) -> bool:
    """a ≤ limit up to float rounding."""
    return a <= limit + 1e-9 * max(1.0, abs(limit)) + 1e-9


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_property_approved_never_exceeds_a_limit(
    case: tuple[RiskSettings, Action, float, float | None, RiskInputs, bool],
) -> None:
    rs, action, confidence, stop, i, fractional = case
    p = RiskPolicy(rs)
    d = p.size(action, SYM, confidence, stop, i, fractional=fractional)  # never raises
    if d.approved:
        event(f"approved {action.value} bound by {d.binding or 'held qty'}")
    else:
        event(f"refused: {d.failed()[0].name if d.failed() else d.reason}")
    for v in (d.qty, d.notional, d.price):
        assert math.isfinite(v)
    assert d.qty >= 0 and d.notional >= 0
    assert isinstance(d.reason, str) and d.reason
    if not d.approved:
        assert d.qty == 0 and d.notional == 0
        return

    held = i.held_qty(SYM)
    assert action is not Action.HOLD
    assert d.qty > 0
    assert d.price == reference_price(i.quote, action) > 0
    assert d.notional == pytest.approx(d.qty * d.price)
    assert math.isfinite(confidence) and rs.min_confidence <= confidence <= 1
    assert i.quote is not None and (NOW - i.quote.ts).total_seconds() <= rs.max_quote_age_s
    assert i.orders_this_cycle < rs.max_orders_per_cycle
    if i.last_trade_at is not None and rs.cooldown_minutes > 0:
        assert (NOW - i.last_trade_at).total_seconds() >= rs.cooldown_minutes * 60
    if i.universe is not None:
        assert SYM in i.universe
    assert _close(d.notional, rs.max_order_notional)

    reducing = (action is Action.SELL and held > 0) or (action is Action.BUY and held < 0)
    if reducing:
        assert d.qty <= abs(held) + 1e-12
        return
    if action is Action.SELL:
        assert rs.allow_short, "a sell of nothing held without allow_short"
    # opening or adding: every cap holds
    equity = i.account.equity
    assert equity > 0
    assert _close((abs(held) + d.qty) * d.price, equity * rs.max_position_pct / 100)
    bp = i.account.buying_power - max(i.pending_buy_notional, 0.0)
    assert _close(d.notional, bp)
    if stop is not None and math.isfinite(stop) and stop > 0 and (
        (action is Action.BUY and stop < d.price) or (action is Action.SELL and stop > d.price)
    ):
        dist = abs(d.price - stop)
    else:
        dist = d.price * rs.default_stop_pct / 100
    assert _close(d.qty * dist, equity * rs.risk_per_trade_pct / 100)
    if held == 0:
        assert i.open_positions() < rs.max_open_positions
    start = i.day_start_equity if i.day_start_equity is not None else i.account.last_equity
    if start is not None and start > 0:
        assert (start - equity) / start * 100 < rs.daily_loss_limit_pct
    if not fractional or action is Action.SELL:
        assert d.qty == int(d.qty) and d.qty >= 1


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_property_limits_for_agrees_with_size(
    case: tuple[RiskSettings, Action, float, float | None, RiskInputs, bool],
) -> None:
    rs, _, _, _, i, fractional = case
    p = RiskPolicy(rs)
    lim = p.limits_for(SYM, i, fractional=fractional)
    assert lim.max_buy_qty >= 0 and math.isfinite(lim.max_buy_qty)
    assert lim.can_buy == (lim.max_buy_qty > 0)
    d = p.size(Action.BUY, SYM, 1.0, None, i, fractional=fractional)
    assert lim.can_buy == d.approved
    if not rs.allow_short:
        assert not lim.can_sell or lim.held_qty > 0


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_property_quick_size_decides_like_size(
    case: tuple[RiskSettings, Action, float, float | None, RiskInputs, bool],
) -> None:
    """``quick_size`` (used for the per-cycle limits) is ``size`` minus the explanation."""
    rs, action, confidence, stop, i, fractional = case
    p = RiskPolicy(rs)
    full = p.size(action, SYM, confidence, stop, i, fractional=fractional)
    quick = p.quick_size(action, SYM, confidence, stop, i, fractional=fractional)
    assert (quick.approved, quick.qty, quick.notional) == (
        full.approved, full.qty, full.notional)
    assert quick.checks == []
    if full.approved:
        assert (quick.price, quick.binding, quick.reason) == (full.price, full.binding, "")
    else:
        assert quick.reason == full.reason
