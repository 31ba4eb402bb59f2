"""A failed cycle's retry: what the broker asked for after a 429, and no longer than
needed once the broker answers again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from perun_tui.brokers.base import BrokerRetryable
from perun_tui.events import CycleFinished, Event, LogEvent
from perun_tui.runtime import build_runtime
from tests.integration.test_crash_safety import ScriptedAnalyst, _sim_settings


async def test_a_429_retry_waits_what_the_broker_said_and_ends_when_it_answers(
    tmp_path: Path,
) -> None:
    """The first cycle meets a 429 with Retry-After: 60. The retry is announced for 60 s
    (not the 2 s of the exponential backoff), and — the broker answering the quotes poll
    again a moment later — it runs at once instead of a minute later."""
    runtime = await build_runtime(
        _sim_settings(tmp_path), every_s=3600, max_cycles=2, quote_interval_s=0.05
    )
    runtime.daemon.analysis.primary = ScriptedAnalyst()
    real_clock = runtime.broker.clock
    calls = 0

    async def clock() -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BrokerRetryable(
                "clock: Alpaca rate limit hit (429)", status=429, retry_after_s=60.0
            )
        return await real_clock()

    runtime.broker.clock = clock  # type: ignore[method-assign]
    sub = runtime.bus.subscribe(LogEvent, CycleFinished)
    started = time.monotonic()
    try:
        await asyncio.wait_for(runtime.daemon.run(), 45)  # generous; the retry says 60 s
    finally:
        await runtime.close()
    took = time.monotonic() - started
    events: list[Event] = sub.drain()
    messages = [e.message for e in events if isinstance(e, LogEvent)]
    assert any("failed" in m and "retrying after 60s" in m for m in messages), messages
    assert "the broker answers again: retrying the cycle now" in messages
    finished = [e for e in events if isinstance(e, CycleFinished)]
    assert len(finished) == 1 and not finished[0].report.errors
    assert took < 45
