"""Issue 3's "done means", end to end: the real ``perun`` (sim, manual approval, the
rules analyst) in a real 120×40 pseudo-terminal, read through a terminal emulator, driven
by key presses as a person in tmux would: prices move, a signal waits, ``a`` fills it
into the portfolio, ``r`` rejects another, ``q`` exits 0 — then the database agrees.

The simulated session is pinned (``tests/sim.py``): on that day the first cycle usually
proposes two buys. Deadlines are limits on a hang, not performance figures (those are in
``bench/tui.py``).
"""

from __future__ import annotations

import re
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.pty_term import Term, perun_env
from tests.sim import SIM_START

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pseudo-terminals")

COLS, ROWS = 120, 40
WITHIN_S = 30.0  # cold imports and a cycle on a loaded machine
CYCLES_WITHIN_S = 150.0  # "a pending signal within a few cycles": ~30 s apart by default
EXIT_WITHIN_S = 5.0
PRICE = re.compile(r"│ AAPL\s+\d+\.\d\d")
PENDING_TITLE = re.compile(r"Signals awaiting approval \((\d+)\)")
PENDING_ROW = re.compile(r"^\s*(BUY|SELL)\s+([A-Z]+)\s+\d")


def panel(t: Term, title: str) -> list[str]:
    """The inside of the panel titled ``title``, one string per row (what is drawn over
    it, a toast, included)."""
    top = t.find_row(f"╭─ {title}")
    if top is None:
        return []
    row = t.row(top)
    left = row.index(f"╭─ {title}")
    right = row.index("╮", left)
    inside: list[str] = []
    for y in range(top + 1, ROWS):
        line = t.row(y)
        if line[left] == "╰":
            break
        inside.append(line[left + 1 : right])
    return inside


def pending_symbols(t: Term) -> list[str]:
    """The pending table's symbols, top (oldest) first."""
    symbols: list[str] = []
    for line in panel(t, "Signals"):
        if "Recent decisions" in line:
            break
        if m := PENDING_ROW.match(line):
            symbols.append(m[2])
    return symbols


def pending_count(t: Term) -> int:
    m = PENDING_TITLE.search(t.text())
    return int(m[1]) if m else 0


def holds(t: Term, symbol: str) -> bool:
    """The Portfolio panel lists a position in ``symbol``."""
    return any(re.match(rf"\s*{symbol}\s+\d", line) for line in panel(t, "Portfolio"))


def decided(t: Term, symbol: str, outcome: str) -> bool:
    """Recent decisions shows ``symbol`` with an outcome starting with ``outcome``."""
    lines = panel(t, "Signals")
    start = next((i for i, line in enumerate(lines) if "Recent decisions" in line), None)
    if start is None:
        return False
    return any(re.search(rf"\b{symbol}\b.*\b{outcome}", line) for line in lines[start + 1 :])


def test_perun_in_a_terminal_approve_fills_reject_rejects_q_exits_zero(tmp_path: Path) -> None:
    env = perun_env(tmp_path, COLS, ROWS)
    env.update(PERUN_SIM__START=SIM_START, PERUN_APPROVAL__MODE="manual")
    t = Term(["-m", "perun_tui.cli"], tmp_path, COLS, ROWS, env=env)  # bare `perun`
    try:
        t.spawn()
        assert t.wait_for(t.complete_frame, WITHIN_S) is not None, t.text()
        assert t.wait_for(lambda: PRICE.search(t.text()) is not None, WITHIN_S), t.text()
        # usually the first cycle's two buys; on a slow start a later cycle's
        assert t.wait_for(lambda: pending_count(t) >= 2, CYCLES_WITHIN_S), t.text()

        # no new cycle while deciding (approvals still work): the rows stay put
        t.press(b"p")
        assert t.wait_for(lambda: "● paused" in t.row(0), WITHIN_S), t.text()
        assert t.wait_for(lambda: len(pending_symbols(t)) >= 2, WITHIN_S), t.text()

        first = pending_symbols(t)[0]  # the cursor is on the oldest: no navigation
        count = pending_count(t)
        t.press(b"a")
        assert t.wait_for(lambda: holds(t, first), WITHIN_S), t.text()
        assert t.wait_for(lambda: pending_count(t) == count - 1, WITHIN_S), t.text()
        assert t.wait_for(lambda: decided(t, first, "filled @"), WITHIN_S), t.text()

        # the row may be under a toast for a few seconds ("Filled", the command's reply)
        assert t.wait_for(lambda: bool(pending_symbols(t)), WITHIN_S), t.text()
        second = pending_symbols(t)[0]
        t.press(b"r")
        assert t.wait_for(lambda: decided(t, second, "rejected"), WITHIN_S), t.text()

        t.press(b"q")
        assert t.wait_exit(EXIT_WITHIN_S), "perun did not exit after q"
        assert t.exit_code == 0
    finally:
        t.close()

    with sqlite3.connect(tmp_path / "db" / "perun-sim.db") as conn:
        decisions = set(conn.execute("SELECT symbol, status FROM signals").fetchall())
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert (first, "filled") in decisions
    assert (second, "rejected") in decisions
