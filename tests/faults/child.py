"""The process the fault harness starts and kills: the `perun` CLI, unchanged, plus a journal.

    python -m tests.faults.child run --headless --json --every 100ms

is ``perun run --headless ...`` with one addition when ``PERUN_FAULTS_JOURNAL`` names a
file: every call of the simulated exchange's ``submit`` appends ``<unix time> <client
order id>`` to that file *before* the exchange sees the order. The loopback Alpaca server
counts submissions itself (``submit_attempts``); the sim runs inside the killed process,
so this journal is how the harness counts its submissions — including one cut short by
``kill -9`` (``os.write`` to an ``O_APPEND`` file survives the process).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

JOURNAL_ENV = "PERUN_FAULTS_JOURNAL"


def _install_journal(path: str) -> None:
    from perun_tui.brokers import sim

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    real_submit = sim.SimBroker.submit

    async def submit(self: sim.SimBroker, request: Any) -> Any:
        os.write(fd, f"{time.time():.6f} {request.client_order_id}\n".encode())
        return await real_submit(self, request)

    sim.SimBroker.submit = submit  # type: ignore[method-assign]


def main() -> int:
    journal = os.environ.get(JOURNAL_ENV)
    if journal:
        _install_journal(journal)
    from perun_tui.cli import main as perun_main

    return perun_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
