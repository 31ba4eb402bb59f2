"""Memory: the SQLite store of everything Perun saw, decided and did — its single writer.

One ``aiosqlite`` connection serves the whole process. Its worker thread runs the calls in
the order they were queued; on top of that an ``asyncio.Lock`` gives each task exclusive
use of the connection for the length of a write transaction, so no task ever sees or
joins another task's uncommitted work. The lock is re-entrant *per task*: a helper called
inside ``async with memory.transaction():`` by the task that opened it joins the open
transaction (as a savepoint, so a failing helper undoes only its own part) instead of
waiting for itself. Do not hand the open transaction to another task (for example by
``gather``-ing memory calls inside it): the other task would wait for the lock forever.

Round trips
-----------
Each call to the worker thread costs a thread hop (tens of µs, more on a busy machine),
far more than the statement itself. So a write — one statement or a whole atomic group
(a signal, its transitions, its order and a fill) — is queued as one job that runs
``BEGIN … COMMIT`` (or a savepoint inside an open ``transaction()``) on the worker thread,
switching the synchronous level in the same job when it has to change; reads that belong
together (``recall_context``, ``order_context``) are one job too. Once queued, a job
runs whole even if its caller is cancelled meanwhile (the write is kept, not split).

Durability
----------
The database runs in WAL mode with ``synchronous=NORMAL``: a commit is atomic and
survives a crash of the process, but the last commits before a power cut or an OS crash
may be lost — an acceptable trade for snapshots, analyses, signals and logs, which are
written every cycle and cost nothing to lose at the margin.

Orders are different. An order intent is committed *before* the broker is called, and
after a restart reconciliation trusts the database to know every order it may have sent.
So every transaction that writes an order or a fill runs with ``synchronous=FULL``: its
COMMIT returns only once the WAL is synced, i.e. *committed means on disk in the WAL*.
They are a handful per cycle, so the extra fsync costs milliseconds per cycle.
``transaction()`` defaults to ``durable=True`` for the same reason: an explicit atomic
block is usually about orders. SQLite only lets the level change between transactions,
so the outer transaction decides for everything nested in it.

Times are stored as fixed-width ISO-8601 UTC text (naive datetimes are taken as UTC);
models are stored as compact pydantic JSON and read back with ``model_validate_json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
from pydantic import BaseModel, ConfigDict, TypeAdapter

from perun_tui.brokers.sim_store import SimFillRow, SimOrderRow, SimSaved
from perun_tui.llm.base import AnalysisResult, ProposedSignal, RecalledSignal, Usage
from perun_tui.market_hours import EXCHANGE_TZ
from perun_tui.models import (
    FINAL_ORDER_STATUSES,
    Account,
    Action,
    CycleReport,
    Fill,
    Order,
    OrderStatus,
    PerformanceMetrics,
    Position,
    Quote,
    Side,
    Signal,
    SignalStatus,
    SignalTransition,
)
from perun_tui.redact import redact
from perun_tui.services.migrations import LATEST_VERSION, MIGRATIONS, SCHEMA_VERSION_TABLE

__all__ = [
    "EXCHANGE_TZ",
    "Memory",
    "Snapshot",
    "StorageError",
    "StoredAnalysis",
    "StoredError",
]

log = logging.getLogger(__name__)

SIM_STATE_KEY = "sim_state"
WRITTEN_ROWS_KEPT = 512  # latest orders and signals written, answered without a round trip
OPEN_ORDER_STATUSES = tuple(s.value for s in OrderStatus if s not in FINAL_ORDER_STATUSES)
# orders that never reached the market do not start a cooldown
_NOT_TRADED = (OrderStatus.FAILED.value, OrderStatus.REJECTED.value)


def _in_list(values: Iterable[str]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# WHERE terms spelled exactly as the partial indexes of migration 3 spell them (SQLite
# uses a partial index only for a query that repeats its condition); the values are
# this module's own enum constants, never input
_OPEN_ORDERS_WHERE = f"status IN {_in_list(OPEN_ORDER_STATUSES)}"
_TRADED_WHERE = f"status NOT IN {_in_list(_NOT_TRADED)}"
_FILLS_MISSING_WHERE = "filled_qty - fills_qty > 1e-9"

Row = tuple[Any, ...]
_T = TypeVar("_T")

_POSITIONS = TypeAdapter(list[Position])
_QUOTES = TypeAdapter(list[Quote])
_PROPOSED = TypeAdapter(list[ProposedSignal])
_STRINGS = TypeAdapter(list[str])


class StorageError(Exception):
    """The database cannot be used; ``str()`` says which file and what to do."""


# --------------------------------------------------------------------------- records


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Snapshot(_Record):
    """Account, positions and quotes as they were at one moment."""

    cycle: int | None
    at: datetime
    account: Account
    positions: list[Position]
    quotes: dict[str, Quote]


class StoredAnalysis(_Record):
    """One analyst run as stored: the result plus when, for which cycle, how long."""

    id: int
    cycle: int | None
    at: datetime
    elapsed_s: float
    result: AnalysisResult


class StoredError(_Record):
    id: int
    cycle: int | None
    at: datetime
    where: str
    message: str
    detail: str = ""


# --------------------------------------------------------------------------- helpers


_ZERO = timedelta(0)


def _ts(value: datetime) -> str:
    """Fixed-width UTC ISO text: text order is time order."""
    tz = value.tzinfo
    if tz is None:
        value = value.replace(tzinfo=UTC)
    elif tz is not UTC and tz.utcoffset(value) != _ZERO:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")  # any zero offset prints "+00:00"


def _ts_opt(value: datetime | None) -> str | None:
    return None if value is None else _ts(value)


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _now() -> str:
    return _ts(datetime.now(UTC))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def _outcome_pct(action: str, price: float, now: float | None) -> float | None:
    """Signed % move since the signal: positive when the call was right."""
    if now is None or price <= 0 or action == Action.HOLD.value:
        return None
    move = (now / price - 1.0) * 100.0
    return move if action == Action.BUY.value else -move


def _recall_query(symbols: list[str], per_symbol: int) -> _Query:
    return (
        "SELECT s.symbol, s.cycle, s.created_at, s.action, s.confidence, s.status, s.price "
        "FROM json_each(?) AS j JOIN signals AS s ON s.rowid IN ("
        "  SELECT rowid FROM signals WHERE symbol = j.value"
        "  ORDER BY created_at DESC, rowid DESC LIMIT ?) "
        "ORDER BY j.key, s.created_at DESC, s.rowid DESC",
        (_json(symbols), per_symbol),
    )


def _recalled(rows: list[Row], prices: Mapping[str, float]) -> dict[str, list[RecalledSignal]]:
    out: dict[str, list[RecalledSignal]] = {}
    for symbol, cycle, created_at, action, confidence, status, price in rows:
        out.setdefault(symbol, []).append(
            RecalledSignal(
                cycle=cycle, at=_dt(created_at), symbol=symbol, action=Action(action),
                confidence=confidence, status=status, price=price,
                outcome_pct=_outcome_pct(action, price, prices.get(symbol)),
            )
        )
    return out


def _last_trade_query(symbols: list[str]) -> _Query:
    # an order counts from its creation (its update when that is unknown): the two
    # subqueries read one index entry each instead of every order of the symbol
    return (
        "SELECT j.value, MAX("
        "  COALESCE((SELECT MAX(ts) FROM fills WHERE symbol = j.value), ''),"
        "  COALESCE((SELECT MAX(created_at) FROM orders"
        f"            WHERE symbol = j.value AND {_TRADED_WHERE}), ''),"
        "  COALESCE((SELECT MAX(updated_at) FROM orders"
        f"            WHERE symbol = j.value AND created_at IS NULL AND {_TRADED_WHERE}), '')"
        ") FROM json_each(?) AS j",
        (_json(symbols),),
    )


def _last_trades(rows: list[Row]) -> dict[str, datetime]:
    return {symbol: _dt(at) for symbol, at in rows if at}


_SIGNAL_UPSERT = """
INSERT INTO signals (id, cycle, symbol, action, confidence, status, reason, price, qty,
                     notional, created_at, updated_at, expires_at, client_order_id, data)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT(id) DO UPDATE SET
    cycle = excluded.cycle, symbol = excluded.symbol, action = excluded.action,
    confidence = excluded.confidence, status = excluded.status, reason = excluded.reason,
    price = excluded.price, qty = excluded.qty, notional = excluded.notional,
    created_at = excluded.created_at, updated_at = excluded.updated_at,
    expires_at = excluded.expires_at, client_order_id = excluded.client_order_id,
    data = excluded.data
