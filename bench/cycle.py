"""Cycle cost: N full cycles (sim broker + rules analyst + risk + SQLite memory, auto
approval so orders are placed) against a baseline measured in the same run: a bare loop
writing the same rows to SQLite with the standard sqlite3 module, one transaction per cycle.

    python bench/cycle.py [--cycles 40]

The baseline uses the settings Perun's memory uses, so both pay for the same durability:
WAL, foreign keys on, and ``synchronous=FULL`` for a cycle whose rows include orders or
fills (committed means on disk), ``NORMAL`` otherwise. Each cycle's ``cycles`` row is
written in its own cycle, as Perun does.

Prints a table and, as its last line, JSON:
{"bench":"cycle","symbols":50,"median_ms":…,"baseline_ms":…,"ratio":…}
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

TABLES = ("cycles", "snapshots", "analyses", "signals", "signal_transitions", "orders", "fills")


async def perun_cycles(symbols: list[str], cycles: int, data: Path) -> tuple[list[float], Path]:
    env = {
        "PERUN_STORAGE__PATH": str(data),
        "PERUN_LLM__PROVIDER": "rules",
        "PERUN_APPROVAL__MODE": "auto",
        "PERUN_TRADING__SYMBOLS": ",".join(symbols),
        "PERUN_RISK__COOLDOWN_MINUTES": "0",
        "PERUN_RISK__MAX_OPEN_POSITIONS": "500",
    }
    settings = load_settings(env=env, use_dotenv=False, cwd=data)
    calendar = default_calendar()
    clock = SimClock(calendar, speed=1.0)
    runtime = await build_runtime(settings, clock=clock, quote_interval_s=3600)
    daemon = runtime.daemon
    daemon.bus.bind_loop()
    await daemon._startup()
    times: list[float] = []
    try:
        for _ in range(cycles + 2):  # two warm-up cycles
            started = time.perf_counter()
            await daemon._run_cycle_guarded()
            times.append((time.perf_counter() - started) * 1000)
            clock.advance_to(next_cycle_time(clock.now(), settings.trading.frequency_minutes))
    finally:
        daemon._stopping = True
        await daemon._shutdown()
        await runtime.close()
    return times[2:], settings.database_path()


CYCLE_IN_ID = re.compile(r"\bs(\d+)-")


def rows_by_cycle(db: Path) -> dict[int, dict[str, list[tuple[object, ...]]]]:
    """The rows Perun wrote, grouped by the cycle that wrote them (by the cycle column,
    or the cycle encoded in signal and client order ids), for the baseline to rewrite."""
    con = sqlite3.connect(db)
    out: dict[int, dict[str, list[tuple[object, ...]]]] = {}
    for table in TABLES:
        cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
        for row in con.execute(f"SELECT * FROM {table}").fetchall():
            if table == "cycles":
                cycle = int(row[cols.index("number")])
            elif "cycle" in cols and row[cols.index("cycle")] is not None:
                cycle = int(row[cols.index("cycle")])
            else:
                match = next(
                    (
                        CYCLE_IN_ID.search(v)
                        for v in row
                        if isinstance(v, str) and CYCLE_IN_ID.search(v)
                    ),
                    None,
                )
                cycle = int(match.group(1)) if match else 0
            out.setdefault(cycle, {}).setdefault(table, []).append(row)
    schema = [
        r[0]
        for r in con.execute(
            "SELECT sql FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    con.close()
    out[-1] = {"__schema__": [(s,) for s in schema if s]}
    return out


def baseline(rows: dict[int, dict[str, list[tuple[object, ...]]]], path: Path) -> list[float]:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA foreign_keys=ON")
    for (sql,) in rows.pop(-1)["__schema__"]:
        con.execute(str(sql).replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
    times = []
    full: bool | None = None
    for cycle in sorted(rows):
        durable = bool(rows[cycle].get("orders") or rows[cycle].get("fills"))
        started = time.perf_counter()
        if durable is not full:  # as Perun's memory: switch only when it must
            con.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            full = durable
        con.execute("BEGIN")
        for table, table_rows in rows[cycle].items():
            marks = ",".join("?" * len(table_rows[0]))
            con.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", table_rows)
        con.execute("COMMIT")
        times.append((time.perf_counter() - started) * 1000)
    con.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=40)
    args = parser.parse_args()
    result: dict[str, object] = {}
    print(f"{'symbols':>8} {'perun median ms':>16} {'baseline ms':>12} {'ratio':>6}")
    for n in (10, 50):
        with tempfile.TemporaryDirectory() as tmp:
            times, db = asyncio.run(perun_cycles(TICKERS[:n], args.cycles, Path(tmp)))
            base = baseline(rows_by_cycle(db), Path(tmp) / "baseline.db")
        med, base_med = statistics.median(times), statistics.median(base)
        ratio = med / base_med if base_med else float("inf")
        print(f"{n:>8} {med:>16.2f} {base_med:>12.2f} {ratio:>6.2f}")
        result = {
            "bench": "cycle",
            "symbols": n,
            "median_ms": round(med, 2),
            "baseline_ms": round(base_med, 2),
            "ratio": round(ratio, 2),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
