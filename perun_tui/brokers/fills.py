"""Fills nobody reported: the difference between what a broker says is filled and what
was recorded, as one fill at the price that makes the averages add up.

Brokers do not replay executions missed while nobody listened (a dropped stream, Perun
not running); an order's ``filled_qty`` and ``filled_avg_price`` are all that is left.
"""

from __future__ import annotations

from datetime import UTC, datetime

from perun_tui.models import Fill, Order

__all__ = ["gap_fill"]

_EPS = 1e-9


def gap_fill(
    order: Order,
    *,
    recorded_qty: float,
    recorded_value: float,
    id_prefix: str,
    at: datetime | None = None,
) -> Fill | None:
    """The fill accounting for ``order.filled_qty`` beyond ``recorded_qty``, or None.

    ``recorded_value`` is Σ qty × price of what was recorded; the gap's price is whatever
    makes the recorded fills and the gap average to the broker's ``filled_avg_price``
    (the broker's average itself when that cannot be worked out). The id is stable — the
    same gap seen twice gets the same id, so it is stored once.
    """
    gap = round(order.filled_qty - recorded_qty, 9)
    if gap <= _EPS or not order.filled_avg_price:
        return None
    price = order.filled_avg_price
    if recorded_qty > 0:
        value = order.filled_avg_price * order.filled_qty - recorded_value
        if value > 0:
            price = value / gap
    return Fill(
        fill_id=f"{id_prefix}:{order.broker_order_id or order.client_order_id}:"
        f"{order.filled_qty:.9g}",
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        qty=gap,
        price=round(price, 6),
        ts=order.updated_at or at or datetime.now(UTC),
    )
