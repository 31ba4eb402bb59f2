"""The daemon's commands on the real daemon (sim exchange, rules analyst, real SQLite):
pause, resume, run_now, halt and clear_halt, the approval gate's modes, the drift re-check
on approval and TTL expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from perun_tui.events import DaemonState
from perun_tui.llm.base import (
    AnalysisContext,
    AnalysisResult,
    AnalystHealth,
    DeltaCallback,
    ProposedSignal,
)
from perun_tui.models import Action, Signal, SignalStatus
from perun_tui.runtime import Runtime, build_runtime
from tests.sim import settings_for

Start = Callable[..., Awaitable[Runtime]]


class OneIdea:
    """An analyst that proposes the same buy every cycle, with a given confidence."""

    name = "one-idea"

    def __init__(self, confidence: float) -> None:
        self.confidence = confidence
        self.calls = 0

    async def check(self) -> AnalystHealth:
        return AnalystHealth(ok=True, name=self.name)

    async def analyze(self, context: AnalysisContext, on_delta: DeltaCallback) -> AnalysisResult:
        self.calls += 1
        idea = ProposedSignal(
            symbol="AAPL", action=Action.BUY, confidence=self.confidence, rationale="test idea"
        )
        return AnalysisResult(analyst=self.name, signals=[idea])

    async def close(self) -> None:
        return None


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def one_pending(runtime: Runtime) -> Signal:
    """Run a cycle whose analyst proposes one buy, left pending (manual approval)."""
    daemon = runtime.daemon
    daemon.analysis.primary = OneIdea(0.9)
    daemon.run_now()
    await until(lambda: daemon.cycles_run == 2, "the cycle")
    return daemon.pending_signals()[-1]  # the newest: it supersedes older AAPL ideas


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[Start]:
    """Start a daemon whose schedule never comes due during the test (every_s=3600):
    only the start-up cycle and commands run cycles."""
    runtimes: list[tuple[Runtime, asyncio.Task[None]]] = []

    async def start(**env: str) -> Runtime:
        settings = settings_for(tmp_path, **env)
        runtime = await build_runtime(settings, every_s=3600, quote_interval_s=0.05)
        runtimes.append((runtime, asyncio.create_task(runtime.daemon.run())))
        await until(lambda: runtime.daemon.cycles_run >= 1, "the first cycle")
        return runtime

    yield start
    for runtime, task in runtimes:
        await runtime.daemon.stop()
        await task
        await runtime.close()


async def test_pause_resume_and_run_now(started: Start) -> None:
    runtime = await started()
    daemon = runtime.daemon
    daemon.pause()
    assert daemon.state is DaemonState.PAUSED
    daemon.run_now()  # paused: no cycle
    await asyncio.sleep(0.2)
    assert daemon.cycles_run == 1
    daemon.resume()  # resuming waits for the schedule; it does not run a cycle by itself
    await until(lambda: daemon.state is DaemonState.WAITING, "waiting")
    await asyncio.sleep(0.2)
    assert daemon.cycles_run == 1
    daemon.run_now()
    await until(lambda: daemon.cycles_run == 2, "the cycle asked for")
    cycles = await runtime.memory.cycles()
    assert [c.cycle for c in cycles] == [2, 1]


async def test_halt_runs_no_cycle_and_clear_waits_for_the_schedule(
    started: Start,
) -> None:
    runtime = await started()
    daemon = runtime.daemon
    await daemon.halt("test halt")
    await asyncio.sleep(0.2)
    assert daemon.state is DaemonState.HALTED and daemon.cycles_run == 1
    assert await runtime.memory.get_state("halted") == "test halt"
    await daemon.clear_halt()
    await asyncio.sleep(0.2)
    assert daemon.state is DaemonState.WAITING and daemon.cycles_run == 1
    assert await runtime.memory.get_state("halted") is None


async def test_pausing_mid_analysis_records_the_cycle_as_interrupted(
    started: Start,
) -> None:
    runtime = await started()
    daemon = runtime.daemon
    gate = asyncio.Event()

    class Slow(OneIdea):
        async def analyze(
            self, context: AnalysisContext, on_delta: DeltaCallback
        ) -> AnalysisResult:
            gate.set()
            await asyncio.sleep(3600)
            raise AssertionError("not reached")

    daemon.analysis.primary = Slow(0.9)
    daemon.run_now()
    await asyncio.wait_for(gate.wait(), 10)
    daemon.pause()
    await until(lambda: daemon.cycles_run == 2, "the interrupted cycle")
    last = (await runtime.memory.cycles(limit=1))[0]
    assert last.skipped == "interrupted: paused by user"


@pytest.mark.parametrize(
    ("mode", "confidence", "expected"),
    [
        ("manual", 0.95, SignalStatus.PENDING),
        ("threshold", 0.79, SignalStatus.PENDING),  # below auto_min_confidence 0.8
        ("threshold", 0.80, SignalStatus.FILLED),  # at it: through
        ("auto", 0.60, SignalStatus.FILLED),
    ],
)
async def test_the_approval_gate(
    started: Start, mode: str, confidence: float, expected: SignalStatus
) -> None:
    runtime = await started(PERUN_APPROVAL__MODE=mode)
    daemon = runtime.daemon
    daemon.analysis.primary = OneIdea(confidence)
    daemon.run_now()
    await until(lambda: daemon.cycles_run == 2, "the cycle")
    signals = [s for s in await runtime.memory.signals() if s.cycle == 2]
    assert len(signals) == 1
    signal = await runtime.memory.get_signal(signals[0].id)
    assert signal is not None and signal.status is expected


async def test_approval_rechecks_the_price_and_refuses_after_drift(
    started: Start,
) -> None:
    runtime = await started(PERUN_APPROVAL__TTL_MINUTES="1440")
    daemon = runtime.daemon
    signal = await one_pending(runtime)
    signal.price *= 1.05  # as if proposed at a price 5% away from the market now
    outcome = await daemon.approve(signal.id)
    assert "price moved" in outcome and "limit 1%" in outcome
    stored = await runtime.memory.get_signal(signal.id)
    assert stored is not None and stored.status is SignalStatus.EXPIRED
    assert not [o for o in await runtime.memory.orders() if o.signal_id == signal.id]


async def test_pending_signals_expire_when_their_ttl_passes(
    started: Start,
) -> None:
    runtime = await started(PERUN_APPROVAL__TTL_MINUTES="1")
    daemon = runtime.daemon
    signal = await one_pending(runtime)
    # one sim minute is 2 real seconds at the default speed of 30
    await until(lambda: not daemon.pending_signals(), "the TTL to pass")
    history = await runtime.memory.transitions(signal.id)
    assert (history[-1].new, history[-1].by, history[-1].reason) == (
        SignalStatus.EXPIRED, "ttl", "TTL passed"
    )


async def test_a_newer_idea_supersedes_the_one_still_waiting(started: Start) -> None:
    runtime = await started(PERUN_APPROVAL__TTL_MINUTES="1440")
    daemon = runtime.daemon
    first = await one_pending(runtime)
    daemon.run_now()
    await until(lambda: daemon.cycles_run == 3, "the next cycle")
    newest = daemon.pending_signals()[-1]
    assert newest.cycle == 3 and first.id not in {s.id for s in daemon.pending_signals()}
    last = (await runtime.memory.transitions(first.id))[-1]
    assert (last.new, last.by) == (SignalStatus.EXPIRED, "system")
    assert last.reason == "superseded by the newer BUY AAPL signal of cycle 3"
