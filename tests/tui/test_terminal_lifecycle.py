"""The real ``perun`` in a real pseudo-terminal: losing the terminal, SIGTERM, SIGHUP,
Ctrl+C and ``--no-mouse``. Sim mode, the rules analyst, everything stored under tmp_path.

The exit deadline (5 s) is a limit on a hang, not a performance figure: a healthy exit
takes well under a second; timing figures live in ``bench/tui.py``.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.pty_term import Term

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pseudo-terminals")

EXIT_WITHIN_S = 5.0
FIRST_FRAME_WITHIN_S = 30.0  # cold imports on a loaded machine
MOUSE_ON = b"\x1b[?1000h"
RUNNING = ("● waiting", "● cycling")


@pytest.fixture
def term(tmp_path: Path) -> Iterator[Callable[..., Term]]:
    """Starts ``perun`` (with extra arguments) on a 100×30 pty; waits for its first frame."""
    started: list[Term] = []

    def start(*args: str) -> Term:
        t = Term(["-m", "perun_tui.cli", *args], tmp_path, 100, 30)
        started.append(t)
        t.spawn(keep_raw=True)
        assert t.wait_for(t.complete_frame, FIRST_FRAME_WITHIN_S) is not None, t.text()
        # and the daemon is up (the database is open): the header says what it does
        up = t.wait_for(lambda: any(s in t.row(0) for s in RUNNING), FIRST_FRAME_WITHIN_S)
        assert up is not None, t.text()
        return t

    yield start
    for t in started:
        t.close()  # never leave a child behind, whatever failed


def db_is_intact(tmp_path: Path) -> None:
    path = tmp_path / "db" / "perun-sim.db"
    assert path.exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # the run was recorded (its instance id, where sim time stood)
        assert conn.execute("SELECT count(*) FROM state").fetchone()[0] >= 1


def test_losing_the_terminal_stops_perun_cleanly(term: Callable[..., Term], tmp_path: Path) -> None:
    t: Term = term()
    t.hang_up()  # the SSH connection drops: sshd closes the master side
    assert t.wait_exit(EXIT_WITHIN_S), "perun did not exit after its terminal went away"
    assert t.exit_code == 0
    db_is_intact(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_stops_perun_cleanly_and_restores_the_terminal(
    term: Callable[..., Term], tmp_path: Path, sig: signal.Signals
) -> None:
    t: Term = term()
    t.signal(sig)
    assert t.wait_exit(EXIT_WITHIN_S), f"perun did not exit after {sig.name}"
    assert t.exit_code == 0
    raw = bytes(t.raw or b"")
    # the terminal was given back: alternate screen left, cursor shown again
    assert raw.rfind(b"\x1b[?1049l") > raw.rfind(b"\x1b[?1049h") >= 0
    assert raw.rfind(b"\x1b[?25h") > raw.rfind(b"\x1b[?25l")
    db_is_intact(tmp_path)


def test_ctrl_c_stops_perun_cleanly(term: Callable[..., Term], tmp_path: Path) -> None:
    """In the terminal's raw mode Ctrl+C is a key, not SIGINT: it quits like ``q``."""
    t: Term = term()
    t.press(b"\x03")
    assert t.wait_exit(EXIT_WITHIN_S), "perun did not exit after Ctrl+C"
    assert t.exit_code == 0
    db_is_intact(tmp_path)


def test_no_mouse_leaves_mouse_tracking_off(term: Callable[..., Term]) -> None:
    t: Term = term("--no-mouse")
    assert t.raw is not None and MOUSE_ON not in t.raw
    t.close()
    assert t.exit_code == 0


def test_mouse_tracking_is_on_by_default(term: Callable[..., Term]) -> None:
    t: Term = term()
    assert t.raw is not None and MOUSE_ON in t.raw
