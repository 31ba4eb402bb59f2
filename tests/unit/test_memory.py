"""Memory against a real SQLite file: schema, atomicity, durability knobs, queries."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from perun_tui.brokers.sim import SimBroker
from perun_tui.brokers.sim_store import DictSimStore, SimFillRow, SimOrderRow
from perun_tui.llm.base import AnalysisResult, ProposedSignal, Usage
from perun_tui.market_hours import FrozenClock, TradingCalendar
from perun_tui.models import (
    Account,
    Action,
    CycleReport,
    Fill,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    PerformanceMetrics,
    Position,
    Quote,
    RiskCheck,
    Side,
    Signal,
    SignalStatus,
    client_order_id_for,
)
from perun_tui.services import memory as memory_module
from perun_tui.services.memory import Memory, StorageError
from perun_tui.services.migrations import LATEST_VERSION, MIGRATIONS, SCHEMA_VERSION_TABLE

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # a Monday, 10:00 in New York


def make_signal(
    n: int,
    symbol: str = "AAPL",
    action: Action = Action.BUY,
    *,
    cycle: int | None = None,
    price: float = 100.0,
    at: datetime | None = None,
) -> Signal:
    return Signal(
        id=f"s{n}-{symbol}-{action.value}",
        cycle=cycle if cycle is not None else n,
        symbol=symbol,
        action=action,
        confidence=0.75,
        rationale="trend up, volume confirms",
        analyst="rules",
        created_at=at or T0 + timedelta(minutes=n),
        price=price,
        target_price=price * 1.05,
        stop_loss=price * 0.97,
        risk_checks=[RiskCheck(name="max_position", ok=True, detail="4% < 10%")],
    )


def make_order(signal: Signal, status: OrderStatus = OrderStatus.INTENT) -> Order:
    return Order(
        client_order_id=client_order_id_for(signal.id, "sim"),
        symbol=signal.symbol,
        side=signal.side,
        qty=10,
        signal_id=signal.id,
        status=status,
        created_at=signal.created_at,
        updated_at=signal.created_at,
    )


@pytest.fixture
async def memory(tmp_path: Path) -> AsyncIterator[Memory]:
    mem = await Memory.open(tmp_path / "data" / "perun-sim.db")
    try:
        yield mem
    finally:
        await mem.close()


def raw(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read with a separate plain connection: what is really committed on disk."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# --------------------------------------------------------------------------- schema


async def test_open_creates_dirs_wal_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "perun.db"
    mem = await Memory.open(path)
    try:
        assert path.exists()
        assert (await mem._fetch("PRAGMA journal_mode"))[0][0] == "wal"
        assert (await mem._fetch("PRAGMA foreign_keys"))[0][0] == 1
        assert (await mem._fetch("PRAGMA busy_timeout"))[0][0] == 5000
        assert (await mem._fetch("PRAGMA synchronous"))[0][0] == 1  # NORMAL
        assert await mem.schema_version() == LATEST_VERSION
    finally:
        await mem.close()
    # WAL is a property of the file: a fresh connection sees it too
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]


async def test_migrations_idempotent_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "perun.db"
    for _ in range(3):
        mem = await Memory.open(path)
        await mem.set_state("k", "v")
        await mem.close()
    versions = raw(path, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(v,) for v in range(1, LATEST_VERSION + 1)]
    tables = {r[0] for r in raw(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "cycles", "snapshots", "analyses", "signals", "signal_transitions", "orders",
        "fills", "errors", "state", "metrics", "schema_version",
    } <= tables


async def test_failed_migration_rolls_back_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "perun.db"
    await (await Memory.open(path)).close()
    bad = "CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);"
    monkeypatch.setattr(memory_module, "MIGRATIONS", (*MIGRATIONS, bad))
    monkeypatch.setattr(memory_module, "LATEST_VERSION", LATEST_VERSION + 1)
    with pytest.raises(StorageError, match=f"schema version {LATEST_VERSION + 1}"):
        await Memory.open(path)
    assert raw(path, "SELECT MAX(version) FROM schema_version") == [(LATEST_VERSION,)]
    assert raw(path, "SELECT name FROM sqlite_master WHERE name = 'half_done'") == []


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "perun.db"
    await (await Memory.open(path)).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (999, '2030-01-01')")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        await Memory.open(path)


async def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "perun.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match=str(path)):
        await Memory.open(path)


async def test_integrity_check_and_close_twice(memory: Memory) -> None:
    assert await memory.integrity_check() == "ok"
    await memory.close()
    await memory.close()


# --------------------------------------------------------------------------- cycles


async def test_cycle_numbers_continue_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "perun.db"
    mem = await Memory.open(path)
    assert await mem.next_cycle_number() == 1
    for n in (1, 2, 3):
        await mem.start_cycle(n, T0 + timedelta(minutes=15 * n))
    report = CycleReport(
        cycle=3, started_at=T0, finished_at=T0 + timedelta(seconds=4), analyst="rules",
        signals=4, refused=1, pending=2, submitted=1, errors=["quote stale: MSFT"],
    )
    await mem.finish_cycle(report)
    await mem.close()

    mem = await Memory.open(path)
    try:
        assert await mem.next_cycle_number() == 4
        cycles = await mem.cycles(10)
        assert [c.cycle for c in cycles] == [3, 2, 1]
        assert cycles[0] == report
        assert cycles[1] == CycleReport(cycle=2, started_at=T0 + timedelta(minutes=30))
    finally:
        await mem.close()


# --------------------------------------------------------------------------- signals


async def test_signal_round_trip_and_transitions(memory: Memory) -> None:
    sig = make_signal(1)
    t1 = sig.transition(SignalStatus.PENDING, by="risk", reason="sized 10", at=T0)
    sig.expires_at = T0 + timedelta(minutes=15)
    await memory.save_signal(sig, t1)
    t2 = sig.transition(SignalStatus.REJECTED, by="user", reason="no", at=T0 + timedelta(1))
    await memory.save_signal(sig, t2)
    assert await memory.get_signal(sig.id) == sig
    assert await memory.get_signal("nope") is None
    assert await memory.transitions(sig.id) == [t1, t2]


async def test_signal_transition_and_order_intent_are_atomic(
    memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sig = make_signal(1)
    sig.transition(SignalStatus.PENDING, by="risk", reason="ok", at=T0)
    await memory.save_signal(sig)
    approve = sig.transition(SignalStatus.APPROVED, by="user", reason="a", at=T0)
    order = make_order(sig)
    sig.client_order_id = order.client_order_id

    # the order write fails after the signal and transition were written: all undone
    monkeypatch.setattr(memory_module, "_ORDER_UPSERT", "INSERT INTO no_such_table VALUES (1)")
    with pytest.raises(sqlite3.OperationalError):
        await memory.save_signal(sig, approve, order)
    monkeypatch.undo()
    stored = await memory.get_signal(sig.id)
    assert stored is not None and stored.status is SignalStatus.PENDING
    assert await memory.transitions(sig.id) == []
    assert await memory.get_order(order.client_order_id) is None

    # a failure later in an explicit transaction undoes the whole block too
    with pytest.raises(RuntimeError):
        async with memory.transaction():
            await memory.save_signal(sig, approve, order)
            await memory.save_error(1, T0, "execution", "about to fail")
            raise RuntimeError("broker exploded")
    assert (await memory.get_signal(sig.id)).status is SignalStatus.PENDING  # type: ignore[union-attr]
    assert await memory.get_order(order.client_order_id) is None
    assert await memory.errors() == []
    assert raw(memory.path, "SELECT COUNT(*) FROM orders") == [(0,)]

    # and the happy path commits all three, visible to another connection at once
    await memory.save_signal(sig, approve, order)
    assert await memory.get_order(order.client_order_id) == order
    assert await memory.transitions(sig.id) == [approve]
    assert raw(memory.path, "SELECT status FROM signals") == [("approved",)]
    assert raw(memory.path, "SELECT status, signal_id FROM orders") == [("intent", sig.id)]


async def test_what_was_just_written_is_read_back_without_a_round_trip(
    memory: Memory,
) -> None:
    sig = make_signal(1)
    approve = sig.transition(SignalStatus.APPROVED, by="auto", reason="a", at=T0)
    order = make_order(sig)
    await memory.save_signal(sig, approve, order)
    statements: list[str] = []
    await memory._conn.set_trace_callback(statements.append)
    assert await memory.get_order(order.client_order_id) == order
    assert await memory.get_signal(sig.id) == sig
    order.status = OrderStatus.NEW  # the caller's object is not what was stored
    assert (await memory.get_order(order.client_order_id)).status is OrderStatus.INTENT  # type: ignore[union-attr]
    await memory.save_order(order)
    assert (await memory.get_order(order.client_order_id)).status is OrderStatus.NEW  # type: ignore[union-attr]
    await memory._conn.set_trace_callback(None)  # type: ignore[arg-type]  # None clears it
    assert not [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # a write inside a transaction that rolls back leaves the committed version
    with pytest.raises(RuntimeError):
        async with memory.transaction():
            await memory.save_order(order.model_copy(update={"status": OrderStatus.FILLED}))
            raise RuntimeError("undo")
    assert (await memory.get_order(order.client_order_id)).status is OrderStatus.NEW  # type: ignore[union-attr]
    assert raw(memory.path, "SELECT status FROM orders") == [("new",)]


async def test_nested_transaction_is_a_savepoint(memory: Memory) -> None:
    async def body() -> None:
        async with memory.transaction():
            await memory.set_state("outer", "1")
            with pytest.raises(ValueError):
                async with memory.transaction():
                    await memory.set_state("inner", "1")
                    raise ValueError("inner fails")
            await memory.save_signals([make_signal(1)])  # a helper inside: no deadlock
            assert await memory.get_state("outer") == "1"  # reads inside see own writes

    await asyncio.wait_for(body(), timeout=5)
    assert await memory.get_state("outer") == "1"
    assert await memory.get_state("inner") is None
    assert await memory.get_signal(make_signal(1).id) is not None


async def test_other_tasks_never_see_uncommitted_writes(memory: Memory) -> None:
    written = asyncio.Event()
    release = asyncio.Event()

    async def writer() -> None:
        async with memory.transaction():
            await memory.set_state("k", "v")
            written.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await written.wait()
    reader = asyncio.create_task(memory.get_state("k"))
    await asyncio.sleep(0.05)
    assert not reader.done()  # waits for the writer instead of reading its open work
    release.set()
    await task
    assert await reader == "v"


@pytest.mark.parametrize("yields_before_cancel", [0, 1, 3, -1])  # -1: inside the body
async def test_cancelled_transaction_leaves_nothing_and_memory_usable(
    memory: Memory, yields_before_cancel: int
) -> None:
    started = asyncio.Event()

    async def body() -> None:
        async with memory.transaction():
            await memory.set_state("half", "written")
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(body())
    if yields_before_cancel < 0:
        await started.wait()
    for _ in range(yields_before_cancel):  # cancel while BEGIN or the write is queued
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await memory.get_state("half") is None
    await memory.set_state("after", "ok")  # no transaction left dangling
    assert raw(memory.path, "SELECT key FROM state") == [("after",)]


async def test_durable_writes_switch_synchronous_level(memory: Memory) -> None:
    async def level() -> int:
        return int((await memory._fetch("PRAGMA synchronous"))[0][0])

    sig = make_signal(1)
    await memory.save_order(make_order(sig))
    assert await level() == 2  # FULL: the intent is synced to the WAL at commit
    await memory.set_state("k", "v")
    assert await level() == 1  # back to NORMAL for history writes
    await memory.save_signal(sig, order=make_order(sig))
    assert await level() == 2


async def test_save_signals_batch(memory: Memory) -> None:
    items = []
    for i, sym in enumerate(["AAPL", "MSFT", "NVDA"]):
        s = make_signal(i, sym)
        items.append((s, s.transition(SignalStatus.PENDING, by="risk", reason="ok", at=T0)))
    await memory.save_signals(items)
    assert {s.id for s in await memory.signals()} == {s.id for s, _ in items}
    assert len(await memory.transitions(items[0][0].id)) == 1

    other = make_signal(9)
    bad = make_signal(10)
    wrong = bad.transition(SignalStatus.PENDING, by="risk", reason="", at=T0)
    with pytest.raises(ValueError):
        await memory.save_signals([other, (make_signal(11), wrong)])
    assert await memory.get_signal(other.id) is None


async def test_signal_queries(memory: Memory) -> None:
    a = make_signal(1, "AAPL")
    b = make_signal(2, "MSFT")
    c = make_signal(3, "AAPL", Action.SELL)
    for s in (a, b, c):
        s.transition(SignalStatus.PENDING, by="risk", reason="ok", at=T0)
    c.transition(SignalStatus.REJECTED, by="user", reason="no", at=T0)
    await memory.save_signals([c, a, b])  # insertion order differs from time order
    assert [s.id for s in await memory.signals()] == [c.id, b.id, a.id]
    assert [s.id for s in await memory.signals(limit=2)] == [c.id, b.id]
    assert [s.id for s in await memory.signals(symbol="AAPL")] == [c.id, a.id]
    assert [s.id for s in await memory.signals([SignalStatus.PENDING])] == [b.id, a.id]
    assert [s.id for s in await memory.signals([SignalStatus.PENDING], symbol="MSFT")] == [b.id]
    assert await memory.signals([]) == []
    assert [s.id for s in await memory.pending_signals()] == [a.id, b.id]


async def test_pending_signals_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "perun.db"
    mem = await Memory.open(path)
    sigs = [make_signal(i, sym) for i, sym in enumerate(["NVDA", "SPY"])]
    for s in sigs:
        t = s.transition(SignalStatus.PENDING, by="risk", reason="awaiting approval", at=T0)
        s.expires_at = s.created_at + timedelta(minutes=15)
        await mem.save_signal(s, t)
    await mem.close()

    mem = await Memory.open(path)
    try:
        pending = await mem.pending_signals()
        assert pending == sigs
        assert [p.expires_at for p in pending] == [s.expires_at for s in sigs]
    finally:
        await mem.close()


# --------------------------------------------------------------------------- orders, fills


async def test_orders_upsert_and_open_orders(memory: Memory) -> None:
    orders = {}
    for i, status in enumerate(
        [OrderStatus.INTENT, OrderStatus.UNKNOWN, OrderStatus.NEW, OrderStatus.FILLED,
         OrderStatus.REJECTED]
    ):
        o = make_order(make_signal(i, f"S{i}"), status)
        orders[status] = o
        await memory.save_order(o)
    opened = await memory.open_orders()
    assert [o.status for o in opened] == [OrderStatus.INTENT, OrderStatus.UNKNOWN, OrderStatus.NEW]

    o = orders[OrderStatus.NEW].model_copy(
        update={"status": OrderStatus.FILLED, "filled_qty": 10, "filled_avg_price": 101.5,
                "broker_order_id": "b-123"}
    )
    await memory.save_order(o)
    assert await memory.get_order(o.client_order_id) == o
    assert await memory.get_order_by_broker_id("b-123") == o
    assert len(await memory.orders()) == 5
    assert {x.client_order_id for x in await memory.orders([OrderStatus.FILLED])} == {
        o.client_order_id, orders[OrderStatus.FILLED].client_order_id
    }
    assert [x.client_order_id for x in await memory.orders(limit=1)] == [
        orders[OrderStatus.REJECTED].client_order_id
    ]


async def test_save_fill_is_idempotent(memory: Memory) -> None:
    fill = Fill(
        fill_id="exec-1", client_order_id="perun-sim-x", symbol="AAPL", side=Side.BUY,
        qty=5, price=101.25, ts=T0,
    )
    assert await memory.save_fill(fill) is True
    assert await memory.save_fill(fill) is False
    later = fill.model_copy(update={"fill_id": "exec-2", "symbol": "MSFT", "ts": T0 + timedelta(1)})
    assert await memory.save_fill(later) is True
    assert await memory.fills() == [fill, later]
    assert await memory.fills(symbol="MSFT") == [later]
    assert await memory.fills(since=T0 + timedelta(hours=1)) == [later]


async def test_orders_missing_fills(memory: Memory) -> None:
    def fill(order: Order, n: int, qty: float) -> Fill:
        return Fill(fill_id=f"{order.client_order_id}-{n}", client_order_id=order.client_order_id,
                    symbol=order.symbol, side=order.side, qty=qty, price=100.0, ts=T0)

    covered, short, early, none = (
        make_order(make_signal(i, f"S{i}"), OrderStatus.FILLED).model_copy(
            update={"filled_qty": 10.0, "filled_avg_price": 100.0})
        for i in range(4)
    )
    await memory.save_order(covered, fill(covered, 1, 4.0))
    await memory.save_fill(fill(covered, 2, 6.0))
    await memory.save_fill(fill(covered, 2, 6.0))  # stored once: counted once
    await memory.save_order(short, fill(short, 1, 4.0))
    await memory.save_fill(fill(early, 1, 10.0))  # a fill stored before its order
    await memory.save_order(early)
    await memory.save_order(none)
    await memory.save_order(none.model_copy(update={"reason": "re-saved"}))  # an upsert
    assert [o.client_order_id for o in await memory.orders_missing_fills()] == [
        short.client_order_id, none.client_order_id
    ]
    await memory.save_fill(fill(short, 2, 6.0))
    assert [o.client_order_id for o in await memory.orders_missing_fills()] == [
        none.client_order_id
    ]


async def test_per_cycle_queries_read_indexes_not_tables(memory: Memory) -> None:
    """The queries every cycle runs must not read the whole history (their cost would
    grow with it): no full scan of a table, each uses the index meant for it."""
    plans: dict[str, list[str]] = {}
    queries = {
        "open orders": (
            f"SELECT data FROM orders WHERE {memory_module._OPEN_ORDERS_WHERE} "
            "ORDER BY created_at, rowid", ()),
        "missing fills": (
            f"SELECT data FROM orders WHERE {memory_module._FILLS_MISSING_WHERE} "
            "ORDER BY created_at, rowid", ()),
        "last trades": memory_module._last_trade_query(["AAPL", "MSFT"]),
        "recall": memory_module._recall_query(["AAPL", "MSFT"], 3),
    }
    for name, (sql, params) in queries.items():
        plans[name] = [r[3] for r in await memory._fetch("EXPLAIN QUERY PLAN " + sql, params)]
    # a scan is fine only of the symbol list or of a partial index holding just the rows
    # asked for (a scan of a whole index reads the whole history just the same)
    partial = ("VIRTUAL TABLE", "INDEX orders_open", "INDEX orders_fills_missing")
    for name, plan in plans.items():
        assert not [p for p in plan if p.startswith("SCAN") and not any(
            ok in p for ok in partial)], (name, plan)
    assert any("orders_open" in p or "orders_status" in p for p in plans["open orders"])
    assert any("orders_fills_missing" in p for p in plans["missing fills"])
    assert sum("orders_traded" in p for p in plans["last trades"]) == 2
    assert any("signals_symbol_created" in p for p in plans["recall"])


async def test_begin_cycle_numbers_in_one_statement(memory: Memory) -> None:
    assert await memory.begin_cycle(T0) == 1
    assert await memory.begin_cycle(T0 + timedelta(minutes=15)) == 2
    assert await memory.next_cycle_number() == 3
    cycles = await memory.cycles(10)
    assert [(c.cycle, c.started_at) for c in cycles] == [
        (2, T0 + timedelta(minutes=15)), (1, T0)]


async def test_signal_moves_order_and_fill_in_one_durable_transaction(
    memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sig = make_signal(1)
    sig.transition(SignalStatus.APPROVED, by="auto", reason="auto", at=T0)
    order = make_order(sig)
    await memory.save_signal(sig, order=order)
    submitted = sig.transition(SignalStatus.SUBMITTED, by="broker", reason="accepted", at=T0)
    filled = sig.transition(SignalStatus.FILLED, by="broker", reason="filled", at=T0)
    order = order.model_copy(update={"status": OrderStatus.FILLED, "filled_qty": 10})
    fill = Fill(fill_id="exec-1", client_order_id=order.client_order_id, symbol="AAPL",
                side=Side.BUY, qty=10, price=101.0, ts=T0)

    # a failure in the last statement undoes the moves and the order too
    monkeypatch.setattr(memory_module, "_FILL_INSERT", "INSERT INTO no_such_table VALUES (1)")
    with pytest.raises(sqlite3.OperationalError):
        await memory.save_signal(sig, [submitted, filled], order, fill)
    monkeypatch.undo()
    assert raw(memory.path, "SELECT status FROM signals") == [("approved",)]
    assert raw(memory.path, "SELECT status FROM orders") == [("intent",)]
    assert await memory.transitions(sig.id) == []

    assert await memory.save_signal(sig, [submitted, filled], order, fill) is True
    assert int((await memory._fetch("PRAGMA synchronous"))[0][0]) == 2  # FULL
    assert await memory.transitions(sig.id) == [submitted, filled]
    assert await memory.get_order(order.client_order_id) == order
    assert await memory.fills() == [fill]
    # the same fill again (e.g. from the order stream) is recognised
    assert await memory.save_order(order, fill) is False
    later = fill.model_copy(update={"fill_id": "exec-2"})
    assert await memory.save_order(order, later) is True
    assert await memory.save_order(order) is False
    assert await memory.fills() == [fill, later]
    with pytest.raises(ValueError):
        await memory.save_signal(make_signal(2), [submitted])


# --------------------------------------------------------------------------- recall


async def test_recall_order_limit_and_outcome_sign(memory: Memory) -> None:
    signals = [make_signal(i, "AAPL", Action.BUY, price=100.0) for i in range(7)]
    signals += [
        make_signal(10, "MSFT", Action.SELL, price=200.0),
        make_signal(11, "MSFT", Action.HOLD, price=200.0),
        make_signal(12, "NVDA", Action.BUY, price=50.0),
    ]
    signals[0].transition(SignalStatus.REFUSED, by="risk", reason="cap", at=T0)
    await memory.save_signals(signals)

    statements: list[str] = []
    await memory._conn.set_trace_callback(statements.append)
    recalled = await memory.recall(
        ["AAPL", "MSFT", "NVDA", "TSLA"], per_symbol=5, prices={"AAPL": 110.0, "MSFT": 190.0}
    )
    await memory._conn.set_trace_callback(None)  # type: ignore[arg-type]  # None clears it
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1

    assert set(recalled) == {"AAPL", "MSFT", "NVDA"}  # TSLA has no history
    aapl = recalled["AAPL"]
    assert [r.cycle for r in aapl] == [6, 5, 4, 3, 2]  # newest first, limited to 5
    assert aapl[0].outcome_pct == pytest.approx(10.0)  # a buy that rose: positive
    msft = recalled["MSFT"]
    assert [r.action for r in msft] == [Action.HOLD, Action.SELL]
    assert msft[0].outcome_pct is None  # hold
    assert msft[1].outcome_pct == pytest.approx(5.0)  # a sell that fell: positive
    assert recalled["NVDA"][0].outcome_pct is None  # no price given
    assert aapl[0].status == "proposed" and aapl[0].at == signals[6].created_at

    more = await memory.recall(["AAPL"], per_symbol=10, prices={"AAPL": 90.0})
    assert len(more["AAPL"]) == 7
    assert more["AAPL"][-1].status == "refused"
    assert more["AAPL"][0].outcome_pct == pytest.approx(-10.0)  # a buy that fell
    assert await memory.recall([], 5) == {}


# --------------------------------------------------------------------------- rules helpers


async def test_last_trade_at(memory: Memory) -> None:
    assert await memory.last_trade_at("AAPL") is None
    failed = make_order(make_signal(1), OrderStatus.FAILED)
    await memory.save_order(failed)
    assert await memory.last_trade_at("AAPL") is None  # never reached the market

    sig = make_signal(2)
    await memory.save_order(make_order(sig, OrderStatus.NEW))
    assert await memory.last_trade_at("AAPL") == sig.created_at

    fill_at = sig.created_at + timedelta(minutes=3)
    await memory.save_fill(
        Fill(fill_id="f1", client_order_id="c", symbol="AAPL", side=Side.BUY, qty=1,
             price=1, ts=fill_at)
    )
    assert await memory.last_trade_at("AAPL") == fill_at
    assert await memory.last_trade_times(["AAPL", "MSFT"]) == {"AAPL": fill_at}


async def test_snapshots_equity_curve_and_day_start(memory: Memory) -> None:
    ny = ZoneInfo("America/New_York")
    quotes = {
        "AAPL": Quote(symbol="AAPL", ts=T0, bid=99.9, ask=100.1, last=100.0, volume=1200)
    }
    pos = [Position(symbol="AAPL", qty=10, avg_price=95.0, market_price=100.0)]
    points = [
        (datetime(2026, 3, 2, 4, 30, tzinfo=UTC), 99_000.0),  # 23:30 ET on March 1st
        (datetime(2026, 3, 2, 14, 30, tzinfo=UTC), 100_000.0),  # 09:30 ET March 2nd
        (datetime(2026, 3, 2, 20, 0, tzinfo=UTC), 101_000.0),
    ]
    for i, (at, equity) in enumerate(points):
        acct = Account(cash=50_000, equity=equity, buying_power=100_000)
        await memory.save_snapshot(i + 1, at, acct, pos, quotes)
    assert await memory.equity_curve() == points
    assert await memory.equity_curve(since=points[1][0]) == points[1:]
    assert await memory.day_start_equity(date(2026, 3, 2)) == 100_000.0
    assert await memory.day_start_equity(date(2026, 3, 1)) == 99_000.0
    assert await memory.day_start_equity(date(2026, 3, 2), tz=UTC) == 99_000.0
    assert await memory.day_start_equity(date(2026, 3, 3)) is None
    last = await memory.last_snapshot()
    assert last is not None and last.cycle == 3 and last.quotes == quotes
    assert last.positions == pos and last.account.equity == 101_000.0
    assert last.at.astimezone(ny).hour == 15


# --------------------------------------------------------------------------- the rest


async def test_analysis_round_trip(memory: Memory) -> None:
    assert await memory.last_analysis() is None
    result = AnalysisResult(
        analyst="ollama:qwen3:8b",
        signals=[ProposedSignal(symbol="AAPL", action=Action.BUY, confidence=0.8,
                                rationale="breakout", target_price=110.0)],
        market_view="risk-on", prompt="SYSTEM...", raw_reply='{"signals": []}',
        reasoning="thinking…", usage=Usage(prompt_tokens=900, completion_tokens=120),
        error=None, dropped=["TSLA: not in universe"], attempts=2,
    )
    await memory.save_analysis(4, result, 3.25, at=T0)
    await memory.save_analysis(5, AnalysisResult(analyst="rules", error="timeout"), 0.1)
    stored = await memory.analyses(10)
    assert [a.cycle for a in stored] == [5, 4]
    assert stored[1].result == result
    assert stored[1].elapsed_s == 3.25 and stored[1].at == T0
    last = await memory.last_analysis()
    assert last is not None and last.result.error == "timeout" and last.result.usage is None


async def test_state_kv(memory: Memory) -> None:
    assert await memory.get_state("halted") is None
    await memory.set_state("halted", "daily loss limit")
    await memory.set_state("halted", "kill switch")
    assert await memory.get_state("halted") == "kill switch"
    await memory.set_state("halted", None)
    assert await memory.get_state("halted") is None
    await memory.set_state("halted", None)  # deleting twice is fine


def sim_order_row(cid: str, *, open: bool, n: int = 1) -> SimOrderRow:
    return SimOrderRow(cid, f"b-{cid}", open, json.dumps({"order": {"n": n}}))


async def test_sim_rows_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "perun.db"
    mem = await Memory.open(path)
    assert await mem.load_sim(None) is None
    head = json.dumps({"version": 2, "cash": 98_765.43, "note": "ünïcode ok"})
    early = SimFillRow("f1", T0, '{"fill_id":"f1"}')
    late = SimFillRow("f2", T0 + timedelta(days=1), '{"fill_id":"f2"}')
    await mem.save_sim(head, [sim_order_row("o1", open=True), sim_order_row("o2", open=True)],
                       [early])
    # o1 is final now; f1 again is kept as it was
    await mem.save_sim(head, [sim_order_row("o1", open=False, n=2)],
                       [late, SimFillRow("f1", T0, "changed")])
    await mem.close()
    mem = await Memory.open(path)
    try:
        saved = await mem.load_sim(T0 + timedelta(hours=1))
        assert saved is not None and saved.head == head
        assert saved.open_orders == [sim_order_row("o2", open=True).data]
        assert sorted(saved.order_ids) == ["o1", "o2"]
        assert saved.fills == [late.data]
        everything = await mem.load_sim(None)
        assert everything is not None and everything.fills == [early.data, late.data]
        final = sim_order_row("o1", open=False, n=2).data
        assert await mem.load_sim_order(client_order_id="o1") == final
        assert await mem.load_sim_order(broker_order_id="b-o1") == final
        assert await mem.load_sim_order(client_order_id="nope") is None
        # a save writes the head and the rows given, nothing of the history before
        statements: list[str] = []
        await mem._conn.set_trace_callback(statements.append)
        await mem.save_sim(head, [], [])
        await mem._conn.set_trace_callback(None)  # type: ignore[arg-type]  # None clears it
        assert [st for st in statements if "INSERT" in st.upper()] == [
            st for st in statements if "INTO state" in st
        ]
    finally:
        await mem.close()


def v1_database(path: Path, blob: str | None) -> None:
    """A database as Perun left it at schema version 1, the sim account as one blob."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_VERSION_TABLE + ";" + MIGRATIONS[0])
    conn.execute("INSERT INTO schema_version VALUES (1, '2026-11-24T00:00:00+00:00')")
    conn.execute("INSERT INTO state VALUES ('halted', 'kill switch', '2026-11-24')")
    if blob is not None:
        conn.execute("INSERT INTO state VALUES ('sim_state', ?, '2026-11-24')", (blob,))
    conn.commit()
    conn.close()


