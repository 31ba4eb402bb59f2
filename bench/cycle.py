"""Cycle cost: N full cycles (sim broker + rules analyst + risk + SQLite memory, auto
approval so orders are placed) against a baseline measured in the same run: a bare loop
writing the same rows to SQLite with the standard sqlite3 module, one transaction per cycle.

    python bench/cycle.py [--cycles 40] [--symbols 10,50] [--optimize-every N]

Honest comparison:

* The same cycles: two warm-up cycles run first and are not timed; the baseline writes
  their rows (and the rows no cycle can be told apart for, e.g. the ``state`` table)
  untimed too, then times exactly the cycles Perun's figure is the median of.
* The same rows into the same schema: every row Perun's cycles left in the database
  (memory's tables and the sim exchange's), rewritten cycle by cycle into a database with
  Perun's tables, indexes and triggers — the writes pay for the same index upkeep.
* The same durability: WAL, foreign keys on, and ``synchronous=FULL`` for a cycle whose
  rows include orders or fills (committed means on disk), ``NORMAL`` otherwise.

Growth: the median of the first and of the last block of timed cycles (a block is a
quarter of the run, at most 50 cycles), for Perun and for the baseline; run with
``--cycles 400`` to see whether a cycle gets slower as the history grows. ``cpu`` is the
process CPU time per cycle (both threads), which a loaded machine inflates less than the
wall time. Step 10 (the performance report, built in the background every
``optimization.every_cycles`` = 20 cycles from the whole history) is part of the cycle and
in the figures; ``--optimize-every 100000`` leaves it out, to tell the two apart.

Prints a table and, as its last line, JSON (the last symbol count):
{"bench":"cycle","symbols":50,"median_ms":…,"baseline_ms":…,"ratio":…, "cycles":…,
 "cpu_ms":…, "first_ms":…, "last_ms":…, "baseline_first_ms":…, "baseline_last_ms":…}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from perun_tui.config import load_settings
from perun_tui.market_hours import SimClock, default_calendar, next_cycle_time
from perun_tui.runtime import build_runtime

TICKERS = [
    "AAPL",
    "MSFT",
    "NVDA",
    "SPY",
    "AMZN",
    "GOOGL",
    "META",
    "TSLA",
    "AVGO",
    "JPM",
    "V",
    "MA",
    "UNH",
    "HD",
    "PG",
    "XOM",
    "COST",
    "JNJ",
    "ABBV",
    "WMT",
    "NFLX",
    "CRM",
    "BAC",
    "KO",
    "PEP",
    "MRK",
    "ORCL",
    "AMD",
    "ADBE",
    "CVX",
    "TMO",
    "LIN",
    "MCD",
    "CSCO",
    "ACN",
    "ABT",
    "WFC",
    "DHR",
    "INTU",
    "TXN",
    "QCOM",
    "IBM",
    "AMGN",
    "CAT",
    "GE",
    "NOW",
    "SPGI",
    "ISRG",
    "PM",
    "UBER",
]

WARMUP = 2
# the tables a cycle writes, parents first (transitions need their signal, the fills
# trigger finds its order)
TABLES = (
    "cycles", "snapshots", "analyses", "signals", "signal_transitions", "orders", "fills",
    "errors", "metrics", "sim_orders", "sim_fills", "state",
)
Rows = dict[str, list[tuple[object, ...]]]


async def perun_cycles(
    symbols: list[str], cycles: int, data: Path, optimize_every: int | None = None
) -> tuple[dict[int, tuple[float, float]], Path]:
    """(wall ms, cpu ms) of each timed cycle by its number, and the database."""
    env = {
        "PERUN_STORAGE__PATH": str(data),
        "PERUN_LLM__PROVIDER": "rules",
        "PERUN_APPROVAL__MODE": "auto",
        "PERUN_TRADING__SYMBOLS": ",".join(symbols),
        "PERUN_RISK__COOLDOWN_MINUTES": "0",
        "PERUN_RISK__MAX_OPEN_POSITIONS": "500",
    }
    if optimize_every is not None:
        env["PERUN_OPTIMIZATION__EVERY_CYCLES"] = str(optimize_every)
    settings = load_settings(env=env, use_dotenv=False, cwd=data)
    calendar = default_calendar()
    clock = SimClock(calendar, speed=1.0)
    runtime = await build_runtime(settings, clock=clock, quote_interval_s=3600)
    daemon = runtime.daemon
    daemon.bus.bind_loop()
    await daemon._startup()
    times: dict[int, tuple[float, float]] = {}
    try:
        for i in range(cycles + WARMUP):
            started, cpu = time.perf_counter(), time.process_time()
            await daemon._run_cycle_guarded()
            if i >= WARMUP:
                times[daemon.current_cycle] = (
                    (time.perf_counter() - started) * 1000,
                    (time.process_time() - cpu) * 1000,
                )
            clock.advance_to(next_cycle_time(clock.now(), settings.trading.frequency_minutes))
    finally:
        daemon._stopping = True
        await daemon._shutdown()
        await runtime.close()
    return times, settings.database_path()


CYCLE_IN_ID = re.compile(r"\bs(\d+)-")


def _cycle_of(table: str, cols: list[str], row: tuple[object, ...]) -> int | None:
    """The cycle that wrote a row: its cycle column, or the cycle in a signal or client
    order id it carries; None when it cannot be told."""
    if table == "cycles":
        return int(str(row[cols.index("number")]))
    if "cycle" in cols and row[cols.index("cycle")] is not None:
        return int(str(row[cols.index("cycle")]))
    for value in row:
        if isinstance(value, str) and (match := CYCLE_IN_ID.search(value)):
            return int(match.group(1))
    return None


def rows_by_cycle(db: Path) -> tuple[list[str], dict[int | None, Rows]]:
    """Perun's schema (tables, then indexes, then triggers) and the rows it wrote,
    grouped by the cycle that wrote them (None: rows no cycle can be told for)."""
    con = sqlite3.connect(db)
    schema = [
        sql
        for kind in ("table", "index", "trigger")
        for (sql,) in con.execute(
            "SELECT sql FROM sqlite_master WHERE type = ? AND sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
            (kind,),
        )
    ]
    out: dict[int | None, Rows] = {}
    for table in TABLES:
        cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
        for row in con.execute(f"SELECT * FROM {table}").fetchall():
            cycle = _cycle_of(table, cols, row)
            out.setdefault(cycle, {}).setdefault(table, []).append(row)
    con.close()
    return schema, out


def _write(con: sqlite3.Connection, rows: Rows) -> None:
    con.execute("BEGIN")
    for table in TABLES:
        if table_rows := rows.get(table):
            marks = ",".join("?" * len(table_rows[0]))
            con.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", table_rows)
    con.execute("COMMIT")


def baseline(
    schema: list[str], rows: dict[int | None, Rows], timed: set[int], path: Path
) -> dict[int, float]:
    """Rewrite the rows cycle by cycle, one transaction each; ms of the ``timed`` ones."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA foreign_keys=ON")
    for sql in schema:
        con.execute(sql)
    con.execute("PRAGMA synchronous=NORMAL")
    _write(con, rows.pop(None, {}))  # untimed: rows of no particular cycle
    times: dict[int, float] = {}
    full = False
    for cycle in sorted(c for c in rows if c is not None):
        durable = bool(rows[cycle].get("orders") or rows[cycle].get("fills"))
        started = time.perf_counter()
        if durable is not full:  # as Perun's memory: switch only when it must
            con.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            full = durable
        _write(con, rows[cycle])
        if cycle in timed:
            times[cycle] = (time.perf_counter() - started) * 1000
    con.close()
    return times