"""

_TRANSITION_INSERT = """
INSERT INTO signal_transitions (signal_id, old, new, "by", reason, at) VALUES (?,?,?,?,?,?)
"""

_ORDER_UPSERT = """
INSERT INTO orders (client_order_id, broker_order_id, signal_id, symbol, side, status, qty,
                    notional, filled_qty, filled_avg_price, reason, external, created_at,
                    updated_at, data)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT(client_order_id) DO UPDATE SET
    broker_order_id = excluded.broker_order_id, signal_id = excluded.signal_id,
    symbol = excluded.symbol, side = excluded.side, status = excluded.status,
    qty = excluded.qty, notional = excluded.notional, filled_qty = excluded.filled_qty,
    filled_avg_price = excluded.filled_avg_price, reason = excluded.reason,
    external = excluded.external, created_at = excluded.created_at,
    updated_at = excluded.updated_at, data = excluded.data
"""


# Reasons and errors can quote a broker's reply, and a reply can quote the request's
# credentials: such text goes through redact(), so a key never reaches the file.


def _signal_row(s: Signal) -> Row:
    return (
        s.id, s.cycle, s.symbol, s.action.value, s.confidence, s.status.value,
        redact(s.reason), s.price, s.qty, s.notional, _ts(s.created_at),
        _ts_opt(s.updated_at), _ts_opt(s.expires_at), s.client_order_id,
        redact(s.model_dump_json()),
    )


def _transition_row(t: SignalTransition) -> Row:
    old = None if t.old is None else t.old.value
    return (t.signal_id, old, t.new.value, t.by, redact(t.reason), _ts(t.at))


def _order_row(o: Order) -> Row:
    return (
        o.client_order_id, o.broker_order_id, o.signal_id, o.symbol, o.side.value,
        o.status.value, o.qty, o.notional, o.filled_qty, o.filled_avg_price, redact(o.reason),
        int(o.external), _ts_opt(o.created_at), _ts_opt(o.updated_at),
        redact(o.model_dump_json()),
    )


def _fill_from_row(r: Row) -> Fill:
    return Fill(
        fill_id=r[0], client_order_id=r[1], symbol=r[2], side=Side(r[3]), qty=r[4],
        price=r[5], ts=_dt(r[6]),
    )


_STATE_UPSERT = (
    "INSERT INTO state (key, value, updated_at) VALUES (?,?,?) ON CONFLICT(key) "
    "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)

_SIM_ORDER_UPSERT = (
    "INSERT INTO sim_orders (client_order_id, broker_order_id, open, data) VALUES (?,?,?,?) "
    "ON CONFLICT(client_order_id) DO UPDATE SET broker_order_id = excluded.broker_order_id, "
    "open = excluded.open, data = excluded.data"
)

_SIM_FILL_INSERT = (
    "INSERT INTO sim_fills (fill_id, ts, data) VALUES (?,?,?) ON CONFLICT(fill_id) DO NOTHING"
)

_FILL_INSERT = (
    "INSERT INTO fills (fill_id, client_order_id, symbol, side, qty, price, ts) "
    "VALUES (?,?,?,?,?,?,?) ON CONFLICT(fill_id) DO NOTHING RETURNING fill_id"
)


def _fill_row(f: Fill) -> Row:
    return (f.fill_id, f.client_order_id, f.symbol, f.side.value, f.qty, f.price, _ts(f.ts))


# --------------------------------------------------------------------------- jobs
# Run on aiosqlite's worker thread with the plain sqlite3 connection (``Memory._call``).

_Op = tuple[str, Any, bool]  # (sql, parameters, executemany?)
_Query = tuple[str, Sequence[Any]]
_SYNC_PRAGMA = {True: "PRAGMA synchronous=FULL", False: "PRAGMA synchronous=NORMAL"}


def _run_reads(db: sqlite3.Connection, queries: Sequence[_Query]) -> list[list[Row]]:
    if len(queries) == 1 or db.in_transaction:
        return [db.execute(sql, params).fetchall() for sql, params in queries]
    db.execute("BEGIN")  # one snapshot for all of them
    try:
        return [db.execute(sql, params).fetchall() for sql, params in queries]
    finally:
        db.execute("COMMIT")


def _run_ops(db: sqlite3.Connection, ops: Sequence[_Op]) -> list[Row]:
    rows: list[Row] = []
    for sql, params, many in ops:
        if many:
            db.executemany(sql, params)
            rows = []
        else:
            rows = db.execute(sql, params).fetchall()
    return rows


def _undo(db: sqlite3.Connection, *statements: str) -> None:
    for sql in statements:
        try:
            db.execute(sql)
        except sqlite3.Error:  # pragma: no cover - best effort, the error is re-raised
            log.warning("%s failed", sql, exc_info=True)


def _run_top(
    db: sqlite3.Connection, ops: Sequence[_Op], pragma: str | None, atomic: bool
) -> list[Row]:
    if pragma is not None:
        db.execute(pragma)  # between transactions: the only place SQLite takes it
    if not atomic:
        return _run_ops(db, ops)
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = _run_ops(db, ops)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            _undo(db, "ROLLBACK")
        raise
    return rows


def _run_savepoint(db: sqlite3.Connection, ops: Sequence[_Op], name: str) -> list[Row]:
    db.execute(f"SAVEPOINT {name}")
    try:
        rows = _run_ops(db, ops)
    except BaseException:
        _undo(db, f"ROLLBACK TO {name}", f"RELEASE {name}")
        raise
    db.execute(f"RELEASE {name}")
    return rows


def _prepare_path(path: Path | str) -> Path:
    resolved = Path(path).expanduser()
    try:
        resolved.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the data directory {resolved.parent}: {exc.strerror}; "
            "set storage.path in perun.toml to a writable directory"
        ) from exc
    return resolved


class _Written:
    """The ``data`` JSON of the latest rows of one table this process committed, by key
    (the newest ``size``).

    Perun reads back orders and signals it has just written (an order update looks up the
    order and its signal): those reads are answered from here, without a round trip, with
    the very text the database holds. Only committed writes go in (see ``Memory._batch``);
    a write whose outcome is unknown takes its key out. The database has one writer of
    these tables — this process — so nothing else can make an entry stale.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._rows: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        return self._rows.get(key)

    def keep(self, rows: Iterable[tuple[str, str]], committed: bool, *, add: bool = True) -> None:
        """After a write of ``rows`` ((key, data) pairs): remember them when committed
        (only refresh the ones held already unless ``add``), else forget them."""
        for key, data in rows:
            if not committed:
                self._rows.pop(key, None)
            elif add or key in self._rows:
                self._rows[key] = data
                self._rows.move_to_end(key)
        while len(self._rows) > self._size:
            self._rows.popitem(last=False)


