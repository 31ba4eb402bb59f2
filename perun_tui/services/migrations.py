"""The database schema as numbered migrations, applied in order by ``Memory.open``.

Each entry of ``MIGRATIONS`` is one SQL script; migration *n* (1-based) is recorded in
``schema_version`` in the same transaction that applies it, so a crash half-way leaves
the database at version *n - 1*, never in between. Released migrations are never edited:
a schema change is a new script appended to the list.

Conventions:

* Times are ISO-8601 text in UTC with microseconds (``2026-01-02T15:04:05.000000+00:00``),
  fixed width, so text order is time order and indexes on them work for ranges.
* Rows that mirror a pydantic model keep the whole model as compact JSON in ``data``
  (the exact round trip); the columns next to it are copies of the fields we filter,
  sort or aggregate on.
* ``transition."by"`` and ``errors."where"`` are SQL keywords and need the quotes.
"""

from __future__ import annotations

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
)
"""

_V1 = """
CREATE TABLE cycles (
    number      INTEGER PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    skipped     TEXT NOT NULL DEFAULT '',
    analyst     TEXT NOT NULL DEFAULT '',
    report      TEXT                      -- CycleReport JSON, once finished
);

CREATE TABLE snapshots (
    id        INTEGER PRIMARY KEY,
    cycle     INTEGER,
    at        TEXT NOT NULL,
    equity    REAL NOT NULL,
    cash      REAL NOT NULL,
    account   TEXT NOT NULL,              -- Account JSON
    positions TEXT NOT NULL,              -- [Position] JSON
    quotes    TEXT NOT NULL               -- [Quote] JSON
);
-- equity curve and day-start equity read (at, equity) only: a covering index
CREATE INDEX snapshots_at_equity ON snapshots(at, equity);

CREATE TABLE analyses (
    id          INTEGER PRIMARY KEY,
    cycle       INTEGER,
    at          TEXT NOT NULL,
    analyst     TEXT NOT NULL,
    prompt      TEXT NOT NULL DEFAULT '',
    raw_reply   TEXT NOT NULL DEFAULT '',
    reasoning   TEXT NOT NULL DEFAULT '',
    market_view TEXT NOT NULL DEFAULT '',
    signals     TEXT NOT NULL DEFAULT '[]',   -- [ProposedSignal] JSON
    usage       TEXT,                         -- Usage JSON
    error       TEXT,
    elapsed_s   REAL NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 1,
    dropped     TEXT NOT NULL DEFAULT '[]'    -- [str] JSON
);
CREATE INDEX analyses_cycle ON analyses(cycle);

CREATE TABLE signals (
    id              TEXT PRIMARY KEY,
    cycle           INTEGER NOT NULL,
    symbol          TEXT NOT NULL,
    action          TEXT NOT NULL,
    confidence      REAL NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT NOT NULL DEFAULT '',
    price           REAL NOT NULL,
    qty             REAL NOT NULL DEFAULT 0,
    notional        REAL NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT,
    expires_at      TEXT,
    client_order_id TEXT,
    data            TEXT NOT NULL             -- Signal JSON
);
-- recall (latest per symbol) and the symbol filter of the signal list
CREATE INDEX signals_symbol_created ON signals(symbol, created_at);
-- pending / open signals and status filters
CREATE INDEX signals_status_created ON signals(status, created_at);
-- the unfiltered list, newest first
CREATE INDEX signals_created ON signals(created_at);

CREATE TABLE signal_transitions (
    id        INTEGER PRIMARY KEY,
    signal_id TEXT NOT NULL REFERENCES signals(id) ON DELETE CASCADE,
    old       TEXT,
    new       TEXT NOT NULL,
    "by"      TEXT NOT NULL,
    reason    TEXT NOT NULL DEFAULT '',
    at        TEXT NOT NULL
);
CREATE INDEX signal_transitions_signal ON signal_transitions(signal_id, id);

CREATE TABLE orders (
    client_order_id  TEXT PRIMARY KEY,
    broker_order_id  TEXT,
    signal_id        TEXT,                -- no FK: external orders have no signal
    symbol           TEXT NOT NULL,
    side             TEXT NOT NULL,
    status           TEXT NOT NULL,
    qty              REAL,
    notional         REAL,
    filled_qty       REAL NOT NULL DEFAULT 0,
    filled_avg_price REAL,
    reason           TEXT NOT NULL DEFAULT '',
    external         INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT,
    updated_at       TEXT,
    data             TEXT NOT NULL        -- Order JSON
);
CREATE INDEX orders_status ON orders(status, created_at);
CREATE INDEX orders_symbol_created ON orders(symbol, created_at);
CREATE INDEX orders_created ON orders(created_at);
CREATE INDEX orders_broker_id ON orders(broker_order_id) WHERE broker_order_id IS NOT NULL;
CREATE INDEX orders_signal ON orders(signal_id) WHERE signal_id IS NOT NULL;

