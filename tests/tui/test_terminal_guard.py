"""The pieces that keep a lost terminal from hanging perun (``tui/terminal.py``)."""

from __future__ import annotations

import errno
import io
import os
import pty
import sys
import threading

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")

from perun_tui.tui.terminal import GuardedOutput, TerminalGuard, is_hung_up  # noqa: E402


class DeadTerminal(io.StringIO):
    def __init__(self, fail_after: int) -> None:
        super().__init__()
        self.fail_after = fail_after
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        if self.writes > self.fail_after:
            raise OSError(errno.EIO, "Input/output error")
        return super().write(text)


def test_a_failed_write_means_the_terminal_is_lost_and_later_writes_are_dropped() -> None:
    lost: list[str] = []
    guard = TerminalGuard(lost.append, redirect=False)
    stream = DeadTerminal(fail_after=1)
    out = GuardedOutput(stream, guard)
    assert out.write("frame 1") == 7
    assert out.write("frame 2") == 7  # EIO: swallowed, reported
    assert out.write("frame 3") == 7  # not even tried
    out.flush()
    assert stream.getvalue() == "frame 1"
    assert stream.writes == 2
    assert guard.lost and lost == ["writing to the terminal failed (EIO)"]


def test_the_loss_is_reported_once_and_stops_the_input() -> None:
    lost: list[str] = []
    stopped = threading.Event()
    guard = TerminalGuard(lost.append, redirect=False)
    guard.stop_input = stopped.set
    guard.lose("first")
    guard.lose("second")
    assert lost == ["first"] and guard.reason == "first"
    assert stopped.is_set()


def test_the_watcher_notices_a_hang_up_without_any_signal() -> None:
    master, slave = pty.openpty()
    try:
        lost = threading.Event()
        guard = TerminalGuard(lambda reason: lost.set(), redirect=False)
        assert not is_hung_up(slave)
        guard.watch(slave)
        os.close(master)  # the terminal goes away; nothing is written, no SIGHUP here
        master = -1
        assert lost.wait(10), "the hang-up was not noticed"
        assert guard.reason == "the terminal hung up"
        assert is_hung_up(slave)
    finally:
        guard.stop()
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
