"""A program on a real pseudo-terminal, its output fed to a terminal emulator (pyte).

Shared by the terminal's lifecycle tests (``tests/tui/test_terminal_lifecycle.py``) and
the TUI benchmark (``bench/tui.py``): spawn ``python <argv>`` on a pty of a given size
with an isolated environment (no user config, data in a temp dir, sim mode, the rules
analyst, nothing that reaches the network), read what it draws, press keys, send it
signals, hang the terminal up, and reap it — never leaving a child behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyte

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PANEL_TITLES = ("╭─ Market", "╭─ Portfolio", "╭─ Reasoning", "╭─ Signals", "╭─ Log · ")


def perun_env(tmp: Path, cols: int = 120, rows: int = 40) -> dict[str, str]:
    """The parent's environment minus anything that configures Perun or reaches out,
    with config, data and the database under ``tmp``."""
    drop = ("PERUN_", "APCA_", "OLLAMA", "TRADING_", "MARKET_OPEN", "TEXTUAL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    for sub in ("config", "data", "db"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    env.update(
        TERM="xterm-256color",
        COLUMNS=str(cols),
        LINES=str(rows),
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        XDG_CONFIG_HOME=str(tmp / "config"),  # no user perun.toml
        XDG_DATA_HOME=str(tmp / "data"),
        PERUN_STORAGE__PATH=str(tmp / "db"),
        PERUN_TRADING__MODE="sim",
        PERUN_LLM__PROVIDER="rules",  # no Ollama probe, not even on localhost
        PERUN_NOTIFY__BELL="false",
        PERUN_NOTIFY__WEBHOOK_URL="",
        PERUN_NOTIFY__SMTP_HOST="",
    )
    return env


@dataclass
class Term:
    """One child on a pty, its output fed to an emulated ``cols``×``rows`` screen."""

    argv: list[str]
    tmp: Path
    cols: int = 120
    rows: int = 40
    env: dict[str, str] | None = None
    pid: int = 0
    fd: int = -1
    started: float = 0.0
    bytes_read: int = 0
    feed_s: float = 0.0  # time this process spent emulating the output
    first_byte: float | None = None
    eof: bool = False
    exit_code: int | None = None
    raw: bytearray | None = None  # every byte read, when asked for (keep_raw=True)
    screen: pyte.Screen = field(init=False)

    def __post_init__(self) -> None:
        self.screen = pyte.Screen(self.cols, self.rows)
        self.stream = pyte.ByteStream(self.screen)

    def spawn(self, *, keep_raw: bool = False) -> Term:
        env = self.env if self.env is not None else perun_env(self.tmp, self.cols, self.rows)
        self.raw = bytearray() if keep_raw else None
        self.started = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:  # the child: size the terminal, then become the program
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", self.rows, self.cols, 0, 0))
                os.chdir(self.tmp)
                os.execve(sys.executable, [sys.executable, *self.argv], env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        os.set_blocking(fd, False)
        return self

    # ------------------------------------------------------------------ output

    def pump(self, timeout: float) -> float | None:
        """Read one chunk (if any arrives within ``timeout``) into the emulator; the time
        it was read, or None."""
        if self.eof or self.fd < 0:
            time.sleep(timeout)
            return None
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        at = time.perf_counter()
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return None
        except OSError:  # EIO: the child has gone and closed the terminal
            data = b""
        if not data:
            self.eof = True
            return None
        if self.first_byte is None:
            self.first_byte = at
        self.bytes_read += len(data)
        if self.raw is not None:
            self.raw += data
        self.stream.feed(data)
        self.feed_s += time.perf_counter() - at
        return at

    def drain(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        while (left := end - time.perf_counter()) > 0:
            self.pump(min(left, 0.05))

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> float | None:
        """Pump until ``predicate`` holds; the read time of the chunk that made it so."""
        if predicate():
            return time.perf_counter()
        end = time.perf_counter() + timeout
        while (left := end - time.perf_counter()) > 0 and not self.eof:
            at = self.pump(min(left, 0.05))
            if at is not None and predicate():
                return at
        return None

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def row(self, y: int) -> str:
        line = self.screen.buffer[y]
        return "".join(line[x].data for x in range(self.cols))

    def find_row(self, needle: str) -> int | None:
        return next((y for y in range(self.rows) if needle in self.row(y)), None)

    def complete_frame(self) -> bool:
        """The main screen is fully drawn: the header, the five panels and the footer."""
        text = self.text()
        footer = self.row(self.rows - 1)
        return (
            "Perun" in self.row(0)
            and all(t in text for t in PANEL_TITLES)
            and "Quit" in footer
            and "Help" in footer
        )

    # ------------------------------------------------------------------ input, /proc

    def press(self, key: bytes) -> float:
        os.write(self.fd, key)
        return time.perf_counter()

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def cpu_wait_s(self) -> float:
        """Time the main thread spent runnable but waiting for a CPU (other load)."""
        try:
            with open(f"/proc/{self.pid}/schedstat") as fh:
                return int(fh.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return float("nan")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    # ------------------------------------------------------------------ the end

    def signal(self, sig: int) -> float:
        os.kill(self.pid, sig)
        return time.perf_counter()

    def hang_up(self) -> float:
        """Close the terminal's master side, as sshd does when a connection drops."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1
        return time.perf_counter()

    def wait_exit(self, timeout: float) -> bool:
        """Reap the child within ``timeout`` (reading its output meanwhile: a child
        blocked on a full terminal never exits); True when it has exited."""
        if self.exit_code is not None:
            return True
        end = time.perf_counter() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
                return True
            left = end - time.perf_counter()
            if left <= 0:
                return False
            self.pump(min(left, 0.05))

    def close(self) -> float | None:
        """``q``, then SIGTERM, then SIGKILL; the seconds ``q`` took, if it was enough.

        Runs to the end even if an exception (a time budget's alarm) interrupts it
        meanwhile — that is raised afterwards: a child is never left behind."""
        if self.pid <= 0 or self.exit_code is not None:
            self.hang_up()
            return None
        quit_s: float | None = None
        late: Exception | None = None
        try:
            if self.fd >= 0:
                sent = self.press(b"q")
                if self.wait_exit(5.0):
                    quit_s = time.perf_counter() - sent
        except (OSError, ChildProcessError):
            pass
        except Exception as exc:
            late = exc
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if self.exit_code is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            try:
                self.wait_exit(wait)
            except ChildProcessError:
                break
            except Exception as exc:
                late = exc
        self.hang_up()
        if late is not None:
            raise late
        return quit_s