CREATE TABLE fills (
    fill_id         TEXT PRIMARY KEY,
    client_order_id TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    qty             REAL NOT NULL,
    price           REAL NOT NULL,
    ts              TEXT NOT NULL
);
CREATE INDEX fills_symbol_ts ON fills(symbol, ts);
CREATE INDEX fills_ts ON fills(ts);
CREATE INDEX fills_order ON fills(client_order_id);

CREATE TABLE errors (
    id      INTEGER PRIMARY KEY,
    cycle   INTEGER,
    at      TEXT NOT NULL,
    "where" TEXT NOT NULL,
    message TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE metrics (
    id    INTEGER PRIMARY KEY,
    at    TEXT NOT NULL,
    cycle INTEGER,
    data  TEXT NOT NULL                   -- PerformanceMetrics JSON
);
"""

# The sim exchange's account, row by row (it was one JSON document in state.sim_state,
# rewritten whole after every order: its size grew with the history). The document is
# split here, once: orders and fills into their tables in their old order, the head
# (cash, positions, ...) stays in state.sim_state as version 2.
_V2 = """
CREATE TABLE sim_orders (
    client_order_id TEXT PRIMARY KEY,
    broker_order_id TEXT NOT NULL,
    open            INTEGER NOT NULL,     -- 1 until the order is final: loaded at start
    data            TEXT NOT NULL         -- the sim's order record JSON
);
CREATE INDEX sim_orders_open ON sim_orders(open) WHERE open = 1;
CREATE INDEX sim_orders_broker_id ON sim_orders(broker_order_id);

CREATE TABLE sim_fills (
    fill_id TEXT PRIMARY KEY,
    ts      TEXT NOT NULL,
    data    TEXT NOT NULL                 -- Fill JSON
);
CREATE INDEX sim_fills_ts ON sim_fills(ts);

CREATE TEMP TABLE sim_v1 AS
SELECT value FROM state
WHERE key = 'sim_state'
  AND json_extract(CASE WHEN json_valid(value) THEN value END, '$.version') = 1;

INSERT INTO sim_orders (client_order_id, broker_order_id, open, data)
SELECT json_extract(o.value, '$.order.client_order_id'),
       COALESCE(json_extract(o.value, '$.order.broker_order_id'), ''),
       json_extract(o.value, '$.order.status')
           NOT IN ('filled', 'canceled', 'expired', 'rejected', 'failed'),
       o.value
FROM sim_v1, json_each(sim_v1.value, '$.orders') AS o
ORDER BY o.id;

INSERT INTO sim_fills (fill_id, ts, data)
SELECT json_extract(f.value, '$.fill_id'),
       strftime('%Y-%m-%dT%H:%M:%f', json_extract(f.value, '$.ts')) || '000+00:00',
       f.value
FROM sim_v1, json_each(sim_v1.value, '$.fills') AS f
ORDER BY f.id;

UPDATE state
SET value = json_set(json_remove(value, '$.orders', '$.fills'), '$.version', 2)
WHERE key = 'sim_state' AND EXISTS (SELECT 1 FROM sim_v1);

DROP TABLE sim_v1;
"""

# Queries run every cycle that read only what they need, however long the history:
# * the open orders (checked each cycle) and the last trade per symbol (the cooldown) get
#   partial indexes holding only the rows they ask for;
# * an order whose filled quantity its stored fills do not cover (checked each cycle):
#   orders.fills_qty is the sum of its stored fills, kept by the triggers below (a fill
#   stored before its order counts from the order's insert), and the rows with a gap
#   have a partial index of their own.
# The queries spell the WHERE terms exactly as these indexes do (memory.py).
_V3 = """
CREATE INDEX orders_open ON orders(created_at)
    WHERE status IN ('intent', 'unknown', 'new', 'partially_filled');
CREATE INDEX orders_traded ON orders(symbol, created_at)
    WHERE status NOT IN ('failed', 'rejected');

ALTER TABLE orders ADD COLUMN fills_qty REAL NOT NULL DEFAULT 0;
UPDATE orders SET fills_qty = COALESCE(
    (SELECT SUM(qty) FROM fills WHERE fills.client_order_id = orders.client_order_id), 0);
CREATE TRIGGER fills_add_to_order AFTER INSERT ON fills BEGIN
    UPDATE orders SET fills_qty = fills_qty + NEW.qty
    WHERE client_order_id = NEW.client_order_id;
END;
CREATE TRIGGER orders_count_fills AFTER INSERT ON orders BEGIN
    UPDATE orders SET fills_qty = COALESCE(
        (SELECT SUM(qty) FROM fills WHERE client_order_id = NEW.client_order_id), 0)
    WHERE rowid = NEW.rowid;
END;
CREATE INDEX orders_fills_missing ON orders(created_at) WHERE filled_qty - fills_qty > 1e-9;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)
"""Migration *n* is ``MIGRATIONS[n - 1]``. Append only."""

LATEST_VERSION = len(MIGRATIONS)
