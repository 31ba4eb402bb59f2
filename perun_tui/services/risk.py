"""The risk policy: validates trade ideas and sizes them, or refuses them with a reason.

Pure: no I/O and no clock reads — the account, positions, quote and the current time all
come in through ``RiskInputs``, so the same inputs always give the same decision and the
policy can be property-tested.

Every rule is a ``RiskCheck`` carrying its numbers; a refusal's ``reason`` names the first
rule that failed (or, when every rule passes but the size rounds to nothing, the cap that
bound it), e.g. ``"max open positions 5 reached"``.

Sizing a buy (or, with ``allow_short``, a new short) takes the smallest of four caps —
position size (% of equity, counting what is already held), order notional, risk per
trade (equity × risk % / stop distance) and buying power net of approved-but-unfilled
buys — rounded down to whole shares (or to 1e-6 with ``fractional``). Selling sells the
whole position, capped by the order notional; without ``allow_short`` a sell never
exceeds what is held.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from perun_tui.config import RiskSettings
from perun_tui.llm.base import ProposedSignal, SymbolLimits
from perun_tui.models import Account, Action, Position, Quote, RiskCheck

FRACTION_STEP = 1e-6
_EPS = 1e-9

# check names, stable: the UI and the tests refer to them
CHECK_UNIVERSE = "universe"
CHECK_CONFIDENCE = "min confidence"
CHECK_QUOTE = "quote"
CHECK_COOLDOWN = "cooldown"
CHECK_ORDERS = "max orders per cycle"
CHECK_DAILY_LOSS = "daily loss limit"
CHECK_OPEN_POSITIONS = "max open positions"
CHECK_POSITION_SIZE = "max position size"
CHECK_ORDER_NOTIONAL = "max order notional"
CHECK_RISK_PER_TRADE = "risk per trade"
CHECK_BUYING_POWER = "buying power"
CHECK_HELD = "held position"
CHECK_HOLD = "hold"


@dataclass(frozen=True, slots=True)
class RiskInputs:
    """Everything the policy may look at for one symbol, at one moment."""

    account: Account
    positions: Mapping[str, Position]
    quote: Quote | None
    now: datetime
    last_trade_at: datetime | None = None  # last trade in this symbol
    orders_this_cycle: int = 0
    # positions open now (plus pending buys in new symbols, if the caller wants them to
    # count); None = the number of non-zero positions in ``positions``
    open_position_count: int | None = None
    # equity at the start of the trading day; None = ``account.last_equity``
    day_start_equity: float | None = None
    # symbols that may be traded; None = not checked here (``validate`` checks it)
    universe: Set[str] | None = None
    # notional of approved-but-unfilled buys, so buying power is not counted twice
    pending_buy_notional: float = 0.0

    def held_qty(self, symbol: str) -> float:
        pos = self.positions.get(symbol)
        if pos is None or not math.isfinite(pos.qty):
            return 0.0
        return pos.qty

    def open_positions(self) -> int:
        if self.open_position_count is not None:
            return self.open_position_count
        return sum(1 for p in self.positions.values() if p.qty != 0)


@dataclass(slots=True)
class RiskDecision:
    approved: bool
    qty: float
    notional: float
    checks: list[RiskCheck] = field(default_factory=list)
    reason: str = ""
    price: float = 0.0  # the reference price the size was computed at
    binding: str = ""  # the cap that set the size (buys/new shorts)

    def failed(self) -> list[RiskCheck]:
        return [c for c in self.checks if not c.ok]


# --------------------------------------------------------------------------- helpers


def _num(x: float) -> str:
    """A compact number for details: 5000 → "5,000", 0.25 → "0.25"."""
    if not math.isfinite(x):
        return str(x)
    if abs(x - round(x)) < 1e-9 and abs(x) < 1e15:
        return f"{round(x):,}"
    if abs(x) >= 100:
        return f"{x:,.2f}"
    return f"{x:.4g}" if abs(x) < 1 else f"{x:,.2f}"


def _money(x: float) -> str:
    return f"${x:,.2f}" if math.isfinite(x) else f"${x}"


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _seconds_between(later: datetime, earlier: datetime) -> float:
    return (_aware(later) - _aware(earlier)).total_seconds()


def reference_price(quote: Quote | None, action: Action) -> float:
    """The price a market order would pay: the ask for buys, the bid for sells.

    Falls back to the last trade when that side of the book is missing; 0.0 when there is
    no usable price at all.
    """
    if quote is None:
        return 0.0
    side = quote.ask if action is Action.BUY else quote.bid
    for p in (side, quote.last, quote.mid):
        if math.isfinite(p) and p > 0:
            return p
    return 0.0


def _floor_qty(x: float, fractional: bool) -> float:
    if not math.isfinite(x) or x <= 0:
        return 0.0
    if fractional:
        # the small nudge keeps 0.3 / 0.1-style float dust from losing a whole step
        return round(math.floor(x / FRACTION_STEP + 1e-7) * FRACTION_STEP, 6)
    return float(math.floor(x + 1e-9))


def _as_action(action: Action | str) -> Action | None:
    try:
        return action if isinstance(action, Action) else Action(str(action).lower())
    except ValueError:
        return None


def drift_pct(reference_price: float, fresh_price: float) -> float:
    """How far the price moved since the signal was proposed, in % (absolute).

    ``inf`` when either price is unusable, so a drift check fails safe.
    """
    if not (math.isfinite(reference_price) and math.isfinite(fresh_price)):
        return math.inf
    if reference_price <= 0 or fresh_price <= 0:
        return math.inf
    return abs(fresh_price / reference_price - 1.0) * 100.0


def needs_human(
    mode: Literal["manual", "threshold", "auto"] | str,
    confidence: float,
    auto_min_confidence: float,
) -> bool:
    """Whether a sized signal waits for a person (``approval.mode``).

    manual: always; auto: never; threshold: when confidence is below
    ``auto_min_confidence``. Unknown modes and non-finite confidences ask a person.
    """
    if mode == "auto":
        return False
    if mode == "threshold":
        if not math.isfinite(confidence):
            return True
        return confidence < auto_min_confidence
    return True


# --------------------------------------------------------------------------- policy


class RiskPolicy:
    """The rules of ``[risk]`` applied to one idea at a time; see the module docstring."""

    def __init__(self, risk: RiskSettings) -> None:
        self.risk = risk

    # ------------------------------------------------------------------ validation

    def validate(self, proposal: ProposedSignal, universe: Set[str]) -> str | None:
        """Why a proposal cannot be considered at all, or None when it is well-formed."""
        if proposal.symbol not in universe:
            allowed = ", ".join(sorted(universe)) or "none"
            return f"symbol {proposal.symbol!r} is not in the universe ({allowed})"
        c = proposal.confidence
        if not math.isfinite(c) or c < 0 or c > 1:
            return f"confidence {c} is outside 0..1"
        for label, value in (("stop_loss", proposal.stop_loss),
                             ("target_price", proposal.target_price)):
            if value is not None and (not math.isfinite(value) or value < 0):
                return f"{label} {value} is not a price"
        return None

    # ------------------------------------------------------------------ sizing

    def size(
        self,
        signal_action: Action | str,
        symbol: str,
        confidence: float,
        stop_loss: float | None,
        inputs: RiskInputs,
        *,
        fractional: bool = False,
    ) -> RiskDecision:
        """Size one idea under every rule, or refuse it naming the first rule that failed."""
        action = _as_action(signal_action)
        if action is None:
            return RiskDecision(False, 0.0, 0.0, [], f"unknown action {signal_action!r}")
        if action is Action.HOLD:
            check = RiskCheck(name=CHECK_HOLD, ok=False, detail="hold: nothing to do")
            return RiskDecision(False, 0.0, 0.0, [check], "hold: nothing to do")
        try:
            return self._size(action, symbol, confidence, stop_loss, inputs, fractional, True)
        except (ArithmeticError, ValueError, TypeError) as exc:  # pragma: no cover - defensive
            check = RiskCheck(name="error", ok=False, detail=f"risk policy error: {exc}")
            return RiskDecision(False, 0.0, 0.0, [check], f"risk policy error: {exc}")

    def quick_size(
        self,
        action: Action,
        symbol: str,
        confidence: float,
        stop_loss: float | None,
        inputs: RiskInputs,
        *,
        fractional: bool = False,
    ) -> RiskDecision:
        """``size()`` without the explanation: the same ``approved``, ``qty`` and
        ``notional``, and when refused the same ``reason``; but no ``checks``, no text
        when approved, and ``price``/``binding`` only when approved.

        It stops at the first rule that fails, which is the rule ``size()`` names, and
        formats no detail text: a fraction of the cost, for the per-symbol limits the
        analyst is shown every cycle.
        """
        if action is Action.HOLD:
            return RiskDecision(False, 0.0, 0.0, [], "hold: nothing to do")
        try:
            return self._size(action, symbol, confidence, stop_loss, inputs, fractional, False)
        except _Refused as refused:
            return RiskDecision(False, 0.0, 0.0, [], refused.reason)
        except (ArithmeticError, ValueError, TypeError) as exc:  # pragma: no cover - defensive
            return RiskDecision(False, 0.0, 0.0, [], f"risk policy error: {exc}")

    def _size(
        self,
        action: Action,
        symbol: str,
        confidence: float,
        stop_loss: float | None,
        inputs: RiskInputs,
        fractional: bool,
        explain: bool,
    ) -> RiskDecision:
        """The rules in order. With ``explain`` every rule adds a ``RiskCheck`` and the
        decision names the first failure; without, the first failure raises ``_Refused``
        and no text is formatted for the rules that pass."""
        r = self.risk
        checks: list[RiskCheck] = []
        reasons: dict[str, str] = {}

        def fail(name: str, reason: str) -> None:
            if not explain:
                raise _Refused(reason)
            reasons.setdefault(name, reason)

        held = inputs.held_qty(symbol)
        # does this order add exposure (open/increase) or reduce it (close/cover)?
        opening = held >= 0 if action is Action.BUY else held <= 0
        no_short = action is Action.SELL and opening and not r.allow_short
        if no_short:
            if explain:
                checks.append(_check(CHECK_HELD, False,
                                     f"{symbol}: nothing held and shorting is off"))
            fail(CHECK_HELD, f"no shorting: nothing held in {symbol} to sell")

        # universe
        if inputs.universe is not None:
            ok = symbol in inputs.universe
            if explain:
                checks.append(_check(CHECK_UNIVERSE, ok,
                                     f"{symbol} {'in' if ok else 'not in'} the universe"))
            if not ok:
                fail(CHECK_UNIVERSE, f"symbol {symbol} is not in the universe")

        # min confidence
        finite_conf = math.isfinite(confidence)
        conf_ok = finite_conf and r.min_confidence <= confidence <= 1.0
        if explain:
            checks.append(_check(CHECK_CONFIDENCE, conf_ok,
                                 f"confidence {confidence:g} vs min {r.min_confidence:g}"))
        if not conf_ok:
            fail(CHECK_CONFIDENCE,
                 f"confidence {confidence:g} below min {r.min_confidence:g}"
                 if finite_conf and confidence < r.min_confidence
                 else f"confidence {confidence:g} outside {r.min_confidence:g}..1")

        # quote present, fresh, priced
        price = reference_price(inputs.quote, action)
        quote = inputs.quote
        if quote is None:
            if explain:
                checks.append(_check(CHECK_QUOTE, False, "no quote"))
            fail(CHECK_QUOTE, f"no quote for {symbol}")
        else:
            age = _seconds_between(inputs.now, quote.ts)
            if age > r.max_quote_age_s:
                if explain:
                    checks.append(_check(
                        CHECK_QUOTE, False,
                        f"quote {age:.0f} s old > max {_num(r.max_quote_age_s)} s"))
                fail(CHECK_QUOTE,
                     f"quote stale: {age:.0f} s old > max {_num(r.max_quote_age_s)} s")
            elif price <= 0:
                if explain:
                    checks.append(_check(CHECK_QUOTE, False, "quote has no positive price"))
                fail(CHECK_QUOTE, f"no positive price in the quote for {symbol}")
            elif explain:
                checks.append(_check(CHECK_QUOTE, True,
                                     f"price {_num(price)}, {max(age, 0):.0f} s old"))

        # cooldown per symbol
        if inputs.last_trade_at is not None and r.cooldown_minutes > 0:
            since_min = _seconds_between(inputs.now, inputs.last_trade_at) / 60.0
            ok = since_min >= r.cooldown_minutes
            if explain:
                checks.append(_check(
                    CHECK_COOLDOWN, ok,
                    f"last trade {since_min:.0f} min ago, "
                    f"cooldown {_num(r.cooldown_minutes)} min"))
            if not ok:
                left = max(r.cooldown_minutes - since_min, 0.0)
                fail(CHECK_COOLDOWN, f"cooldown {math.ceil(left - 1e-9)} min left")
        elif explain:
            checks.append(_check(CHECK_COOLDOWN, True, "no recent trade"))

        # orders this cycle
        ok = inputs.orders_this_cycle < r.max_orders_per_cycle
        if explain:
            checks.append(_check(
                CHECK_ORDERS, ok,
                f"{inputs.orders_this_cycle} of {r.max_orders_per_cycle} orders this cycle"))
        if not ok:
            fail(CHECK_ORDERS, f"max orders per cycle {r.max_orders_per_cycle} reached")

        # daily loss limit: refuse new risk, let risk-reducing orders through
        equity = inputs.account.equity
        start = inputs.day_start_equity
        if start is None:
            start = inputs.account.last_equity
        if start is not None and math.isfinite(start) and start > 0 and math.isfinite(equity):
            loss_pct = (start - equity) / start * 100.0
            hit = loss_pct >= r.daily_loss_limit_pct - _EPS
            if explain:
                checks.append(_check(
                    CHECK_DAILY_LOSS, not (hit and opening),
                    f"day P/L {-loss_pct:+.2f}% (limit -{_num(r.daily_loss_limit_pct)}%)"
                    + ("; only risk-reducing orders" if hit else "")))
            if hit and opening:
                fail(CHECK_DAILY_LOSS,
                     f"daily loss limit {_num(r.daily_loss_limit_pct)}% hit "
                     f"(down {loss_pct:.2f}%): no new positions")
        elif explain:
            checks.append(_check(CHECK_DAILY_LOSS, True, "no day-start equity known"))

        if no_short:
            return self._decide(checks, reasons, 0.0, price, "")
        if not opening:
            return self._size_reduce(symbol, held, price, checks, reasons, fractional, fail,
                                     explain)
        return self._size_open(action, symbol, held, price, stop_loss, inputs, checks, reasons,
                               fractional, fail, explain)

    def _size_reduce(
        self,
        symbol: str,
        held: float,
        price: float,
        checks: list[RiskCheck],
        reasons: dict[str, str],
        fractional: bool,
        fail: Callable[[str, str], None],
        explain: bool,
    ) -> RiskDecision:
        """Close the whole position (a sell of a long, a buy of a short), capped by notional."""
        r = self.risk
        have = abs(held)
        if explain:
            checks.append(_check(CHECK_HELD, True, f"held {_num(held)} {symbol}"))
        qty = have
        if price > 0:
            cap = r.max_order_notional / price
            if cap < have:
                qty = _floor_qty(cap, fractional)
            ok = qty > 0
            if explain:
                checks.append(_check(
                    CHECK_ORDER_NOTIONAL, ok,
                    f"{_money(qty * price)} of max {_money(r.max_order_notional)}"))
            if not ok:
                fail(CHECK_ORDER_NOTIONAL,
                     f"max order notional {_money(r.max_order_notional)} is less than one "
                     f"share at {_money(price)}")
        return self._decide(checks, reasons, qty, price, "", explain)

    def _size_open(
        self,
        action: Action,
        symbol: str,
        held: float,
        price: float,
        stop_loss: float | None,
        inputs: RiskInputs,
        checks: list[RiskCheck],
        reasons: dict[str, str],
        fractional: bool,
        fail: Callable[[str, str], None],
        explain: bool,
    ) -> RiskDecision:
        """A new or larger position (long for a buy, short for a sell with allow_short)."""
        r = self.risk
        whole = not fractional or action is Action.SELL  # no fractional shorts
        min_qty = 1.0 if whole else FRACTION_STEP

        # max open positions: adding to a position already held does not open a new one
        if held != 0:
            if explain:
                checks.append(_check(CHECK_OPEN_POSITIONS, True,
                                     f"adds to the {symbol} position already held"))
        else:
            count = inputs.open_positions()
            ok = count < r.max_open_positions
            if explain:
                checks.append(_check(CHECK_OPEN_POSITIONS, ok,
                                     f"{count} of {r.max_open_positions} open"))
            if not ok:
                fail(CHECK_OPEN_POSITIONS, f"max open positions {r.max_open_positions} reached")

        if price <= 0:
            # no usable quote: the quote check already failed; no size can be computed
            return self._decide(checks, reasons, 0.0, 0.0, "")

        equity = inputs.account.equity
        equity = equity if math.isfinite(equity) and equity > 0 else 0.0

        # position size: (existing + new) ≤ max_position_pct of equity
        limit_value = equity * r.max_position_pct / 100.0
        existing = abs(held) * price
        room = max(limit_value - existing, 0.0)
        # risk per trade: qty × stop distance ≤ equity × risk%
        risk_amount = equity * r.risk_per_trade_pct / 100.0
        sensible = (
            stop_loss is not None and math.isfinite(stop_loss) and stop_loss > 0
            and ((action is Action.BUY and stop_loss < price)
                 or (action is Action.SELL and stop_loss > price))
        )
        if sensible and stop_loss is not None:
            stop_dist = abs(price - stop_loss)
        else:
            stop_dist = price * r.default_stop_pct / 100.0
        # buying power, net of buys approved but not filled yet
        bp_raw = inputs.account.buying_power
        pending = inputs.pending_buy_notional
        pending = pending if math.isfinite(pending) and pending > 0 else 0.0
        # a reserve for the spread and slippage a market order pays over the quote, so a
        # buy sized to the last dollar is not refused by the broker
        reserve = r.buying_power_reserve_pct / 100.0
        bp = max((bp_raw if math.isfinite(bp_raw) else 0.0) - pending, 0.0) * (1.0 - reserve)

        # the four caps, in a fixed order (the first of equal caps binds)
        caps = (
            (CHECK_POSITION_SIZE, room / price),
            (CHECK_ORDER_NOTIONAL, r.max_order_notional / price),
            (CHECK_RISK_PER_TRADE, risk_amount / stop_dist if stop_dist > 0 else 0.0),
            (CHECK_BUYING_POWER, bp / price),
        )

        def detail(name: str) -> str:
            if name == CHECK_POSITION_SIZE:
                return (f"{_num(r.max_position_pct)}% of equity {_money(equity)} = "
                        f"{_money(limit_value)}, held {_money(existing)}, room {_money(room)}")
            if name == CHECK_ORDER_NOTIONAL:
                return f"max {_money(r.max_order_notional)} per order"
            if name == CHECK_RISK_PER_TRADE:
                if sensible and stop_loss is not None:
                    stop_note = f"stop {_num(stop_loss)} ({_money(stop_dist)} away)"
                else:
                    stop_note = (f"default stop {_num(r.default_stop_pct)}% "
                                 f"({_money(stop_dist)} away)")
                return (f"{_num(r.risk_per_trade_pct)}% of equity = {_money(risk_amount)} "
                        f"at risk, {stop_note}")
            return (f"buying power {_money(bp_raw)} - pending buys {_money(pending)} "
                    f"- {_num(r.buying_power_reserve_pct)}% reserve = {_money(bp)}")

        binding_name, binding_qty = caps[0]
        for name, cap_qty in caps[1:]:  # the first of equal caps binds
            if cap_qty < binding_qty:
                binding_name, binding_qty = name, cap_qty
        qty = _floor_qty(binding_qty, not whole)
        # guard against float rounding pushing qty × price over the tightest notional cap
        while qty > 0 and qty * price > binding_qty * price + _EPS * max(1.0, binding_qty):
            qty = _floor_qty(qty - min_qty, not whole)

        if explain:
            for name, cap_qty in caps:
                ok = cap_qty >= min_qty - _EPS
                allows = _floor_qty(cap_qty, not whole)
                checks.append(_check(name, ok, f"{detail(name)}: allows {_num(allows)} sh"))
        if qty < min_qty - _EPS:
            # every earlier rule may have passed, yet the tightest cap leaves nothing
            allows = _floor_qty(binding_qty, not whole)
            fail(binding_name, f"{binding_name}: {detail(binding_name)}: allows "
                               f"{_num(allows)} sh at {_money(price)}")
        return self._decide(checks, reasons, qty, price, binding_name, explain)

    @staticmethod
    def _decide(
        checks: list[RiskCheck],
        reasons: dict[str, str],
        qty: float,
        price: float,
        binding: str,
        explain: bool = True,
    ) -> RiskDecision:
        if reasons or qty <= 0:
            reason = next(iter(reasons.values()), "size rounds to zero")
            return RiskDecision(False, 0.0, 0.0, checks, reason, price, binding)
        notional = qty * price
        if not explain:  # quick_size: the size, no text
            return RiskDecision(True, qty, notional, checks, "", price, binding)
        return RiskDecision(True, qty, notional, checks,
                            f"{_num(qty)} sh ≈ {_money(notional)}"
                            + (f" (bound by {binding})" if binding else ""),
                            price, binding)

    # ------------------------------------------------------------------ limits

    def limits_for(
        self, symbol: str, inputs: RiskInputs, *, fractional: bool = False
    ) -> SymbolLimits:
        """What the analyst may do in ``symbol`` now, computed with the same rules
        (``quick_size``: the decisions of ``size()`` without their explanation)."""
        held = inputs.held_qty(symbol)
        conf = 1.0
        buy = self.quick_size(Action.BUY, symbol, conf, None, inputs, fractional=fractional)
        sell = self.quick_size(Action.SELL, symbol, conf, None, inputs, fractional=fractional)
        buy_note = "" if buy.approved else buy.reason
        sell_relevant = held != 0 or self.risk.allow_short
        sell_note = "" if sell.approved or not sell_relevant else sell.reason
        if buy_note and sell_note and buy_note != sell_note:
            notes = [f"buy: {buy_note}", f"sell: {sell_note}"]
        elif buy_note:
            notes = [buy_note]
        elif sell_note:
            notes = [f"sell: {sell_note}"]
        else:
            notes = []
        pos = inputs.positions.get(symbol)
        pl_pct = pos.unrealized_pl_pct if pos is not None else 0.0
        return SymbolLimits(
            symbol=symbol,
            max_buy_qty=buy.qty if buy.approved else 0.0,
            held_qty=held,
            can_buy=buy.approved,
            can_sell=sell.approved,
            position_pl_pct=pl_pct if math.isfinite(pl_pct) else 0.0,
            note="; ".join(notes),
        )

    def limits(
        self,
        symbols: Iterable[str],
        inputs: Callable[[str], RiskInputs],
        *,
        fractional: bool = False,
    ) -> dict[str, SymbolLimits]:
        """``limits_for`` of many symbols; ``inputs(symbol)`` gives each one's inputs."""
        return {s: self.limits_for(s, inputs(s), fractional=fractional) for s in symbols}


def _check(name: str, ok: bool, detail: str) -> RiskCheck:
    return RiskCheck(name=name, ok=ok, detail=detail)


class _Refused(Exception):
    """``quick_size``: the first rule that failed (nothing after it can change that)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
