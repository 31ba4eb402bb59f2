"""Where the simulated exchange keeps its account between runs, row by row.

The sim's history only grows (every order and fill ever made), so it is not saved as one
document: a save writes the account head (cash, positions, P&L — bounded by the number of
symbols) and only the orders and fills that changed since the last save. Loading reads
the head, the orders that are still open, every client order id (they are unique
forever) and the recent fills; an old final order is read on demand.

Everything crosses this boundary as JSON text: the store keeps it and a few columns to
find it by, and knows nothing else of the sim's formats. The memory service
(:class:`~perun_tui.services.memory.Memory`) is the real store; :class:`DictSimStore`
keeps the same rows in memory (tests, throwaway sims).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["DictSimStore", "SimFillRow", "SimOrderRow", "SimSaved", "SimStore"]


@dataclass(frozen=True, slots=True)
class SimOrderRow:
    """One sim order as saved: ``data`` is the sim's JSON record of it."""

    client_order_id: str
    broker_order_id: str
    open: bool  # not final yet: loaded at start
    data: str


@dataclass(frozen=True, slots=True)
class SimFillRow:
    """One sim fill as saved: ``data`` is the fill's JSON."""

    fill_id: str
    ts: dt.datetime
    data: str


@dataclass(slots=True)
class SimSaved:
    """What a store gives back at start."""

    head: str  # the account head, JSON
    open_orders: list[str] = field(default_factory=list)  # ``data`` of open orders, oldest first
    order_ids: list[str] = field(default_factory=list)  # every client order id saved
    fills: list[str] = field(default_factory=list)  # fills since ``fills_since``, in time order


@runtime_checkable
class SimStore(Protocol):
    async def load_sim(self, fills_since: dt.datetime | None) -> SimSaved | None:
        """The saved sim, or None when there is none; fills at or after ``fills_since``
        (all of them when None; a few older ones do no harm)."""
        ...

    async def save_sim(
        self, head: str, orders: Sequence[SimOrderRow], fills: Sequence[SimFillRow]
    ) -> None:
        """Replace the head, upsert ``orders`` (by client order id) and add ``fills`` (a
        fill id already saved is kept as it was) — all or nothing."""
        ...

    async def load_sim_order(
        self, *, client_order_id: str | None = None, broker_order_id: str | None = None
    ) -> str | None:
        """The ``data`` of one saved order, found by either id."""
        ...


class DictSimStore:
    """A :class:`SimStore` in memory (``saves`` counts the saves)."""

    def __init__(self) -> None:
        self.head: str | None = None
        self.orders: dict[str, SimOrderRow] = {}
        self.fills: dict[str, SimFillRow] = {}
        self.saves = 0

    async def load_sim(self, fills_since: dt.datetime | None) -> SimSaved | None:
        if self.head is None:
            return None
        return SimSaved(
            head=self.head,
            open_orders=[r.data for r in self.orders.values() if r.open],
            order_ids=list(self.orders),
            fills=[
                r.data
                for r in self.fills.values()
                if fills_since is None or r.ts >= fills_since
            ],
        )

    async def save_sim(
        self, head: str, orders: Sequence[SimOrderRow], fills: Sequence[SimFillRow]
    ) -> None:
        self.head = head
        for row in orders:
            self.orders[row.client_order_id] = row
        for fill in fills:
            self.fills.setdefault(fill.fill_id, fill)
        self.saves += 1

    async def load_sim_order(
        self, *, client_order_id: str | None = None, broker_order_id: str | None = None
    ) -> str | None:
        for row in self.orders.values():
            if row.client_order_id == client_order_id or (
                broker_order_id is not None and row.broker_order_id == broker_order_id
            ):
                return row.data
        return None
