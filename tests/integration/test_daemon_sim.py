"""The whole cycle on the sim exchange with the rules analyst: real SQLite, real daemon."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from perun_tui.config import Settings
from perun_tui.events import AnalysisFinished, CycleFinished, ErrorRaised, LogEvent, SignalChanged
from perun_tui.llm.base import AnalysisContext, AnalysisResult, AnalystHealth, DeltaCallback
from perun_tui.models import OrderStatus, SignalStatus
from perun_tui.runtime import build_runtime
from perun_tui.services.memory import Memory
from tests.sim import SIM_START, settings_for


async def run_cycles(settings: Settings, cycles: int) -> list[Any]:
    runtime = await build_runtime(settings, every_s=0.01, max_cycles=cycles, quote_interval_s=0.05)
    sub = runtime.bus.subscribe(coalesce=False)
    try:
        await asyncio.wait_for(runtime.daemon.run(), 60)
    finally:
        await runtime.close()
    return sub.drain()


async def test_auto_mode_places_and_fills_orders(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, PERUN_APPROVAL__MODE="auto")
    events = await run_cycles(settings, 6)
    reports = [e.report for e in events if isinstance(e, CycleFinished)]
    assert [r.cycle for r in reports] == [1, 2, 3, 4, 5, 6]
    assert sum(r.submitted for r in reports) >= 1
    async with await Memory.open(settings.database_path()) as memory:
        orders = await memory.orders()
        assert orders and all(o.status is OrderStatus.FILLED for o in orders)
        assert len({o.client_order_id for o in orders}) == len(orders)
        fills = await memory.fills()
        assert sum(f.qty for f in fills) == pytest.approx(sum(o.filled_qty for o in orders))
        filled = await memory.signals([SignalStatus.FILLED])
        assert {s.client_order_id for s in filled} == {o.client_order_id for o in orders}
        for signal in filled:
            path = [t.new for t in await memory.transitions(signal.id)]
            assert path == [SignalStatus.APPROVED, SignalStatus.SUBMITTED, SignalStatus.FILLED]


async def waiting_fate(memory: Memory, ids: set[str]) -> dict[str, str]:
    """What became of signals that were pending: still pending, or superseded by a newer
    one on the same symbol — anything else (a TTL expiry, a vanished row) is a loss."""
    out = {}
    for sid in ids:
        last = (await memory.transitions(sid))[-1]
        if last.new is SignalStatus.PENDING:
            out[sid] = "pending"
        elif last.new is SignalStatus.EXPIRED and last.reason.startswith("superseded"):
            out[sid] = "superseded"
        else:
            out[sid] = f"{last.new.value} by {last.by}: {last.reason}"
    return out


async def test_restart_continues_cycles_positions_and_pending(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        PERUN_APPROVAL__TTL_MINUTES="1440",
        PERUN_APPROVAL__MODE="threshold",  # the surer ideas fill, the others wait
        PERUN_APPROVAL__AUTO_MIN_CONFIDENCE="0.7",
    )
    await run_cycles(settings, 4)
    async with await Memory.open(settings.database_path()) as memory:
        waiting = {s.id for s in await memory.pending_signals()}
        snapshot = await memory.last_snapshot()
        assert snapshot is not None
        held = {p.symbol: p.qty for p in snapshot.positions}
    assert waiting, "the rules analyst should leave something pending in 4 cycles"
    assert held, "and fill something"
    runtime = await build_runtime(settings, every_s=0.01, max_cycles=1, quote_interval_s=0.05)
    sub = runtime.bus.subscribe(LogEvent)
    try:
        await asyncio.wait_for(runtime.daemon.run(), 60)
        restored = [e.message for e in sub.drain() if "restored" in e.message]
        assert restored == [f"restored {len(waiting)} pending signal(s)"]
        assert set((await waiting_fate(runtime.memory, waiting)).values()) <= {
            "pending", "superseded"
        }
        positions = {p.symbol: p.qty for p in await runtime.broker.positions()}
        assert {s: positions.get(s) for s in held} == held
        assert await runtime.memory.next_cycle_number() == 6
    finally:
        await runtime.close()


async def test_double_approval_yields_one_order(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, PERUN_APPROVAL__TTL_MINUTES="1440",
                            PERUN_APPROVAL__MAX_DRIFT_PCT="50")
    await run_cycles(settings, 3)
    runtime = await build_runtime(settings, every_s=30, max_cycles=None, quote_interval_s=0.05)
    task = asyncio.create_task(runtime.daemon.run())
    try:
        for _ in range(200):
            if runtime.daemon.execution.ready and runtime.daemon.pending_signals():
                break
            await asyncio.sleep(0.02)
        signal = runtime.daemon.pending_signals()[0]
        outcomes = await asyncio.gather(
            runtime.daemon.approve(signal.id), runtime.daemon.approve(signal.id)
        )
        assert sum("already" in o for o in outcomes) == 1, outcomes
        orders = [o for o in await runtime.memory.orders() if o.signal_id == signal.id]
        assert len(orders) == 1
        # and once more after the fact: still one order
        assert "already" in await runtime.daemon.approve(signal.id)
        assert len([o for o in await runtime.memory.orders() if o.signal_id == signal.id]) == 1
    finally:
        await runtime.daemon.stop()
        await task
        await runtime.close()


async def test_reject_is_recorded_with_who_and_why(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, PERUN_APPROVAL__TTL_MINUTES="1440")
    await run_cycles(settings, 3)
    runtime = await build_runtime(settings, every_s=30, quote_interval_s=0.05)
    task = asyncio.create_task(runtime.daemon.run())
    try:
        for _ in range(200):
            if runtime.daemon.execution.ready and runtime.daemon.pending_signals():
                break
            await asyncio.sleep(0.02)
        signal = runtime.daemon.pending_signals()[0]
        assert "rejected" in await runtime.daemon.reject(signal.id, "not today")
        history = await runtime.memory.transitions(signal.id)
        assert history[-1].new is SignalStatus.REJECTED
        assert (history[-1].by, history[-1].reason) == ("user", "not today")
    finally:
        await runtime.daemon.stop()
        await task
        await runtime.close()


class BrokenAnalyst:
    name = "broken"

    async def check(self) -> AnalystHealth:
        return AnalystHealth(ok=True, name="broken")

    async def analyze(self, context: AnalysisContext, on_delta: DeltaCallback) -> AnalysisResult:
        on_delta("content", "thinking about it...\n")
        return AnalysisResult(analyst="broken", error="model reply invalid after 1 repair")

    async def close(self) -> None:
        return None


class CrashingAnalyst(BrokenAnalyst):
    calls = 0

    async def analyze(self, context: AnalysisContext, on_delta: DeltaCallback) -> AnalysisResult:
        CrashingAnalyst.calls += 1
        raise RuntimeError("boom")


async def test_analysis_error_is_explicit_and_the_daemon_carries_on(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    runtime = await build_runtime(settings, every_s=0.01, max_cycles=2, quote_interval_s=0.05)
    runtime.daemon.analysis.primary = BrokenAnalyst()
    sub = runtime.bus.subscribe(coalesce=False)
    try:
        await asyncio.wait_for(runtime.daemon.run(), 60)
        events = sub.drain()
        finished = [e for e in events if isinstance(e, AnalysisFinished)]
        assert len(finished) == 2 and all(e.error for e in finished)
        assert not [e for e in events if isinstance(e, SignalChanged)]
        assert any(isinstance(e, ErrorRaised) and e.where == "analysis" for e in events)
        errors = await runtime.memory.errors()
        assert len(errors) == 2
    finally:
        await runtime.close()


async def test_a_crashing_cycle_is_recorded_and_retried(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    runtime = await build_runtime(settings, every_s=0.01, max_cycles=2, quote_interval_s=0.05)
    runtime.daemon.analysis.primary = CrashingAnalyst()
    sub = runtime.bus.subscribe(ErrorRaised)
    try:
        await asyncio.wait_for(runtime.daemon.run(), 60)
        errors = sub.drain()
        assert [e.message for e in errors] == ["RuntimeError: boom"] * 2
        assert CrashingAnalyst.calls == 2
    finally:
        await runtime.close()


def test_headless_cli_end_to_end(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_LLM__PROVIDER": "rules",
        "PERUN_APPROVAL__MODE": "auto",
        "PERUN_RISK__COOLDOWN_MINUTES": "0",
        "PERUN_SIM__START": SIM_START,
    }
    cmd = [sys.executable, "-m", "perun_tui.cli", "run", "--headless", "--cycles", "4",
           "--every", "200ms", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("CycleFinished") == 4
    assert "FillReceived" in kinds
    first_cycle = next(e for e in events if e["event"] == "CycleStarted")
    assert first_cycle["cycle"] == 1
    # second run: cycle numbers continue
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    starts = [json.loads(x) for x in proc.stdout.splitlines() if '"CycleStarted"' in x]
    assert [e["cycle"] for e in starts] == [5, 6, 7, 8]


def test_headless_stops_cleanly_when_its_reader_goes_away(tmp_path: Path) -> None:
    """`perun run --headless | head -3`: once the reader closes the pipe nobody is watching,
    so the endless run stops like on Ctrl+C (exit 0, no traceback) instead of trading on."""
    env = {
        **os.environ,
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_LLM__PROVIDER": "rules",
        "PERUN_SIM__START": SIM_START,
    }
    cmd = [sys.executable, "-m", "perun_tui.cli", "run", "--headless", "--every", "100ms"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        first = [proc.stdout.readline() for _ in range(3)]
        assert all(first), first
        proc.stdout.close()  # like `head` exiting
        code = proc.wait(timeout=60)  # a guard against a hang, not a timing assertion
    finally:
        proc.kill()
    stderr = proc.stderr.read()
    assert code == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


async def test_sim_time_carries_on_across_restarts(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    first = [e for e in await run_cycles(settings, 2) if isinstance(e, CycleFinished)]
    second = [e for e in await run_cycles(settings, 2) if isinstance(e, CycleFinished)]
    times = [e.report.started_at for e in first + second]
    assert times == sorted(times) and len(set(times)) == 4, times
    assert times[0].date().isoformat() == SIM_START


async def test_pending_signals_keep_their_ttl_across_a_restart(tmp_path: Path) -> None:
    """With the default TTL (one cycle), the last cycle's pending signals must survive a
    restart: sim time carries on from where it stood, it does not jump ahead."""
    settings = settings_for(tmp_path)
    assert settings.approval.ttl_minutes == settings.trading.frequency_minutes
    events = await run_cycles(settings, 4)
    last_cycle = max(e.report.cycle for e in events if isinstance(e, CycleFinished))
    pending = {
        e.signal.id for e in events
        if isinstance(e, SignalChanged) and e.transition.new is SignalStatus.PENDING
        and e.signal.cycle == last_cycle
    }
    assert pending, "the last cycle should leave something pending"
    runtime = await build_runtime(settings, every_s=30, quote_interval_s=0.05)
    task = asyncio.create_task(runtime.daemon.run())
    try:
        for _ in range(200):
            if runtime.daemon.execution.ready and runtime.daemon.cycles_run:
                break
            await asyncio.sleep(0.02)
        # kept their TTL: still pending, or replaced by the newer idea on their symbol
        assert set((await waiting_fate(runtime.memory, pending)).values()) <= {
            "pending", "superseded"
        }
    finally:
        await runtime.daemon.stop()
        await task
        await runtime.close()