async def test_migration_splits_the_old_sim_blob(tmp_path: Path) -> None:
    cal = TradingCalendar()
    opened = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)
    clock = FrozenClock(opened + timedelta(minutes=20))
    old = SimBroker(["AAPL", "MSFT"], clock, cal, store=DictSimStore())
    bought = await old.submit(OrderRequest(client_order_id="m1", symbol="AAPL", side=Side.BUY,
                                           qty=10))
    await old.submit(OrderRequest(client_order_id="m2", symbol="MSFT", side=Side.BUY, qty=2,
                                  type=OrderType.LIMIT, limit_price=1.0))
    # the version 1 document: the head with every order and fill in it
    orders = await old.open_orders()
    blob = {
        **old.head(),
        "version": 1,
        "orders": [
            {"order": o.model_dump(mode="json"), "time_in_force": "day",
             "expires_at": "2026-11-24T21:00:00+00:00",
             "scanned_until": "2026-11-24T14:51:00+00:00", "fill_count": int(o.filled_qty > 0)}
            for o in [bought, *orders]
        ],
        "fills": [f.model_dump(mode="json") for f in old.fills],
    }
    path = tmp_path / "perun.db"
    v1_database(path, json.dumps(blob))
    mem = await Memory.open(path)
    try:
        assert await mem.schema_version() == LATEST_VERSION
        assert await mem.get_state("halted") == "kill switch"  # other keys untouched
        head = json.loads(await mem.get_state("sim_state") or "")
        assert head == {**old.head(), "version": 2}
        assert raw(path, "SELECT client_order_id, open FROM sim_orders ORDER BY rowid") == [
            ("m1", 0), ("m2", 1)
        ]
        [(fill_ts,)] = raw(path, "SELECT ts FROM sim_fills")
        assert fill_ts == memory_module._ts(old.fills[0].ts)  # the memory's time format
        # the broker carries on from the migrated rows
        clock.advance(timedelta(minutes=1))
        new = SimBroker(["AAPL", "MSFT"], clock, cal, store=mem)
        assert (await new.account()).cash == (await old.account()).cash
        assert [p.qty for p in await new.positions()] == [10]
        assert [o.client_order_id for o in await new.open_orders()] == ["m2"]
        got = await new.order_by_client_id("m1")
        assert got is not None and got.status is OrderStatus.FILLED
        assert [f.fill_id for f in new.fills] == [f.fill_id for f in old.fills]
    finally:
        await mem.close()


