"""The Broker contract that the sim exchange and the Alpaca adapter implement.

Errors are classified so the execution service can act without knowing the broker:

* ``BrokerRejected`` — final: the broker said no (403/422). The order ends.
* ``BrokerRetryable`` — nothing was sent or the broker asked us to wait (429, connection
  refused). Safe to retry the same request.
* ``BrokerUnknownOutcome`` — the request may or may not have reached the broker (timeout,
  5xx, dropped connection after sending). Resolve it with ``order_by_client_id``; never
  resubmit blindly.
* ``OrderRefused`` — refused locally, never sent (it breaks the broker's rules).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from perun_tui.models import (
    Account,
    Bar,
    MarketClock,
    Order,
    OrderRequest,
    OrderUpdate,
    Position,
    Quote,
)


def price_increment(price: float) -> float:
    """A limit price on the exchanges' tick: whole cents at $1 and above, else 1/100 of a
    cent (US equities refuse sub-penny prices above $1; Alpaca checks it)."""
    return round(price, 2 if price >= 1 else 4)


class BrokerError(Exception):
    """Base class; ``str()`` is a message a user can act on."""

    kind = "error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class BrokerRejected(BrokerError):
    kind = "rejected"


class BrokerRetryable(BrokerError):
    kind = "retryable"

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float = 1.0
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class BrokerUnknownOutcome(BrokerError):
    kind = "unknown"


class UnknownSymbol(BrokerRejected):
    """The broker does not know the symbol (config typo, delisted...)."""


class OrderRefused(BrokerError):
    """Refused by Perun before sending: the request breaks the broker's rules. Final like
    a rejection, but the broker never saw it — so it is not a ``BrokerRejected``."""

    kind = "refused"


@runtime_checkable
class Broker(Protocol):
    name: str

    async def start(self) -> None:
        """Open connections and streams."""

    async def close(self) -> None:
        """Close everything; safe to call twice."""

    async def account(self) -> Account: ...

    async def positions(self) -> list[Position]: ...

    async def open_orders(self) -> list[Order]: ...

    async def latest(self, symbols: list[str]) -> dict[str, Quote]:
        """Latest quote per symbol; symbols the broker does not know are absent."""
        ...

    async def history(
        self, symbols: list[str], timeframe_minutes: int, n: int
    ) -> dict[str, list[Bar]]:
        """Up to ``n`` most recent bars per symbol, oldest first."""
        ...

    async def submit(self, request: OrderRequest) -> Order: ...

    async def order_by_client_id(self, client_order_id: str) -> Order | None: ...

    async def cancel(self, broker_order_id: str) -> None: ...

    async def clock(self) -> MarketClock: ...

    def order_updates(self) -> AsyncIterator[OrderUpdate]:
        """Order updates as they happen; the iterator ends when the broker closes."""
        ...
