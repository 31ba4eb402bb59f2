"""Domain types shared by every layer: market data, account state, signals and orders.

Signals and orders carry explicit state machines. A status change goes through
``transition()``, which refuses an illegal move instead of silently overwriting the
status, so a bug that would e.g. resurrect a rejected signal fails loudly in tests.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class IllegalTransition(ValueError):
    """A status change the state machine does not allow."""


# --------------------------------------------------------------------------- market


class Bar(_Model):
    symbol: str
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


class Quote(_Model):
    symbol: str
    ts: datetime
    bid: float
    ask: float
    last: float
    volume: float = 0.0  # volume of the latest bar, when the source knows it

    @property
    def mid(self) -> float:
        if self.bid > 0 and self.ask > 0:
            return (self.bid + self.ask) / 2
        return self.last

    @property
    def spread_pct(self) -> float:
        mid = self.mid
        if mid <= 0 or self.bid <= 0 or self.ask <= 0:
            return 0.0
        return (self.ask - self.bid) / mid * 100


class MarketClock(_Model):
    ts: datetime
    is_open: bool
    next_open: datetime
    next_close: datetime


# --------------------------------------------------------------------------- account


class Position(_Model):
    symbol: str
    qty: float
    avg_price: float
    market_price: float
    opened_at: datetime | None = None

    @property
    def market_value(self) -> float:
        return self.qty * self.market_price

    @property
    def cost_basis(self) -> float:
        return self.qty * self.avg_price

    @property
    def unrealized_pl(self) -> float:
        return (self.market_price - self.avg_price) * self.qty

    @property
    def unrealized_pl_pct(self) -> float:
        if self.avg_price == 0:
            return 0.0
        sign = 1.0 if self.qty >= 0 else -1.0
        return (self.market_price / self.avg_price - 1.0) * 100 * sign


class Account(_Model):
    cash: float
    equity: float
    buying_power: float
    currency: str = "USD"
    last_equity: float | None = None  # equity at the previous session close
    status: str = "ACTIVE"

    @property
    def day_pl(self) -> float:
        return 0.0 if self.last_equity is None else self.equity - self.last_equity

    @property
    def day_pl_pct(self) -> float:
        if not self.last_equity:
            return 0.0
        return self.day_pl / self.last_equity * 100


# --------------------------------------------------------------------------- signals


class Action(StrEnum):
    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"


class SignalStatus(StrEnum):
    PROPOSED = "proposed"
    REFUSED = "refused"  # by validation or the risk policy
    PENDING = "pending"  # waiting for a human
    APPROVED = "approved"
    REJECTED = "rejected"  # by a human
    EXPIRED = "expired"  # TTL passed, or drift too large at approval
    SUBMITTED = "submitted"
    FILLED = "filled"
    PARTIALLY_FILLED = "partially_filled"
    CANCELED = "canceled"
    FAILED = "failed"  # the broker refused or the submission could not be made


SIGNAL_TRANSITIONS: dict[SignalStatus, frozenset[SignalStatus]] = {
    SignalStatus.PROPOSED: frozenset(
        {SignalStatus.REFUSED, SignalStatus.PENDING, SignalStatus.APPROVED}
    ),
    SignalStatus.PENDING: frozenset(
        {SignalStatus.APPROVED, SignalStatus.REJECTED, SignalStatus.EXPIRED}
    ),
    SignalStatus.APPROVED: frozenset(
        {
            SignalStatus.SUBMITTED,
            SignalStatus.EXPIRED,
            SignalStatus.REJECTED,
            SignalStatus.FAILED,
            SignalStatus.REFUSED,
        }
    ),
    SignalStatus.SUBMITTED: frozenset(
        {
            SignalStatus.FILLED,
            SignalStatus.PARTIALLY_FILLED,
            SignalStatus.CANCELED,
            SignalStatus.FAILED,
        }
    ),
    SignalStatus.PARTIALLY_FILLED: frozenset(
        {SignalStatus.PARTIALLY_FILLED, SignalStatus.FILLED, SignalStatus.CANCELED}
    ),
    SignalStatus.REFUSED: frozenset(),
    SignalStatus.REJECTED: frozenset(),
    SignalStatus.EXPIRED: frozenset(),
    SignalStatus.FILLED: frozenset(),
    SignalStatus.CANCELED: frozenset(),
    SignalStatus.FAILED: frozenset(),
}

OPEN_SIGNAL_STATUSES = frozenset(
    {
        SignalStatus.PENDING,
        SignalStatus.APPROVED,
        SignalStatus.SUBMITTED,
        SignalStatus.PARTIALLY_FILLED,
    }
)


class RiskCheck(_Model):
    name: str
    ok: bool
    detail: str


class SignalTransition(_Model):
    signal_id: str
    old: SignalStatus | None
    new: SignalStatus
    by: str  # "analyst", "risk", "user", "auto", "ttl", "broker", "system"
    reason: str
    at: datetime


class Signal(_Model):
    """One trade idea from the analyst, through risk and approval to its order."""

    id: str
    cycle: int
    symbol: str
    action: Action
    confidence: float
    rationale: str
    analyst: str
    created_at: datetime
    price: float  # reference price when proposed
    target_price: float | None = None
    stop_loss: float | None = None
    qty: float = 0.0  # sized by the risk policy
    notional: float = 0.0
    status: SignalStatus = SignalStatus.PROPOSED
    reason: str = ""  # why it is in its status (refusal reason, rejection, ...)
    expires_at: datetime | None = None
    updated_at: datetime | None = None
    risk_checks: list[RiskCheck] = Field(default_factory=list)
    client_order_id: str | None = None
    fill_price: float | None = None

    @property
    def side(self) -> Side:
        return Side.BUY if self.action is Action.BUY else Side.SELL

    def can_move_to(self, new: SignalStatus) -> bool:
        return new in SIGNAL_TRANSITIONS[self.status]

    def transition(
        self, new: SignalStatus, *, by: str, reason: str, at: datetime
    ) -> SignalTransition:
        """Move to ``new`` if the lifecycle allows it; returns the record to store."""
        if not self.can_move_to(new):
            raise IllegalTransition(
                f"signal {self.id}: {self.status.value} → {new.value} is not allowed"
            )
        record = SignalTransition(
            signal_id=self.id, old=self.status, new=new, by=by, reason=reason, at=at
        )
        self.status = new
        self.reason = reason
        self.updated_at = at
        return record


def signal_id_for(cycle: int, symbol: str, action: Action, salt: str = "") -> str:
    """A stable id: the same cycle's same idea always gets the same id."""
    digest = hashlib.sha1(f"{salt}|{cycle}|{symbol}|{action.value}".encode()).hexdigest()
    return f"s{cycle}-{symbol}-{action.value}-{digest[:6]}"


