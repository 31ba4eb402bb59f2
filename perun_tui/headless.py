"""The headless runner: the daemon without a screen, one line per event on stdout.

Used by `perun run --headless`, scripts and demos. Ctrl+C, SIGTERM and SIGHUP stop it
gracefully: an order call in flight finishes, the database is flushed, exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import TextIO

from perun_tui.bus import Subscription
from perun_tui.config import Settings
from perun_tui.events import (
    AnalysisFinished,
    CycleFinished,
    Event,
    PortfolioUpdated,
    QuotesUpdated,
    ReasoningDelta,
    ScheduleUpdated,
)
from perun_tui.redact import install_logging_filter, redact
from perun_tui.runtime import build_runtime

QUIET_EVENTS = (QuotesUpdated, PortfolioUpdated, ScheduleUpdated)


class EventPrinter:
    """Formats events as readable lines (or JSON lines) on a stream."""

    def __init__(
        self,
        out: TextIO,
        *,
        as_json: bool,
        verbose: bool = False,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.out = out
        self.as_json = as_json
        self.verbose = verbose
        self.on_closed = on_closed
        self.closed = False
        self._reasoning: dict[tuple[int, str], str] = {}
        self.last_portfolio: PortfolioUpdated | None = None

    def handle(self, event: Event) -> None:
        if isinstance(event, PortfolioUpdated):
            self.last_portfolio = event
        if self.as_json:
            self.write(json.dumps(event.to_dict(), default=str))
            return
        if isinstance(event, ReasoningDelta):
            self._reasoning_lines(event)
            return
        if isinstance(event, AnalysisFinished | CycleFinished):
            self._flush_reasoning()
        if isinstance(event, QUIET_EVENTS) and not self.verbose:
            return
        self.write(event.describe())

    def _reasoning_lines(self, event: ReasoningDelta) -> None:
        key = (event.cycle, event.channel)
        text = self._reasoning.get(key, "") + event.text
        *complete, rest = text.split("\n")
        for line in complete:
            if line.strip():
                self.write(f"  │ {line}")
        self._reasoning[key] = rest

    def _flush_reasoning(self) -> None:
        for rest in self._reasoning.values():
            if rest.strip():
                self.write(f"  │ {rest}")
        self._reasoning.clear()

    def write(self, line: str) -> None:
        if self.closed:
            return
        try:
            self.out.write(redact(line) + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):
            # the reader went away (`perun run --headless | head`): nobody is watching, so
            # stop gracefully like on Ctrl+C instead of trading on unseen
            self.closed = True
            _silence(self.out)
            if self.on_closed is not None:
                self.on_closed()

    def summary(self) -> None:
        if self.as_json or self.last_portfolio is None:
            return
        p = self.last_portfolio
        self.write(p.describe())
        for pos in p.positions:
            self.write(
                f"  {pos.symbol} {pos.qty:g} @ {pos.avg_price:.2f} → {pos.market_price:.2f} "
                f"P&L {pos.unrealized_pl:+,.2f} ({pos.unrealized_pl_pct:+.2f}%)"
            )


async def run_headless(
    settings: Settings,
    *,
    cycles: int | None,
    every_s: float | None,
    as_json: bool,
    verbose: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    install_logging_filter()  # log lines on stderr are redacted too
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()

    def request_stop() -> None:
        stop_requested.set()

    # before the database is opened: a signal during start-up is a graceful stop too
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, request_stop)
    try:
        runtime = await build_runtime(settings, every_s=every_s, max_cycles=cycles)
    except BaseException:
        _remove_signal_handlers(loop)
        raise
    printer = EventPrinter(out, as_json=as_json, verbose=verbose, on_closed=request_stop)
    sub: Subscription[Event] = runtime.bus.subscribe(coalesce=not as_json)
    daemon = runtime.daemon

    async def pump() -> None:
        while True:
            await sub.wait()
            for event in sub.drain():
                printer.handle(event)
            if sub.closed:
                return

    async def watch_stop() -> None:
        await stop_requested.wait()
        await daemon.stop()

    pump_task = asyncio.create_task(pump())
    stop_task = asyncio.create_task(watch_stop())
    code = 0
    try:
        await daemon.run()
    except Exception as exc:  # the daemon recorded what it could; say it plainly
        printer.write(f"perun stopped on an error: {type(exc).__name__}: {exc}")
        code = 1
    finally:
        stop_task.cancel()
        await asyncio.sleep(0)
        for event in sub.drain():
            printer.handle(event)
        pump_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump_task
        printer.summary()
        await runtime.close()
        _remove_signal_handlers(loop)
    return code


def _silence(out: TextIO) -> None:
    """Point a broken pipe's descriptor at /dev/null: the flush at exit must not fail."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)


def _remove_signal_handlers(loop: asyncio.AbstractEventLoop) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)
