"""The process the fault harness starts and kills: the `perun` CLI, unchanged, plus hooks.

    python -m tests.faults.child run --headless --json --every 100ms

is ``perun run --headless ...``; the product carries no test hooks. Two environment
variables, read only here, wrap the broker the runtime builds (and, for one crash point,
``Memory.save_fill``):

``PERUN_FAULTS_JOURNAL=<file>``
    every ``submit`` appends ``<unix time> <client order id>`` to the file *before* the
    broker sees the order. The loopback Alpaca server counts submissions itself
    (``submit_attempts``); the sim runs inside the killed process, so this journal is how
    the harness counts its submissions — including one cut short by ``kill -9``
    (``os.write`` to an ``O_APPEND`` file survives the process).

``PERUN_FAULTS_CRASH=<point>:<n>``
    the process ends itself with ``os._exit(CRASH_EXIT)`` the n-th time it reaches
    ``point`` — a ``kill -9`` at a moment chosen exactly rather than by timing:

    * ``intent``: the order intent is committed, the broker has not been called;
    * ``accepted``: the broker accepted the order, Perun has not saved its answer;
    * ``fill``: a fill is stored, the order row it belongs to is not updated yet.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

JOURNAL_ENV = "PERUN_FAULTS_JOURNAL"
CRASH_ENV = "PERUN_FAULTS_CRASH"
CRASH_POINTS = ("intent", "accepted", "fill")
CRASH_EXIT = 86  # what a crash hook exits with (a signal-free way to tell it happened)


class CrashPoint:
    """Counts arrivals at one named point; ends the process at the n-th."""

    def __init__(self, spec: str) -> None:
        point, _, nth = spec.partition(":")
        if point not in CRASH_POINTS:
            raise SystemExit(f"{CRASH_ENV}: unknown point {point!r}; one of {CRASH_POINTS}")
        self.point = point
        self.nth = int(nth or 1)
        self.seen = 0

    def reached(self, point: str) -> None:
        if point != self.point:
            return
        self.seen += 1
        if self.seen >= self.nth:
            os.write(2, f"crash hook: {point} #{self.seen}\n".encode())
            os._exit(CRASH_EXIT)


def _install(journal: str | None, crash: CrashPoint | None) -> None:
    from perun_tui import runtime
    from perun_tui.services.memory import Memory

    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if journal else None
    real_build = runtime.build_broker

    def build_broker(*args: Any, **kwargs: Any) -> Any:
        broker = real_build(*args, **kwargs)
        real_submit = broker.submit

        async def submit(request: Any) -> Any:
            if crash is not None:
                crash.reached("intent")
            if fd is not None:
                os.write(fd, f"{time.time():.6f} {request.client_order_id}\n".encode())
            placed = await real_submit(request)
            if crash is not None:
                crash.reached("accepted")
            return placed

        broker.submit = submit  # type: ignore[method-assign]
        return broker

    runtime.build_broker = build_broker

    if crash is not None and crash.point == "fill":
        real_save_fill = Memory.save_fill

        async def save_fill(self: Memory, fill: Any) -> bool:
            stored = await real_save_fill(self, fill)
            if stored:
                crash.reached("fill")
            return stored

        Memory.save_fill = save_fill  # type: ignore[method-assign]


def main() -> int:
    journal = os.environ.get(JOURNAL_ENV) or None
    spec = os.environ.get(CRASH_ENV)
    crash = CrashPoint(spec) if spec else None
    if journal or crash:
        _install(journal, crash)
    from perun_tui.cli import main as perun_main

    return perun_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