def client_order_id_for(signal_id: str, mode: str) -> str:
    """Deterministic, ≤128 chars: approving a signal twice can only ever name one order."""
    return f"perun-{mode}-{signal_id}"[:128]


# --------------------------------------------------------------------------- orders


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class OrderStatus(StrEnum):
    INTENT = "intent"  # committed locally, not yet (known to be) at the broker
    UNKNOWN = "unknown"  # sent, outcome not known yet: resolve by client_order_id
    NEW = "new"  # accepted by the broker
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"  # never reached the broker and will not be retried


FINAL_ORDER_STATUSES = frozenset(
    {
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.EXPIRED,
        OrderStatus.REJECTED,
        OrderStatus.FAILED,
    }
)

ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.INTENT: frozenset(
        {
            OrderStatus.UNKNOWN,
            OrderStatus.NEW,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.REJECTED,
            OrderStatus.FAILED,
            OrderStatus.CANCELED,
        }
    ),
    OrderStatus.UNKNOWN: frozenset(
        {
            OrderStatus.NEW,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELED,
            OrderStatus.EXPIRED,
            OrderStatus.REJECTED,
            OrderStatus.FAILED,
            OrderStatus.UNKNOWN,
        }
    ),
    OrderStatus.NEW: frozenset(
        {
            OrderStatus.NEW,
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELED,
            OrderStatus.EXPIRED,
            OrderStatus.REJECTED,
        }
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELED,
            OrderStatus.EXPIRED,
        }
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.FAILED: frozenset(),
}


class OrderRequest(_Model):
    client_order_id: str
    symbol: str
    side: Side
    qty: float | None = None
    notional: float | None = None
    type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    time_in_force: str = "day"
    signal_id: str | None = None


class Order(_Model):
    client_order_id: str
    symbol: str
    side: Side
    qty: float | None = None
    notional: float | None = None
    type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    status: OrderStatus = OrderStatus.INTENT
    broker_order_id: str | None = None
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    signal_id: str | None = None
    reason: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    external: bool = False  # found at the broker, not placed by Perun

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_ORDER_STATUSES

    def can_move_to(self, new: OrderStatus) -> bool:
        return new in ORDER_TRANSITIONS[self.status]

    @classmethod
    def from_request(cls, req: OrderRequest, at: datetime) -> Order:
        return cls(
            client_order_id=req.client_order_id,
            symbol=req.symbol,
            side=req.side,
            qty=req.qty,
            notional=req.notional,
            type=req.type,
            limit_price=req.limit_price,
            signal_id=req.signal_id,
            created_at=at,
            updated_at=at,
        )


class Fill(_Model):
    fill_id: str  # the broker's execution id: applying a fill twice is detectable
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    ts: datetime


class OrderUpdate(_Model):
    """One event from the broker's order stream."""

    event: str  # new, fill, partial_fill, canceled, expired, rejected, ...
    order: Order
    fill: Fill | None = None


# --------------------------------------------------------------------------- cycles


class CycleReport(_Model):
    cycle: int
    started_at: datetime
    finished_at: datetime | None = None
    market_open: bool = True
    skipped: str = ""  # why the cycle did no analysis (market closed, halted, ...)
    analyst: str = ""
    signals: int = 0
    refused: int = 0
    pending: int = 0
    submitted: int = 0
    errors: list[str] = Field(default_factory=list)

    @property
    def duration_s(self) -> float:
        if self.finished_at is None:
            return 0.0
        return (self.finished_at - self.started_at).total_seconds()


class PerformanceMetrics(_Model):
    at: datetime
    equity: float
    cash: float
    realized_pl: float
    unrealized_pl: float
    trades: int
    wins: int
    win_rate: float
    max_drawdown_pct: float
    extra: dict[str, Any] = Field(default_factory=dict)
