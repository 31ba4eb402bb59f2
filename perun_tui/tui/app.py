"""PerunApp: builds the runtime, runs the daemon in a worker, routes. Nothing else.

The panels own their rendering (``widgets/``), the bridge owns bus → screen
(``bridge.py``), the main screen owns the keys and commands (``screens/main.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import signal
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import App
from textual.binding import Binding, BindingType
from textual.driver import Driver
from textual.worker import Worker, WorkerState

from perun_tui.config import Settings
from perun_tui.events import DaemonState
from perun_tui.redact import redact
from perun_tui.tui.clock import ScreenClock
from perun_tui.tui.commands import PerunCommands
from perun_tui.tui.protocol import DaemonAPI
from perun_tui.tui.screens.confirm import TypedConfirmModal
from perun_tui.tui.screens.main import MainScreen

if TYPE_CHECKING:  # terminal.py needs termios: imported where used (POSIX only)
    from perun_tui.tui.terminal import TerminalGuard

RuntimeFactory = Callable[[Settings], Awaitable[Any]]
"""Builds the runtime (an object with a ``daemon`` attribute and an async ``close()``)."""

STOP_TIMEOUT_S = 15.0  # the daemon itself gives in-flight work 10 s
LAST_RESORT_EXIT_S = 3.0
"""With the terminal gone, the daemon stopped and the database closed: how long the
normal exit may take before the process ends anyway."""


def runtime_modules(settings: Settings) -> list[str]:
    """The modules ``build_runtime`` and the first clock reading need for these
    settings: the runtime, the exchange calendars (pandas; loaded lazily by the trading
    calendar), the broker (numpy for the sim, alpaca-py otherwise) and the Ollama client
    (httpx) when it is the analyst."""
    modules = ["perun_tui.runtime", "pandas_market_calendars"]
    modules.append(
        "perun_tui.brokers.sim" if settings.trading.mode == "sim" else "perun_tui.brokers.alpaca"
    )
    if settings.llm.provider != "rules":
        modules.append("perun_tui.llm.ollama")
    return modules


def _import_all(names: list[str]) -> None:
    for name in names:
        importlib.import_module(name)


def real_runtime(
    *, cycles: int | None = None, every_s: float | None = None, **options: Any
) -> RuntimeFactory:
    """The real runtime (``perun_tui.runtime.build_runtime``) with the cli's options."""

    async def build(settings: Settings) -> Any:
        # about a second of imports, cold: done off the UI thread, all of them, so
        # neither the first frame nor the screen after it is held up by an import
        await asyncio.to_thread(_import_all, runtime_modules(settings))
        from perun_tui.runtime import build_runtime

        return await build_runtime(settings, max_cycles=cycles, every_s=every_s, **options)

    return build


