"""Orders Perun cannot see right now: the start-up gate and the per-cycle REST checks.

* Reconciliation gate: an order left ``intent`` or ``unknown`` by a crash or a stop is
  looked up by client order id before anything is submitted. While the broker cannot
  answer that lookup, nothing is submitted (each cycle fails visibly and retries with
  backoff); once it answers, the order is settled and trading starts.
* A dead order-update stream: fills still reach the database, because every open order
  is re-read over REST each cycle (and an order whose fills are missing gets them
  recorded once).

Both against the sim exchange in-process (faults injected by wrapping one broker method)
and against the loopback Alpaca server with the real alpaca-py client, through the CLI.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from perun_tui.brokers.base import BrokerRetryable
from perun_tui.bus import EventBus
from perun_tui.events import ErrorRaised, Event, FillReceived, LogEvent
from perun_tui.llm.base import ProposedSignal
from perun_tui.models import (
    Action,
    Fill,
    Order,
    OrderStatus,
    OrderUpdate,
    Side,
    SignalStatus,
)
from perun_tui.runtime import build_runtime
from perun_tui.services.execution import ExecutionService
from perun_tui.services.memory import Memory
from perun_tui.services.risk import RiskPolicy
from tests.faults.child import CRASH_ENV, CRASH_EXIT
from tests.faults.harness import PaperBackend, Series, read_db, trader_ollama
from tests.integration.test_crash_safety import BUY_AAPL, ScriptedAnalyst, _sim_settings

BUY_MSFT = ProposedSignal(symbol="MSFT", action=Action.BUY, confidence=0.9, rationale="test")
NOT_FINISHED = "reconciliation is not finished"


async def _until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def _leave_an_unknown_order(settings_: Any) -> str:
    """A run stopped while its order call hung (the request never got through)."""
    runtime = await build_runtime(settings_, every_s=3600, max_cycles=None)
    runtime.daemon.analysis.primary = ScriptedAnalyst(BUY_AAPL)
    reached = asyncio.Event()

    async def submit_and_hang(request: Any) -> Any:
        reached.set()
        await asyncio.Event().wait()

    runtime.broker.submit = submit_and_hang  # type: ignore[method-assign]
    task = asyncio.create_task(runtime.daemon.run())
    try:
        await asyncio.wait_for(reached.wait(), 30)
        await runtime.daemon.stop()
        await asyncio.wait_for(task, 10)
        (order,) = await runtime.memory.orders()
        return order.client_order_id
    finally:
        await runtime.close()


async def test_nothing_is_submitted_until_every_open_order_is_checked(tmp_path: Path) -> None:
    settings_ = _sim_settings(tmp_path)
    cid = await _leave_an_unknown_order(settings_)

    runtime = await build_runtime(settings_, every_s=0.01, quote_interval_s=0.05)
    daemon = runtime.daemon
    daemon.analysis.primary = ScriptedAnalyst(BUY_MSFT)
    sub = runtime.bus.subscribe(ErrorRaised, LogEvent)
    seen: list[Event] = []
    down = True
    sent: list[str] = []
    real_lookup, real_submit = runtime.broker.order_by_client_id, runtime.broker.submit

    async def lookup(client_order_id: str) -> Any:
        if down:
            raise BrokerRetryable("lookup: connection refused (test)")
        return await real_lookup(client_order_id)

    async def submit(request: Any) -> Any:
        sent.append(request.client_order_id)
        return await real_submit(request)

    runtime.broker.order_by_client_id = lookup  # type: ignore[method-assign]
    runtime.broker.submit = submit  # type: ignore[method-assign]
    task = asyncio.create_task(daemon.run())

    async def gated_cycles() -> int:
        seen.extend(sub.drain())
        return sum(
            1 for e in seen if isinstance(e, ErrorRaised) and NOT_FINISHED in e.message
        ) >= 2

    try:
        await _until(gated_cycles, 60, "no cycle said reconciliation was not finished")
        warnings = [
            e.message for e in seen if isinstance(e, LogEvent) and e.level.value == "warning"
        ]
        assert any(f"could not check AAPL {cid}" in w for w in warnings), warnings
        assert not daemon.execution.ready
        assert sent == [], "submitted before every open order was checked"
        order = await runtime.memory.get_order(cid)
        assert order is not None and order.status is OrderStatus.UNKNOWN

        down = False  # the broker answers again: the order is settled, trading begins

        async def trading() -> bool:
            return bool(sent)

        await _until(trading, 60, "no order after the broker answered")
        order = await runtime.memory.get_order(cid)
        assert order is not None and order.status is OrderStatus.FAILED  # never placed
        assert cid not in sent  # looked up, never sent again
        assert daemon.execution.ready
    finally:
        await daemon.stop()
        await asyncio.wait_for(task, 30)
        await runtime.close()


async def test_fills_are_recorded_while_the_update_stream_is_dead(tmp_path: Path) -> None:
    settings_ = _sim_settings(tmp_path)
    runtime = await build_runtime(settings_, every_s=0.01, quote_interval_s=0.05)
    daemon = runtime.daemon
    daemon.analysis.primary = ScriptedAnalyst(BUY_AAPL)

    async def dead_stream() -> AsyncIterator[OrderUpdate]:
        await asyncio.Event().wait()  # connected, and never a word
        yield  # type: ignore[misc]  # pragma: no cover

    runtime.broker.order_updates = dead_stream  # type: ignore[method-assign]
    task = asyncio.create_task(daemon.run())
    memory = runtime.memory

    async def filled_and_recorded() -> bool:
        orders = await memory.orders()
        if not orders:
            return False
        for order in orders:
            fills = await memory.fills(client_order_id=order.client_order_id)
            if order.status is not OrderStatus.FILLED or abs(
                sum(f.qty for f in fills) - order.filled_qty
            ) > 1e-9:
                return False
        return True

    try:
        await _until(filled_and_recorded, 60, "fills never recorded without the stream")
        order = (await memory.orders())[-1]
        signal_ = await memory.get_signal(order.signal_id or "")
        assert signal_ is not None and signal_.status is SignalStatus.FILLED
    finally:
        await daemon.stop()
        await asyncio.wait_for(task, 30)
        await runtime.close()


class _QuietBroker:
    """Knows no open orders: reconciliation only records the fills missing locally."""

    async def open_orders(self) -> list[Any]:
        return []

    async def order_by_client_id(self, client_order_id: str) -> Any:
        return None


async def test_a_fill_gap_is_recorded_once_at_the_price_that_makes_the_average(
    tmp_path: Path,
) -> None:
    """The broker says 10 filled at 103 on average; 4 @ 100 were stored before a crash.
    The 6 nobody reported are recorded once, at 105 (4 × 100 + 6 × 105 = 10 × 103)."""
    at = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    settings_ = _sim_settings(tmp_path)
    bus = EventBus()
    sub = bus.subscribe(FillReceived, coalesce=False)
    async with await Memory.open(tmp_path / "perun.db") as memory:
        order = Order(
            client_order_id="c1", symbol="AAPL", side=Side.BUY, qty=10,
            status=OrderStatus.FILLED, broker_order_id="b1", filled_qty=10,
            filled_avg_price=103, created_at=at, updated_at=at + timedelta(seconds=5),
        )
        await memory.save_order(order)
        await memory.save_fill(Fill(fill_id="f1", client_order_id="c1", symbol="AAPL",
                                    side=Side.BUY, qty=4, price=100, ts=at))
        execution = ExecutionService(
            settings=settings_, broker=_QuietBroker(), memory=memory,  # type: ignore[arg-type]
            bus=bus, policy=RiskPolicy(settings_.risk), now=lambda: at + timedelta(minutes=1),
        )
        await execution.reconcile()
        await execution.reconcile()  # the same gap seen again: stored once
        fills = await memory.fills(client_order_id="c1")
        assert await memory.orders_missing_fills() == []
    gap = next(f for f in fills if f.fill_id != "f1")
    assert len(fills) == 2
    assert (gap.fill_id, gap.qty, gap.price) == ("gap:b1:10", 6, 105)
    assert gap.ts == at + timedelta(seconds=5)  # when the broker last touched the order
    assert [e.fill.fill_id for e in sub.drain()] == ["gap:b1:10"]


# --------------------------------------------------------------------------- Alpaca, real SDK


def _warned(event: dict[str, Any] | None, *words: str) -> bool:
    return bool(event) and event.get("event") == "LogEvent" and all(  # type: ignore[union-attr]
        w in str(event.get("message")) for w in words  # type: ignore[union-attr]
    )


@pytest.mark.timeout(180)
def test_alpaca_intent_left_by_a_crash_gates_trading_until_it_is_checked(
    tmp_path: Path,
) -> None:
    backend = PaperBackend(31)
    fake = backend.fake
    try:
        with trader_ollama(31) as ollama:
            series = Series(
                backend, ollama, tmp_path, seed=31, extra_env={"PERUN_APPROVAL__MODE": "auto"}
            )
            # a crash right after an intent was committed, before the broker call
            crashed = series.start(env={CRASH_ENV: "intent:1"})
            assert crashed.finish(60) == CRASH_EXIT, crashed.stderr[-5:]
            intents = [
                cid for cid, row in read_db(series.db_path)["orders"].items()
                if row["status"] == "intent"
            ]
            assert len(intents) == 1
            cid = intents[0]
            posts = len(fake.requests("POST", "/v2/orders"))

            fake.faults.add("/v2/orders:by_client_order_id", "500", count=None)
            child = series.start()
            assert child.wait_for(
                lambda ls: sum(
                    1 for ln in ls if ln.event and ln.event.get("event") == "ErrorRaised"
                    and NOT_FINISHED in str(ln.event.get("message"))
                ) >= 2,
                60,
            ), child.output()[-3000:]
            assert any(_warned(e, "could not check", cid) for e in child.events("LogEvent"))
            assert len(fake.requests("POST", "/v2/orders")) == posts, "submitted while gated"

            fake.faults.clear()
            deadline = time.monotonic() + 60
            while len(fake.requests("POST", "/v2/orders")) == posts:
                assert time.monotonic() < deadline, "no order after the broker answered"
                time.sleep(0.05)
            child.send(signal.SIGTERM)
            assert child.finish(30) == 0
            db = read_db(series.db_path)
            assert db["orders"][cid]["status"] == "failed"  # never reached the broker
            assert fake.submit_attempts[cid] == 0
            series.check(child, after="the gate opened", graceful=True)
            assert series.tally.ok, json.dumps(series.tally.details(), indent=1)
    finally:
        backend.close()


@pytest.mark.timeout(180)
def test_alpaca_fills_reach_the_database_while_the_stream_is_down(tmp_path: Path) -> None:
    backend = PaperBackend(41, fill_delay=0.3)
    fake = backend.fake
    try:
        with trader_ollama(41) as ollama:
            series = Series(
                backend, ollama, tmp_path, seed=41, extra_env={"PERUN_APPROVAL__MODE": "auto"}
            )
            child = series.start()
            assert child.wait_events("CycleFinished", 1, 60), child.output()[-2000:]
            assert fake.wait_listening(1, 10)
            fake.stream_reject_auth = True  # it reconnects, and is turned away every time
            fake.drop_streams()
            posts = len(fake.requests("POST", "/v2/orders"))
            deadline = time.monotonic() + 60
            while len(fake.requests("POST", "/v2/orders")) < posts + 3:
                assert time.monotonic() < deadline, "no orders after the stream went down"
                time.sleep(0.05)
            after = {
                str(r.json["client_order_id"])
                for r in fake.requests("POST", "/v2/orders")[posts:]
            }
            assert fake.listening_count() == 0

            def recorded() -> bool:
                db = read_db(series.db_path)
                at_fake = fake.orders_by_client_id()
                return all(
                    cid in db["orders"]
                    and db["orders"][cid]["status"] == at_fake[cid][-1]["status"] == "filled"
                    and abs(
                        float(db["filled_by_order"].get(cid) or 0)
                        - db["orders"][cid]["filled_qty"]
                    ) < 1e-9
                    for cid in after if cid in at_fake
                )

            deadline = time.monotonic() + 60
            while not recorded():
                assert time.monotonic() < deadline, "fills not recorded without the stream"
                time.sleep(0.2)
            assert fake.listening_count() == 0  # still down: REST did it
            child.send(signal.SIGTERM)
            assert child.finish(30) == 0
            series.check(child, after="stream down", graceful=True)
            assert series.tally.ok, json.dumps(series.tally.details(), indent=1)
    finally:
        backend.close()