# --------------------------------------------------------------------------- Memory


class Memory:
    """Async access to the Perun database. Create with ``await Memory.open(path)``."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None  # the task holding the lock
        self._depth = 0  # 0 none, 1 transaction, >1 nested savepoints
        self._sync_full: bool | None = False  # current synchronous level; None = unknown
        self._closed = False
        self._written_orders = _Written(WRITTEN_ROWS_KEPT)
        self._written_signals = _Written(WRITTEN_ROWS_KEPT)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(cls, path: Path | str) -> Memory:
        """Open (creating if needed) the database at ``path`` and bring its schema up to date."""
        path = await asyncio.to_thread(_prepare_path, path)
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the database {path}: {exc}") from exc
        memory = cls(conn, path)
        try:
            await memory._configure()
            await memory._migrate()
        except sqlite3.DatabaseError as exc:
            await conn.close()
            raise StorageError(
                f"the database {path} cannot be used: {exc}. Move the file aside to start "
                "a fresh one, or set storage.path to another directory"
            ) from exc
        except BaseException:
            await conn.close()
            raise
        return memory

    async def close(self) -> None:
        """Wait for the running transaction, then close. Safe to call twice."""
        if self._closed:
            return
        if self._owns_lock():
            raise RuntimeError("Memory.close() called inside one of its own transactions")
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                await self._conn.execute("PRAGMA optimize")
            except sqlite3.Error:  # pragma: no cover - best effort
                log.debug("PRAGMA optimize failed", exc_info=True)
            await self._conn.close()

    async def __aenter__(self) -> Memory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _configure(self) -> None:
        await self._conn.execute("PRAGMA busy_timeout=5000")
        rows = await self._fetch_raw("PRAGMA journal_mode=WAL")
        mode = str(rows[0][0]).lower() if rows else "?"
        if mode != "wal":
            log.warning("SQLite refused WAL mode for %s (journal_mode=%s)", self.path, mode)
        await self._conn.executescript("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
        self._sync_full = False

    async def _migrate(self) -> None:
        await self._conn.execute(SCHEMA_VERSION_TABLE)
        current = await self.schema_version()
        if current > LATEST_VERSION:
            raise StorageError(
                f"the database {self.path} has schema version {current}, newer than this "
                f"Perun knows ({LATEST_VERSION}); upgrade Perun or use another storage.path"
            )
        for version in range(current + 1, LATEST_VERSION + 1):
            # the version row goes first: a second process migrating at the same moment
            # waits on BEGIN IMMEDIATE, then fails on the primary key and sees it done
            script = (
                "BEGIN IMMEDIATE;\n"
                f"INSERT INTO schema_version (version, applied_at) VALUES ({version}, "
                f"'{_now()}');\n{MIGRATIONS[version - 1]}\n;COMMIT;"
            )
            try:
                await self._conn.executescript(script)
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    await self._conn.execute("ROLLBACK")
                if await self.schema_version() >= version:
                    continue
                raise StorageError(
                    f"upgrading the database {self.path} to schema version {version} "
                    f"failed: {exc}"
                ) from exc
            log.info("database %s migrated to schema version %d", self.path, version)

    async def schema_version(self) -> int:
        rows = await self._fetch("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(rows[0][0])

    async def integrity_check(self) -> str:
        """``"ok"`` when the file is sound, else SQLite's list of problems."""
        rows = await self._fetch("PRAGMA integrity_check")
        return "\n".join(str(r[0]) for r in rows)

    # ------------------------------------------------------------------ transactions

    def _owns_lock(self) -> bool:
        task = asyncio.current_task()
        return task is not None and self._owner is task

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[Memory]:
        """An atomic block: everything written inside commits together or not at all.

        Nested use by the same task becomes a savepoint. ``durable`` (default) syncs the
        WAL at commit; pass ``False`` for bulk history writes that may be lost on power
        failure.
        """
        async with self._write(durable=durable):
            yield self

    @asynccontextmanager
    async def _write(self, *, durable: bool) -> AsyncIterator[None]:
        """Exclusive use of the connection for an explicit, multi-call transaction
        (``transaction()``); nested use by the task that holds it is a savepoint."""
        if self._owns_lock():
            async with self._savepoint():
                yield
            return
        async with self._lock:
            self._owner = asyncio.current_task()
            try:
                async with self._top_level(durable):
                    yield
            finally:
                self._owner = None

    @asynccontextmanager
    async def _top_level(self, durable: bool) -> AsyncIterator[None]:
        self._depth = 1
        try:
            try:
                await self._begin(durable)
            except sqlite3.Error:
                raise
            except BaseException:
                # cancelled while waiting: the queued BEGIN still runs, so undo it behind
                await self._quietly("ROLLBACK")
                raise
            try:
                yield
            except BaseException:
                await self._quietly("ROLLBACK")
                raise
            try:
                await self._conn.execute("COMMIT")
            except sqlite3.Error:
                if self._conn.in_transaction:
                    await self._quietly("ROLLBACK")
                raise
            # a cancellation while COMMIT is queued leaves it to run: the work is kept
        finally:
            self._depth = 0

    async def _begin(self, durable: bool) -> None:
        if self._sync_full is durable:
            await self._conn.execute("BEGIN IMMEDIATE")
            return
        self._sync_full = None  # unknown until the script has run
        level = "FULL" if durable else "NORMAL"
        await self._conn.executescript(f"PRAGMA synchronous={level}; BEGIN IMMEDIATE;")
        self._sync_full = durable

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        self._depth += 1
        name = f"perun_sp{self._depth}"
        try:
            try:
                await self._conn.execute(f"SAVEPOINT {name}")
                yield
            except BaseException:
                await self._quietly(f"ROLLBACK TO {name}")
                await self._quietly(f"RELEASE {name}")
                raise
            await self._conn.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1

    async def _quietly(self, sql: str) -> None:
        try:
            await self._conn.execute(sql)
        except sqlite3.Error:
            log.warning("%s failed", sql, exc_info=True)

    async def _fetch_raw(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return cast(list[Row], list(await self._conn.execute_fetchall(sql, params)))

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """A read that never sees another task's uncommitted writes."""
        if self._owns_lock():
            return await self._fetch_raw(sql, params)
        async with self._lock:
            return await self._fetch_raw(sql, params)

    async def _fetch_many(self, queries: Sequence[_Query]) -> list[list[Row]]:
        """Several reads in one round trip, as one consistent view."""
        if self._owns_lock():
            return await self._call(_run_reads, queries)
        async with self._lock:
            return await self._call(_run_reads, queries)

    async def _write_one(
        self,
        sql: str,
        params: Sequence[Any],
        durable: bool = False,
        written: Callable[[bool], None] | None = None,
    ) -> None:
        """One statement: atomic by itself (autocommit outside a transaction)."""
        await self._batch(((sql, params, False),), durable=durable, atomic=False, written=written)

    # ------------------------------------------------------------------ one round trip

    async def _call(self, job: Callable[..., _T], *args: Any) -> _T:
        """``job(connection, *args)`` on aiosqlite's worker thread, with the plain
        ``sqlite3`` connection: one thread hop (tens of µs) for any number of statements,
        instead of one per statement. (aiosqlite runs every call this way; ``_execute``
        is the queue its public methods use.)"""
        conn = self._conn
        run = cast(Callable[..., Awaitable[_T]], conn._execute)
        return await run(job, conn._conn, *args)

    async def _batch(
        self,
        ops: Sequence[_Op],
        *,
        durable: bool,
        atomic: bool = True,
        written: Callable[[bool], None] | None = None,
    ) -> list[Row]:
        """Run ``ops`` in order in one round trip; the rows of the last one come back.

        ``atomic``: all or nothing — a transaction of its own (``BEGIN IMMEDIATE`` …
        ``COMMIT``, synced to disk when ``durable``), or a savepoint inside the caller's
        open ``transaction()``. Without ``atomic`` (one statement), autocommit. The
        synchronous level is switched in the same round trip when it has to change.
        A cancelled caller does not undo the work: it is already queued as a whole.

        ``written(committed)`` runs while the connection is still held: ``True`` once
        the work is committed, ``False`` when that is not known (inside the caller's
        transaction, which may yet roll back; a failure; a cancellation).
        """
        if self._owns_lock():
            try:
                if not atomic:
                    return await self._call(_run_ops, ops)
                self._depth += 1
                try:
                    return await self._call(_run_savepoint, ops, f"perun_sp{self._depth}")
                finally:
                    self._depth -= 1
            finally:
                if written is not None:
                    written(False)
        async with self._lock:
            self._owner = asyncio.current_task()
            committed = False
            try:
                pragma = None if self._sync_full is durable else _SYNC_PRAGMA[durable]
                if pragma is not None:
                    self._sync_full = None  # unknown until the job has run
                rows = await self._call(_run_top, ops, pragma, atomic)
                self._sync_full = durable
                committed = True
                return rows
            finally:
                if written is not None:
                    written(committed)
                self._owner = None

    # ------------------------------------------------------------------ cycles

    async def next_cycle_number(self) -> int:
        """1 + the highest cycle ever started: numbering continues across restarts."""
        rows = await self._fetch("SELECT COALESCE(MAX(number), 0) + 1 FROM cycles")
        return int(rows[0][0])

    async def begin_cycle(self, at: datetime) -> int:
        """Start the next cycle (``next_cycle_number`` + ``start_cycle`` in one statement)
        and return its number."""
        rows = await self._batch(
            (
                (
                    "INSERT INTO cycles (number, started_at) "
                    "SELECT COALESCE(MAX(number), 0) + 1, ? FROM cycles RETURNING number",
                    (_ts(at),),
                    False,
                ),
            ),
            durable=False,
            atomic=False,
        )
        return int(rows[0][0])

    async def start_cycle(self, cycle: int, at: datetime) -> None:
        await self._write_one(
            "INSERT INTO cycles (number, started_at) VALUES (?, ?) "
            "ON CONFLICT(number) DO UPDATE SET started_at = excluded.started_at",
            (cycle, _ts(at)),
        )

    async def finish_cycle(self, report: CycleReport) -> None:
        await self._write_one(
            "INSERT INTO cycles (number, started_at, finished_at, skipped, analyst, report) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(number) DO UPDATE SET "
            "started_at = excluded.started_at, finished_at = excluded.finished_at, "
            "skipped = excluded.skipped, analyst = excluded.analyst, report = excluded.report",
            (
                report.cycle, _ts(report.started_at), _ts_opt(report.finished_at),
                report.skipped, report.analyst, report.model_dump_json(),
            ),
        )

    async def cycles(self, limit: int = 50) -> list[CycleReport]:
        """Newest first; a cycle still running comes back with only its start."""
        rows = await self._fetch(
            "SELECT number, started_at, report FROM cycles ORDER BY number DESC LIMIT ?",
            (limit,),
        )
        out: list[CycleReport] = []
        for number, started_at, report in rows:
            if report is None:
                out.append(CycleReport(cycle=number, started_at=_dt(started_at)))
            else:
                out.append(CycleReport.model_validate_json(report))
        return out

    # ------------------------------------------------------------------ snapshots

    async def save_snapshot(
        self,
        cycle: int | None,
        at: datetime,
        account: Account,
        positions: Sequence[Position],
        quotes: Mapping[str, Quote] | Iterable[Quote],
    ) -> None:
        quote_list = list(quotes.values()) if isinstance(quotes, Mapping) else list(quotes)
        await self._write_one(
            "INSERT INTO snapshots (cycle, at, equity, cash, account, positions, quotes) "
            "VALUES (?,?,?,?,?,?,?)",
            (
                cycle, _ts(at), account.equity, account.cash, account.model_dump_json(),
                _POSITIONS.dump_json(list(positions)).decode(),
                _QUOTES.dump_json(quote_list).decode(),
            ),
        )

    async def last_snapshot(self) -> Snapshot | None:
        rows = await self._fetch(
            "SELECT cycle, at, account, positions, quotes FROM snapshots "
            "ORDER BY at DESC, id DESC LIMIT 1"
        )
        if not rows:
            return None
        cycle, at, account, positions, quotes = rows[0]
        return Snapshot(
            cycle=cycle,
            at=_dt(at),
            account=Account.model_validate_json(account),
            positions=_POSITIONS.validate_json(positions),
            quotes={q.symbol: q for q in _QUOTES.validate_json(quotes)},
        )

    async def equity_curve(self, since: datetime | None = None) -> list[tuple[datetime, float]]:
        """(time, equity) of every snapshot, oldest first."""
        if since is None:
            rows = await self._fetch("SELECT at, equity FROM snapshots ORDER BY at, id")
        else:
            rows = await self._fetch(
                "SELECT at, equity FROM snapshots WHERE at >= ? ORDER BY at, id", (_ts(since),)
            )
        return [(_dt(at), float(equity)) for at, equity in rows]

    async def day_start_equity(self, day: date, tz: tzinfo = EXCHANGE_TZ) -> float | None:
        """Equity of the first snapshot taken on ``day`` (a calendar day in ``tz``,
        New York by default: the trading day the daily loss limit is about)."""
        start = datetime.combine(day, time(0), tzinfo=tz)
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
        rows = await self._fetch(
            "SELECT equity FROM snapshots WHERE at >= ? AND at < ? ORDER BY at, id LIMIT 1",
            (_ts(start), _ts(end)),
        )
        return float(rows[0][0]) if rows else None

    # ------------------------------------------------------------------ analyses

    async def save_analysis(
        self,
        cycle: int | None,
        result: AnalysisResult,
        elapsed_s: float,
        at: datetime | None = None,
    ) -> None:
        usage = None if result.usage is None else result.usage.model_dump_json()
        await self._write_one(
            "INSERT INTO analyses (cycle, at, analyst, prompt, raw_reply, reasoning, "
            "market_view, signals, usage, error, elapsed_s, attempts, dropped) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                cycle, _ts(at) if at is not None else _now(), result.analyst, result.prompt,
                result.raw_reply, result.reasoning, result.market_view,
                _PROPOSED.dump_json(result.signals).decode(), usage, result.error,
                elapsed_s, result.attempts, _json(result.dropped),
            ),
        )

    async def analyses(self, limit: int = 20) -> list[StoredAnalysis]:
        """Newest first."""
        rows = await self._fetch(
            "SELECT id, cycle, at, elapsed_s, analyst, prompt, raw_reply, reasoning, "
            "market_view, signals, usage, error, attempts, dropped FROM analyses "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            StoredAnalysis(
                id=r[0], cycle=r[1], at=_dt(r[2]), elapsed_s=r[3],
                result=AnalysisResult(
                    analyst=r[4], prompt=r[5], raw_reply=r[6], reasoning=r[7],
                    market_view=r[8], signals=_PROPOSED.validate_json(r[9]),
                    usage=None if r[10] is None else Usage.model_validate_json(r[10]),
                    error=r[11], attempts=r[12], dropped=_STRINGS.validate_json(r[13]),
                ),
            )
            for r in rows
        ]

    async def last_analysis(self) -> StoredAnalysis | None:
        found = await self.analyses(1)
        return found[0] if found else None

    # ------------------------------------------------------------------ signals

    async def save_signal(
        self,
        signal: Signal,
        transition: SignalTransition | Sequence[SignalTransition] | None = None,
        order: Order | None = None,
        fill: Fill | None = None,
    ) -> bool:
        """Upsert the signal, append its transition(s), upsert its order and store a fill
        of that order — atomically, in one round trip.

        This is how an order intent is committed together with the signal's move to
        approved/submitted: either all of it is on disk or none is. A write with an order
        or a fill is durable. Several transitions (e.g. submitted then filled) land in
        the order given. Returns True when ``fill`` was stored now (False when it was
        stored before, or none was given).
        """
        transitions: Sequence[SignalTransition]
        if transition is None:
            transitions = ()
        elif isinstance(transition, SignalTransition):
            transitions = (transition,)
        else:
            transitions = transition
        for t in transitions:
            if t.signal_id != signal.id:
                raise ValueError(f"transition for {t.signal_id} saved with signal {signal.id}")
        signal_row = _signal_row(signal)
        order_row = None if order is None else _order_row(order)

        def written(committed: bool) -> None:
            self._written_signals.keep([(signal_row[0], signal_row[-1])], committed)
            if order_row is not None:
                self._written_orders.keep([(order_row[0], order_row[-1])], committed)

        if not transitions and order_row is None and fill is None:
            await self._write_one(_SIGNAL_UPSERT, signal_row, written=written)
            return False
        ops: list[_Op] = [(_SIGNAL_UPSERT, signal_row, False)]
        ops += [(_TRANSITION_INSERT, _transition_row(t), False) for t in transitions]
        if order_row is not None:
            ops.append((_ORDER_UPSERT, order_row, False))
        if fill is not None:
            ops.append((_FILL_INSERT, _fill_row(fill), False))  # last: its rows come back
        rows = await self._batch(
            ops, durable=order_row is not None or fill is not None, written=written
        )
        return fill is not None and bool(rows)

    async def save_signals(
        self, items: Iterable[Signal | tuple[Signal, SignalTransition | None]]
    ) -> None:
        """Many signals (each optionally with its transition) in one transaction."""
        signals: list[Row] = []
        transitions: list[Row] = []
        for item in items:
            signal, transition = item if isinstance(item, tuple) else (item, None)
            signals.append(_signal_row(signal))
            if transition is not None:
                if transition.signal_id != signal.id:
                    raise ValueError(
                        f"transition for {transition.signal_id} saved with signal {signal.id}"
                    )
                transitions.append(_transition_row(transition))
        if not signals:
            return
        ops: list[_Op] = [(_SIGNAL_UPSERT, signals, True)]
        if transitions:
            ops.append((_TRANSITION_INSERT, transitions, True))

        def written(committed: bool) -> None:  # many new signals: refresh, do not add
            self._written_signals.keep(((r[0], r[-1]) for r in signals), committed, add=False)

        await self._batch(ops, durable=False, written=written)

    async def get_signal(self, signal_id: str) -> Signal | None:
        data = self._written_signals.get(signal_id)
        if data is None:
            rows = await self._fetch("SELECT data FROM signals WHERE id = ?", (signal_id,))
            data = rows[0][0] if rows else None
        return None if data is None else Signal.model_validate_json(data)

    async def signals(
        self,
        statuses: Collection[SignalStatus] | None = None,
        limit: int = 200,
        symbol: str | None = None,
    ) -> list[Signal]:
        """Newest first, optionally only some statuses and/or one symbol."""
        where: list[str] = []
        params: list[Any] = []
        if statuses is not None:
            if not statuses:
                return []
            where.append(f"status IN ({_placeholders(len(statuses))})")
            params.extend(SignalStatus(s).value for s in statuses)
        if symbol is not None:
            where.append("symbol = ?")
            params.append(symbol)
        sql = "SELECT data FROM signals"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        params.append(limit)
        rows = await self._fetch(sql, params)
        return [Signal.model_validate_json(r[0]) for r in rows]

    async def pending_signals(self) -> list[Signal]:
        """Signals waiting for a human, oldest first (with their ``expires_at``)."""
        rows = await self._fetch(
            "SELECT data FROM signals WHERE status = ? ORDER BY created_at, rowid",
            (SignalStatus.PENDING.value,),
        )
        return [Signal.model_validate_json(r[0]) for r in rows]

    async def transitions(self, signal_id: str) -> list[SignalTransition]:
        """The signal's history, oldest first."""
        rows = await self._fetch(
            'SELECT signal_id, old, new, "by", reason, at FROM signal_transitions '
            "WHERE signal_id = ? ORDER BY id",
            (signal_id,),
        )
        return [
            SignalTransition(
                signal_id=r[0], old=None if r[1] is None else SignalStatus(r[1]),
                new=SignalStatus(r[2]), by=r[3], reason=r[4], at=_dt(r[5]),
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ orders

    async def save_order(self, order: Order, fill: Fill | None = None) -> bool:
        """Upsert by ``client_order_id`` (and store ``fill``, a fill of this order, in the
        same transaction); synced to disk before it returns. True when ``fill`` was
        stored now (False when it was stored before, or none was given)."""
        row = _order_row(order)

        def written(committed: bool) -> None:
            self._written_orders.keep([(row[0], row[-1])], committed)

        if fill is None:
            await self._write_one(_ORDER_UPSERT, row, durable=True, written=written)
            return False
        rows = await self._batch(
            ((_ORDER_UPSERT, row, False), (_FILL_INSERT, _fill_row(fill), False)),
            durable=True,
            written=written,
        )
        return bool(rows)

    async def get_order(self, client_order_id: str) -> Order | None:
        data = self._written_orders.get(client_order_id)
        if data is None:
            rows = await self._fetch(
                "SELECT data FROM orders WHERE client_order_id = ?", (client_order_id,)
            )
            data = rows[0][0] if rows else None
        return None if data is None else Order.model_validate_json(data)

    async def order_context(
        self, client_order_id: str
    ) -> tuple[Order | None, Signal | None, list[Fill]]:
        """An order, its signal and its stored fills (oldest first), in one round trip."""
        order, signal, fills = await self._fetch_many(
            (
                ("SELECT data FROM orders WHERE client_order_id = ?", (client_order_id,)),
                (
                    "SELECT data FROM signals WHERE id = "
                    "(SELECT signal_id FROM orders WHERE client_order_id = ?)",
                    (client_order_id,),
                ),
                (
                    "SELECT fill_id, client_order_id, symbol, side, qty, price, ts FROM fills "
                    "WHERE client_order_id = ? ORDER BY ts, rowid",
                    (client_order_id,),
                ),
            )
        )
        return (
            Order.model_validate_json(order[0][0]) if order else None,
            Signal.model_validate_json(signal[0][0]) if signal else None,
            [_fill_from_row(r) for r in fills],
        )

    async def get_order_by_broker_id(self, broker_order_id: str) -> Order | None:
        rows = await self._fetch(
            "SELECT data FROM orders WHERE broker_order_id = ? LIMIT 1", (broker_order_id,)
        )
        return Order.model_validate_json(rows[0][0]) if rows else None

    async def orders(
        self, statuses: Collection[OrderStatus] | None = None, limit: int = 500
    ) -> list[Order]:
        """Newest first."""
        params: list[Any] = []
        sql = "SELECT data FROM orders"
        if statuses is not None:
            if not statuses:
                return []
            sql += f" WHERE status IN ({_placeholders(len(statuses))})"
            params.extend(OrderStatus(s).value for s in statuses)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        params.append(limit)
        rows = await self._fetch(sql, params)
        return [Order.model_validate_json(r[0]) for r in rows]

    async def open_orders(self) -> list[Order]:
        """Orders not in a final state (INTENT and UNKNOWN included), oldest first."""
        rows = await self._fetch(
            f"SELECT data FROM orders WHERE {_OPEN_ORDERS_WHERE} ORDER BY created_at, rowid"
        )
        return [Order.model_validate_json(r[0]) for r in rows]

    async def orders_missing_fills(self) -> list[Order]:
        """Orders whose filled quantity is more than their stored fills add up to: fills
        that happened while no Perun was listening (reconciliation records the gap)."""
        rows = await self._fetch(  # fills_qty: the sum of its stored fills (migration 3)
            f"SELECT data FROM orders WHERE {_FILLS_MISSING_WHERE} ORDER BY created_at, rowid"
        )
        return [Order.model_validate_json(r[0]) for r in rows]

    # ------------------------------------------------------------------ fills

    async def save_fill(self, fill: Fill) -> bool:
        """Store a fill once: ``False`` when its ``fill_id`` was already stored."""
        rows = await self._batch(((_FILL_INSERT, _fill_row(fill), False),), durable=True,
                                 atomic=False)
        return bool(rows)

    async def fills(
        self,
        since: datetime | None = None,
        symbol: str | None = None,
        client_order_id: str | None = None,
    ) -> list[Fill]:
        """Oldest first."""
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("ts >= ?")
            params.append(_ts(since))
        if symbol is not None:
            where.append("symbol = ?")
            params.append(symbol)
        if client_order_id is not None:
            where.append("client_order_id = ?")
            params.append(client_order_id)
        sql = "SELECT fill_id, client_order_id, symbol, side, qty, price, ts FROM fills"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts, rowid"
        return [_fill_from_row(r) for r in await self._fetch(sql, params)]

    # ------------------------------------------------------------------ errors

    async def save_error(
        self, cycle: int | None, at: datetime, where: str, message: str, detail: str = ""
    ) -> None:
        await self._write_one(
            'INSERT INTO errors (cycle, at, "where", message, detail) VALUES (?,?,?,?,?)',
            (cycle, _ts(at), redact(where), redact(message), redact(detail)),
        )

    async def errors(self, limit: int = 100) -> list[StoredError]:
        """Newest first."""
        rows = await self._fetch(
            'SELECT id, cycle, at, "where", message, detail FROM errors ORDER BY id DESC LIMIT ?',
            (limit,),
        )
        return [
            StoredError(id=r[0], cycle=r[1], at=_dt(r[2]), where=r[3], message=r[4], detail=r[5])
            for r in rows
        ]

    # ------------------------------------------------------------------ state

    async def get_state(self, key: str) -> str | None:
        rows = await self._fetch("SELECT value FROM state WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def set_state(self, key: str, value: str | None) -> None:
        """Set ``key`` to ``value``; ``None`` deletes it."""
        if value is None:
            await self._write_one("DELETE FROM state WHERE key = ?", (key,))
        else:
            await self._write_one(_STATE_UPSERT, (key, value, _now()))

    # ------------------------------------------------------------------ the sim exchange

    async def load_sim(self, fills_since: datetime | None) -> SimSaved | None:
        """The simulated exchange's saved account (the sim broker's ``SimStore``): the
        head, the open orders, every client order id and the fills since ``fills_since``,
        as one consistent view."""
        head, open_orders, ids, fills = await self._fetch_many(
            (
                ("SELECT value FROM state WHERE key = ?", (SIM_STATE_KEY,)),
                ("SELECT data FROM sim_orders WHERE open = 1 ORDER BY rowid", ()),
                ("SELECT client_order_id FROM sim_orders", ()),
                (
                    "SELECT data FROM sim_fills WHERE ts >= ? ORDER BY ts, rowid",
                    ("" if fills_since is None else _ts(fills_since),),
                ),
            )
        )
        if not head:
            return None
        return SimSaved(
            head=str(head[0][0]),
            open_orders=[r[0] for r in open_orders],
            order_ids=[r[0] for r in ids],
            fills=[r[0] for r in fills],
        )

    async def save_sim(
        self, head: str, orders: Sequence[SimOrderRow], fills: Sequence[SimFillRow]
    ) -> None:
        """The sim's head and the orders and fills that changed, in one transaction."""
        ops: list[_Op] = [(_STATE_UPSERT, (SIM_STATE_KEY, head, _now()), False)]
        if orders:
            rows = [(o.client_order_id, o.broker_order_id, int(o.open), o.data) for o in orders]
            ops.append((_SIM_ORDER_UPSERT, rows, True))
        if fills:
            ops.append((_SIM_FILL_INSERT, [(f.fill_id, _ts(f.ts), f.data) for f in fills], True))
        await self._batch(ops, durable=False, atomic=len(ops) > 1)

    async def load_sim_order(
        self, *, client_order_id: str | None = None, broker_order_id: str | None = None
    ) -> str | None:
        """One saved sim order's data, by client or broker order id."""
        if client_order_id is not None:
            rows = await self._fetch(
                "SELECT data FROM sim_orders WHERE client_order_id = ?", (client_order_id,)
            )
        elif broker_order_id is not None:
            rows = await self._fetch(
                "SELECT data FROM sim_orders WHERE broker_order_id = ? LIMIT 1",
                (broker_order_id,),
            )
        else:
            return None
        return str(rows[0][0]) if rows else None

    # ------------------------------------------------------------------ metrics

    async def save_metrics(self, cycle: int | None, metrics: PerformanceMetrics) -> None:
        await self._write_one(
            "INSERT INTO metrics (at, cycle, data) VALUES (?,?,?)",
            (_ts(metrics.at), cycle, metrics.model_dump_json()),
        )

    async def metrics(self, limit: int = 100) -> list[PerformanceMetrics]:
        """Newest first."""
        rows = await self._fetch(
            "SELECT data FROM metrics ORDER BY at DESC, id DESC LIMIT ?", (limit,)
        )
        return [PerformanceMetrics.model_validate_json(r[0]) for r in rows]

    # ------------------------------------------------------------------ recall & rules

    async def recall(
        self,
        symbols: Iterable[str],
        per_symbol: int = 5,
        prices: Mapping[str, float] | None = None,
    ) -> dict[str, list[RecalledSignal]]:
        """The latest ``per_symbol`` signals of each symbol (any status), newest first.

        ``outcome_pct`` is the move from the signal's price to ``prices[symbol]``, signed
        so that positive means the call was right (a buy that rose, a sell that fell);
        ``None`` for holds and symbols without a price. Symbols with no history are left
        out. One indexed query for all symbols: each symbol reads only its newest rows.
        """
        wanted = list(dict.fromkeys(symbols))
        if not wanted or per_symbol <= 0:
            return {}
        rows = await self._fetch(*_recall_query(wanted, per_symbol))
        return _recalled(rows, prices or {})

    async def recall_context(
        self,
        symbols: Iterable[str],
        per_symbol: int = 5,
        prices: Mapping[str, float] | None = None,
    ) -> tuple[dict[str, list[RecalledSignal]], dict[str, datetime]]:
        """``recall`` and ``last_trade_times`` together, in one round trip."""
        wanted = list(dict.fromkeys(symbols))
        if not wanted:
            return {}, {}
        if per_symbol <= 0:
            return {}, await self.last_trade_times(wanted)
        recalled, traded = await self._fetch_many(
            (_recall_query(wanted, per_symbol), _last_trade_query(wanted))
        )
        return _recalled(recalled, prices or {}), _last_trades(traded)

    async def last_trade_at(self, symbol: str) -> datetime | None:
        """When ``symbol`` last traded: the latest fill or order sent (for the cooldown)."""
        return (await self.last_trade_times([symbol])).get(symbol)

    async def last_trade_times(self, symbols: Iterable[str]) -> dict[str, datetime]:
        """``last_trade_at`` for many symbols in one query; untraded symbols are absent.

        Orders count from their creation unless they failed or were rejected (they never
        reached the market); an INTENT counts, as it is about to be sent.
        """
        wanted = list(dict.fromkeys(symbols))
        if not wanted:
            return {}
        return _last_trades(await self._fetch(*_last_trade_query(wanted)))

    # ------------------------------------------------------------------ metrics reads

    async def counts(self) -> dict[str, int]:
        """Row counts per table, for ``perun doctor`` and tests."""
        tables = (
            "cycles", "snapshots", "analyses", "signals", "signal_transitions", "orders",
            "fills", "errors", "state", "metrics",
        )
        sql = " UNION ALL ".join(f"SELECT '{t}', COUNT(*) FROM {t}" for t in tables)
        return {name: int(n) for name, n in await self._fetch(sql)}