class PerunApp(App[None]):
    CSS_PATH = Path(__file__).with_name("perun.tcss")  # absolute: subclasses live elsewhere
    TITLE = "Perun"
    COMMANDS = App.COMMANDS | {PerunCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit", tooltip="Stop the daemon gracefully and exit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="quit-ctrl-c"),
    ]

    def __init__(
        self,
        settings: Settings,
        *,
        daemon: DaemonAPI | None = None,
        runtime_factory: RuntimeFactory | None = None,
        clock: object | None = None,
        start_daemon: bool = True,
    ) -> None:
        """``daemon`` (tests) skips building the runtime; ``clock`` overrides the daemon's
        clock for display (snapshots); ``start_daemon=False`` attaches without ``run()``."""
        super().__init__()
        self.settings = settings
        self.clock = ScreenClock(clock)
        self._fixed_clock = clock is not None
        self.daemon: DaemonAPI | None = daemon
        self.runtime: Any = None
        self._runtime_factory = runtime_factory or real_runtime()
        self._start_daemon = start_daemon
        self._stopping = False
        self._stop_task: asyncio.Future[None] | None = None
        self._runtime_closed = False  # the daemon has stopped and the runtime is closed
        self._daemon_started = False
        self._last_resort: object | None = None
        self.terminal_guard: TerminalGuard | None = None  # set by PerunDriver
        self.main = MainScreen(settings, self.clock)

    def get_driver_class(self) -> type[Driver]:
        """Textual's Linux driver, made to survive losing the terminal (``terminal.py``)."""
        driver = super().get_driver_class()
        if driver.__name__ == "LinuxDriver" and driver.__module__.startswith("textual."):
            from perun_tui.tui.terminal import PerunDriver

            return PerunDriver
        return driver

    # ------------------------------------------------------------------ start-up

    async def on_mount(self) -> None:
        self.main.size_classes(*self.size)
        await self.push_screen(self.main)  # mounted before anything is attached to it
        if not self.is_headless:
            self._install_signal_handlers()
        if self.settings.trading.mode == "live":
            self.push_screen(
                TypedConfirmModal(
                    "Trade real money?",
                    "trading.mode is \"live\": orders go to your Alpaca live account and "
                    "spend real money. Nothing has started yet.\n\nType LIVE to start.",
                    "LIVE",
                    "Start live trading",
                ),
                self._live_answer,
            )
        else:
            self.call_after_refresh(self._start)  # paint the first frame, then start

    def _live_answer(self, ok: bool | None) -> None:
        if ok:
            self._start()
        else:
            self.exit(return_code=1, message="Live trading not confirmed; nothing was started.")

    def _start(self) -> None:
        self.run_worker(self._boot(), name="boot", group="daemon", exit_on_error=False)

    async def _boot(self) -> None:
        daemon = self.daemon
        if daemon is None:
            self.runtime = await self._runtime_factory(self.settings)
            daemon = self.runtime.daemon
            self.daemon = daemon
        assert daemon is not None
        if not self._fixed_clock:
            clock = getattr(daemon, "clock", None)
            now = getattr(clock, "now", None)
            if now is not None:
                # the first reading of a simulated clock builds the trading calendar's
                # schedule (pandas): in a thread, not on the screen's loop
                await asyncio.to_thread(now)
            self.clock.use(clock)
            self.main.tick()  # ages and time-to-live in the daemon's time from now on
        self.main.attach(daemon)
        self.freeze_heap()
        if self._start_daemon:
            self._daemon_started = True
            self.run_worker(daemon.run(), name="daemon", group="daemon", exit_on_error=False)

    def freeze_heap(self) -> None:
        """Move everything allocated so far (modules, widgets, the runtime) out of the
        garbage collector's sight (``gc.freeze``). A full collection otherwise walks
        them all — 150 ms here, twice in ten seconds under a flood, the worst key
        latencies. Not under a test harness, where many apps share one process."""
        if not self.is_headless:
            gc.freeze()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.name not in ("boot", "daemon"):
            return
        if event.state is WorkerState.ERROR:
            error = worker.error
            what = "start-up" if worker.name == "boot" else "the daemon"
            self.main.report_error(
                what,
                f"{type(error).__name__}: {error}" if error else "failed",
                "Trading has stopped. Quit (q) and check the configuration and the log; "
                "`perun doctor` shows what is wrong.",
            )
            self.main.status.set_state(DaemonState.STOPPED, "error")
        elif event.state is WorkerState.SUCCESS and worker.name == "daemon" and not self._stopping:
            self.main.status.set_state(DaemonState.STOPPED)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self._on_signal), (signal.SIGHUP, self._on_hangup)):
            # not possible off the main thread or on Windows: then Textual's defaults apply
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, handler)

    def _on_signal(self) -> None:
        self.call_later(self.action_quit)

    def _on_hangup(self) -> None:
        """SIGHUP: the SSH connection (or the terminal window) is gone — or someone sent
        it by hand with the terminal still there. Either way: stop and exit."""
        from perun_tui.tui.terminal import is_hung_up

        guard = self.terminal_guard
        if guard is not None and guard.lost:
            return  # already noticed (a failed write, the watcher): being handled
        if guard is not None and is_hung_up(0):
            guard.lose("SIGHUP: the terminal hung up")  # calls terminal_lost
        else:
            self._on_signal()

    def terminal_lost(self, reason: str) -> None:
        """Called (on the event loop) by the driver once the terminal is gone: nothing can
        be shown or typed any more, so stop the daemon and exit as for ``q``."""
        if self._runtime_closed:
            self._arm_last_resort()
        elif not self._stopping:
            self.call_later(self.action_quit)

    def _arm_last_resort(self) -> None:
        """With the terminal gone and the database closed, make sure the process ends."""
        guard = self.terminal_guard
        if self._last_resort is None and guard is not None and guard.lost:
            from perun_tui.tui.terminal import exit_soon

            self._last_resort = exit_soon(LAST_RESORT_EXIT_S, 0)

    def _fatal_error(self) -> None:
        """A crash (a bug in the TUI itself) ends the app like Textual's default, but the
        traceback printed afterwards has no local variables and is redacted: locals can
        hold secrets. Overrides a private Textual hook; checked by a test."""
        self.bell()
        text = redact(traceback.format_exc())
        self._exit_renderables.append(Text(text, style="red"))
        self._close_messages_no_wait()

    # ------------------------------------------------------------------ shutdown

    async def action_quit(self) -> None:
        """Stop the daemon (finishing in-flight orders, flushing state), then exit 0.

        A second quit while stopping exits at once.
        """
        if self._stopping:
            self.exit(return_code=0)
            return
        self._stopping = True
        self.main.status.set_stopping()
        self.run_worker(
            self._stop_then_exit(), name="shutdown", group="shutdown", exit_on_error=False
        )

    async def _stop_then_exit(self) -> None:
        await self._stop_daemon(STOP_TIMEOUT_S)
        self.exit(return_code=0)

    async def _stop_daemon(self, timeout_s: float) -> None:
        """Stop the daemon and close the runtime, once; errors are kept, never raised.

        The work runs in a task of its own, and every caller waits for that same task:
        when the shutdown worker is cancelled (a second ``q`` exits at once), the app's
        unmount still waits for the database to be closed.
        """
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self._stop_and_close(timeout_s))
        await asyncio.shield(self._stop_task)

    async def _stop_and_close(self, timeout_s: float) -> None:
        daemon = self.daemon
        try:
            if self._daemon_started and daemon is not None and (
                daemon.state is not DaemonState.STOPPED
            ):
                await asyncio.wait_for(daemon.stop(), timeout_s)
            close = getattr(self.runtime, "close", None)
            if close is not None:
                result = close()
                if asyncio.iscoroutine(result):
                    await asyncio.wait_for(result, timeout_s)
        except Exception as exc:
            self.main.report_error("shutdown", f"{type(exc).__name__}: {exc}", toast=False)
        finally:
            if self.main.bridge is not None:
                self.main.bridge.close()
            self._runtime_closed = True
            self._arm_last_resort()

    async def on_unmount(self) -> None:
        """Safety net: however the app ends (an exception, a declined live start, the
        test harness), the daemon is stopped and the database closed."""
        await self._stop_daemon(3.0)


def run_tui(
    settings: Settings,
    *,
    mouse: bool = True,
    cycles: int | None = None,
    every_s: float | None = None,
) -> int:
    """Entry point for the cli: run the terminal until the user quits; the exit code.

    ``mouse=False`` (``--no-mouse``) leaves mouse tracking off, which SSH users prefer;
    every action has a key. ``cycles``/``every_s`` are passed to the runtime as for the
    headless runner.
    """
    app = PerunApp(settings, runtime_factory=real_runtime(cycles=cycles, every_s=every_s))
    app.run(mouse=mouse)
    return app.return_code or 0