async def test_migration_without_a_sim_blob(tmp_path: Path) -> None:
    path = tmp_path / "perun.db"
    v1_database(path, None)
    mem = await Memory.open(path)
    try:
        assert await mem.load_sim(None) is None
        assert await mem.get_state("halted") == "kill switch"
    finally:
        await mem.close()


async def test_errors_and_metrics(memory: Memory) -> None:
    await memory.save_error(None, T0, "startup", "Ollama unreachable", "start `ollama serve`")
    await memory.save_error(3, T0 + timedelta(1), "cycle", "quote stale")
    errs = await memory.errors()
    assert [(e.cycle, e.where, e.message) for e in errs] == [
        (3, "cycle", "quote stale"), (None, "startup", "Ollama unreachable")
    ]
    assert errs[1].detail == "start `ollama serve`" and errs[1].at == T0
    assert len(await memory.errors(1)) == 1

    m1 = PerformanceMetrics(
        at=T0, equity=100_000, cash=50_000, realized_pl=120.5, unrealized_pl=-3.2, trades=4,
        wins=3, win_rate=0.75, max_drawdown_pct=1.2, extra={"sharpe": 1.1},
    )
    m2 = m1.model_copy(update={"at": T0 + timedelta(hours=1), "trades": 5})
    await memory.save_metrics(1, m1)
    await memory.save_metrics(2, m2)
    assert await memory.metrics() == [m2, m1]


async def test_recall_context_and_order_context_in_one_round_trip(memory: Memory) -> None:
    sig = make_signal(1)
    await memory.save_signals([sig, make_signal(2, "MSFT")])
    order = make_order(sig, OrderStatus.FILLED)
    fill = Fill(fill_id="f1", client_order_id=order.client_order_id, symbol="AAPL",
                side=Side.BUY, qty=10, price=101.0, ts=T0 + timedelta(minutes=5))
    await memory.save_order(order, fill)

    statements: list[str] = []
    await memory._conn.set_trace_callback(statements.append)
    recalled, traded = await memory.recall_context(["AAPL", "MSFT", "TSLA"], 3, {"AAPL": 110})
    got = await memory.order_context(order.client_order_id)
    await memory._conn.set_trace_callback(None)  # type: ignore[arg-type]  # None clears it
    assert recalled == await memory.recall(["AAPL", "MSFT", "TSLA"], 3, {"AAPL": 110})
    assert traded == await memory.last_trade_times(["AAPL", "MSFT", "TSLA"])
    assert traded == {"AAPL": fill.ts}
    assert got == (order, sig, [fill])
    assert await memory.order_context("nope") == (None, None, [])
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 5
    assert await memory.recall_context([], 3) == ({}, {})
