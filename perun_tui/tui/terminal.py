"""Losing the terminal must end perun cleanly, never hang it.

When an SSH connection drops, the terminal behind stdin/stdout/stderr is hung up: reads
return end-of-file at once and writes fail with EIO. Textual's Linux driver is not built
for that. Its output thread dies on the first failed write, after which the event loop
blocks for good in ``queue.put`` once the output queue is full (30 writes, a few
frames); its input thread spins on the end-of-file. SIGTERM then does nothing, because
the loop that would handle it is stuck.

:class:`PerunDriver` is the Linux driver with three additions:

* its output goes through :class:`GuardedOutput`, which turns a failed write into "the
  terminal is gone" instead of an exception, so the output thread never dies;
* a watcher thread waits for the terminal to hang up (``POLLHUP`` on stdin), which also
  covers a terminal that vanishes without a SIGHUP reaching us;
* when the terminal is gone (either of those, or a SIGHUP with the terminal hung up),
  :meth:`TerminalGuard.lose` points fds 0, 1 and 2 at ``/dev/null`` — every later write
  succeeds into the void and the input thread sees a clean end — stops the input
  thread, and tells the app, which stops the daemon and exits as for ``q``.

The app then exits normally; as a last resort, once the daemon has stopped and the
database is closed, :func:`exit_soon` ends the process if the normal exit stalls.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
from collections.abc import Callable
from typing import IO, Any, cast

from textual.drivers.linux_driver import LinuxDriver

WATCH_INTERVAL_S = 0.5
_HUNG_UP = select.POLLHUP | select.POLLERR | select.POLLNVAL

LostCallback = Callable[[str], None]


def is_hung_up(fd: int) -> bool:
    """True when ``fd`` is a terminal (or pipe) whose other side has gone."""
    poller = select.poll()
    poller.register(fd, 0)  # no events asked for: only hang-up and errors are reported
    try:
        ready = poller.poll(0)
    except OSError:
        return True
    return any(mask & _HUNG_UP for _, mask in ready)


class TerminalGuard:
    """Knows whether the terminal is still there; :meth:`lose` handles its loss, once."""

    def __init__(self, on_lost: LostCallback | None = None, *, redirect: bool = True) -> None:
        """``redirect=False`` leaves fds 0-2 alone (tests of the guard itself)."""
        self.on_lost = on_lost
        self.redirect = redirect
        self.reason: str | None = None
        self.stop_input: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def lost(self) -> bool:
        return self.reason is not None

    def lose(self, reason: str) -> None:
        """The terminal is gone: make every later read and write harmless, stop reading
        input, and tell the app (from any thread)."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
        if self.redirect:
            _redirect_to_devnull()
        if self.stop_input is not None:
            self.stop_input()
        if self.on_lost is not None:
            self.on_lost(reason)

    # ------------------------------------------------------------------ watcher

    def watch(self, fd: int) -> None:
        """Watch ``fd`` (the terminal's input) for a hang-up, in a daemon thread."""
        if self._watcher is not None or not os.isatty(fd):
            return
        self._stop.clear()
        self._watcher = threading.Thread(
            target=self._watch, args=(fd,), name="perun-terminal-watch", daemon=True
        )
        self._watcher.start()

    def _watch(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, 0)
        while not self._stop.is_set() and self.reason is None:
            try:
                ready = poller.poll(WATCH_INTERVAL_S * 1000)
            except OSError:
                ready = [(fd, select.POLLERR)]
            if self._stop.is_set():
                return
            if any(mask & _HUNG_UP for _, mask in ready):
                self.lose("the terminal hung up")
                return

    def stop(self) -> None:
        self._stop.set()


class GuardedOutput:
    """A text stream that reports a failed write as a lost terminal instead of raising,
    and drops everything after that (the output thread must never die)."""

    def __init__(self, stream: IO[str], guard: TerminalGuard) -> None:
        self._stream = stream
        self._guard = guard

    def write(self, text: str) -> int:
        if not self._guard.lost:
            try:
                return self._stream.write(text)
            except (OSError, ValueError) as exc:
                self._guard.lose(_describe(exc))
        return len(text)

    def flush(self) -> None:
        if not self._guard.lost:
            try:
                self._stream.flush()
            except (OSError, ValueError) as exc:
                self._guard.lose(_describe(exc))

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return True


class PerunDriver(LinuxDriver):
    """Textual's Linux driver that survives losing its terminal (see the module doc).

    The app learns about a loss through ``terminal_lost(reason)``, called on its event
    loop, when it has such a method.
    """

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = TerminalGuard(self._report)
        self.guard.stop_input = self.exit_event.set
        if self._file is not None:
            # the stream the output thread writes to (stderr): a failed write is a loss
            self._file = cast(Any, GuardedOutput(self._file, self.guard))
        app.terminal_guard = self.guard

    def start_application_mode(self) -> None:
        super().start_application_mode()  # type: ignore[no-untyped-call]
        self.guard.watch(self.fileno)

    def close(self) -> None:
        self.guard.stop()
        super().close()

    def _report(self, reason: str) -> None:
        handler = getattr(self._app, "terminal_lost", None)
        if handler is None or self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop has just closed
            self._loop.call_soon_threadsafe(handler, reason)


def exit_soon(delay_s: float, code: int = 0) -> threading.Timer:
    """End the process after ``delay_s`` whatever else is still running.

    Only for after the daemon has stopped and the database is closed, when the terminal
    is gone and nothing is left to show: a normal exit may still wait on a stuck thread.
    """
    timer = threading.Timer(delay_s, os._exit, (code,))
    timer.daemon = True
    timer.start()
    return timer


def _redirect_to_devnull() -> None:
    """Point stdin, stdout and stderr at /dev/null: writes succeed, reads end at once."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
    except OSError:
        return
    try:
        for fd in (0, 1, 2):
            with contextlib.suppress(OSError):
                os.dup2(null, fd)
    finally:
        if null > 2:
            os.close(null)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"writing to the terminal failed ({errno.errorcode.get(exc.errno, exc.errno)})"
    return f"writing to the terminal failed ({type(exc).__name__})"