def blocks(values: list[float]) -> tuple[float, float]:
    """Median of the first and of the last block (a quarter of the run, ≤ 50 values)."""
    size = max(1, min(50, len(values) // 4))
    return statistics.median(values[:size]), statistics.median(values[-size:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=40)
    parser.add_argument("--symbols", default="10,50", help="symbol counts, comma-separated")
    parser.add_argument(
        "--optimize-every", type=int, default=None, help="optimization.every_cycles (20)"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.symbols.split(",")]
    result: dict[str, object] = {}
    print(
        f"{'symbols':>7} {'cycles':>6} {'perun ms':>9} {'cpu ms':>7} {'baseline ms':>11} "
        f"{'ratio':>6}   {'growth: first → last block, perun | baseline (ms)'}"
    )
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            times, db = asyncio.run(
                perun_cycles(TICKERS[:n], args.cycles, Path(tmp), args.optimize_every)
            )
            schema, rows = rows_by_cycle(db)
            base = baseline(schema, rows, set(times), Path(tmp) / "baseline.db")
        cycles = sorted(times)
        wall = [times[c][0] for c in cycles]
        cpu = [times[c][1] for c in cycles]
        base_wall = [base[c] for c in cycles if c in base]
        med, base_med = statistics.median(wall), statistics.median(base_wall)
        first, last = blocks(wall)
        base_first, base_last = blocks(base_wall)
        ratio = med / base_med if base_med else float("inf")
        print(
            f"{n:>7} {len(cycles):>6} {med:>9.2f} {statistics.median(cpu):>7.2f} "
            f"{base_med:>11.2f} {ratio:>6.2f}   {first:.2f} → {last:.2f} | "
            f"{base_first:.2f} → {base_last:.2f}"
        )
        result = {
            "bench": "cycle",
            "symbols": n,
            "median_ms": round(med, 2),
            "baseline_ms": round(base_med, 2),
            "ratio": round(ratio, 2),
            "cycles": len(cycles),
            "cpu_ms": round(statistics.median(cpu), 2),
            "first_ms": round(first, 2),
            "last_ms": round(last, 2),
            "baseline_first_ms": round(base_first, 2),
            "baseline_last_ms": round(base_last, 2),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
