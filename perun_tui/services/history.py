"""Read-only access to stored history for analysis: snapshots, signals, transitions, fills.

The analysis reads thousands of rows at once. It uses its own read-only SQLite connection
in a worker thread instead of the daemon's ``Memory`` connection: in WAL mode a reader
sees only committed data and never blocks the writer, so measuring performance cannot
hold up a trading cycle, and the work stays off the event loop. The tables and their
columns are the ones defined in ``services/migrations.py``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from perun_tui.models import Fill, Side, Signal, SignalStatus, SignalTransition
from perun_tui.services.memory import EXCHANGE_TZ


@dataclass(frozen=True, slots=True)
class Holding:
    qty: float
    avg_price: float
    market_price: float

    @property
    def market_value(self) -> float:
        return self.qty * self.market_price

    @property
    def unrealized_pl(self) -> float:
        return (self.market_price - self.avg_price) * self.qty


@dataclass(frozen=True, slots=True)
class Point:
    """One stored snapshot, reduced to what the analysis needs."""

    cycle: int | None
    at: datetime
    equity: float
    cash: float
    prices: dict[str, float]  # last trade price per symbol
    holdings: dict[str, Holding] = field(default_factory=dict)

    @property
    def session(self) -> date:
        """The trading day (New York calendar date) the snapshot belongs to."""
        return self.at.astimezone(EXCHANGE_TZ).date()

    @property
    def gross_exposure(self) -> float:
        return sum(abs(h.market_value) for h in self.holdings.values())


@dataclass(slots=True)
class History:
    """Everything the analysis reads, oldest first."""

    points: list[Point]
    signals: list[Signal]
    transitions: dict[str, list[SignalTransition]]
    fills: list[Fill]  # every fill up to ``until``: earlier ones set the cost basis
    since: datetime | None = None
    until: datetime | None = None


def _ts(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _range(column: str, since: datetime | None, until: datetime | None) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if since is not None:
        where.append(f"{column} >= ?")
        params.append(_ts(since))
    if until is not None:
        where.append(f"{column} <= ?")
        params.append(_ts(until))
    return (" WHERE " + " AND ".join(where) if where else ""), params


def _point(row: Sequence[Any]) -> Point:
    cycle, at, equity, cash, positions, quotes = row
    prices: dict[str, float] = {}
    for q in json.loads(quotes):
        last = float(q.get("last") or 0.0)
        if last <= 0 and q.get("bid") and q.get("ask"):
            last = (float(q["bid"]) + float(q["ask"])) / 2
        if last > 0:
            prices[str(q["symbol"])] = last
    holdings = {
        str(p["symbol"]): Holding(
            float(p["qty"]), float(p["avg_price"]), float(p["market_price"])
        )
        for p in json.loads(positions)
        if float(p["qty"]) != 0
    }
    return Point(
        cycle=cycle,
        at=datetime.fromisoformat(at),
        equity=float(equity),
        cash=float(cash),
        prices=prices,
        holdings=holdings,
    )


def _connect(path: Path) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    conn.execute("PRAGMA query_only = 1")
    return conn


def read_history(
    path: Path | str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> History:
    """Load history between ``since`` and ``until`` (inclusive; ``None`` = unbounded).

    Blocking: call it through ``asyncio.to_thread`` (``load_history`` does).
    """
    db = Path(path)
    if not db.exists():
        return History([], [], {}, [], since, until)
    conn = _connect(db)
    try:
        where, params = _range("at", since, until)
        rows = conn.execute(
            "SELECT cycle, at, equity, cash, positions, quotes FROM snapshots"
            f"{where} ORDER BY at, id",
            params,
        ).fetchall()
        points = [_point(r) for r in rows]

        where, params = _range("created_at", since, until)
        signals = [
            Signal.model_validate_json(r[0])
            for r in conn.execute(
                f"SELECT data FROM signals{where} ORDER BY created_at, rowid", params
            )
        ]
        transitions: dict[str, list[SignalTransition]] = {}
        if signals:
            where, params = _range("s.created_at", since, until)
            for r in conn.execute(
                'SELECT t.signal_id, t.old, t.new, t."by", t.reason, t.at '
                f"FROM signal_transitions t JOIN signals s ON s.id = t.signal_id{where} "
                "ORDER BY t.id",
                params,
            ):
                transitions.setdefault(r[0], []).append(
                    SignalTransition(
                        signal_id=r[0],
                        old=None if r[1] is None else SignalStatus(r[1]),
                        new=SignalStatus(r[2]),
                        by=r[3],
                        reason=r[4],
                        at=datetime.fromisoformat(r[5]),
                    )
                )

        where, params = _range("ts", None, until)
        fills = [
            Fill(
                fill_id=r[0], client_order_id=r[1], symbol=r[2], side=Side(r[3]),
                qty=float(r[4]), price=float(r[5]), ts=datetime.fromisoformat(r[6]),
            )
            for r in conn.execute(
                "SELECT fill_id, client_order_id, symbol, side, qty, price, ts FROM fills"
                f"{where} ORDER BY ts, rowid",
                params,
            )
        ]
    finally:
        conn.close()
    return History(points, signals, transitions, fills, since, until)


def snapshot_span(path: Path | str) -> tuple[datetime | None, datetime | None]:
    """The first and last stored snapshot times (None, None: nothing stored). Blocking."""
    db = Path(path)
    if not db.exists():
        return None, None
    conn = _connect(db)
    try:
        row = conn.execute("SELECT min(at), max(at) FROM snapshots").fetchone()
    finally:
        conn.close()
    if row is None or row[0] is None:
        return None, None
    return datetime.fromisoformat(row[0]), datetime.fromisoformat(row[1])


async def load_history(
    path: Path | str, *, since: datetime | None = None, until: datetime | None = None
) -> History:
    import asyncio

    return await asyncio.to_thread(read_history, path, since=since, until=until)


def session_bounds(day: date) -> tuple[datetime, datetime]:
    """Midnight to midnight of a New York calendar day, in UTC."""
    start = datetime.combine(day, datetime.min.time(), tzinfo=EXCHANGE_TZ)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)
