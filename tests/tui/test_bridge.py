"""The bridge: coalescing, ordering, trimming and pacing (no screen needed)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from textual.message import Message

from perun_tui.bus import EventBus
from perun_tui.events import (
    DaemonState,
    DaemonStateChanged,
    ErrorRaised,
    Event,
    Level,
    LogEvent,
    OrderChanged,
    QuotesUpdated,
    ReasoningDelta,
)
from perun_tui.models import Order, OrderStatus, Quote, Side
from perun_tui.tui.bridge import Bridge, OrderLog, fold, log_line_for
from perun_tui.tui.messages import BusBatch

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


def q(symbol: str, last: float) -> QuotesUpdated:
    return QuotesUpdated({symbol: Quote(symbol=symbol, ts=NOW, bid=last, ask=last, last=last)})


def test_fold_merges_state_events_and_keeps_records_in_order() -> None:
    events = [
        q("AAPL", 1.0),
        ErrorRaised("a", "first"),
        q("MSFT", 2.0),
        ReasoningDelta(3, "Hel"),
        q("AAPL", 1.5),
        ReasoningDelta(3, "lo"),
        ErrorRaised("b", "second"),
        DaemonStateChanged(DaemonState.CYCLING),
        DaemonStateChanged(DaemonState.WAITING),
    ]
    frame = fold(events, NOW, max_log_lines=100)
    kinds = [type(e).__name__ for e in frame.events]
    assert kinds == ["QuotesUpdated", "ErrorRaised", "ReasoningDelta", "ErrorRaised",
                     "DaemonStateChanged"]
    quotes = frame.events[0]
    assert isinstance(quotes, QuotesUpdated)
    assert {s: x.last for s, x in quotes.quotes.items()} == {"AAPL": 1.5, "MSFT": 2.0}
    delta = frame.events[2]
    assert isinstance(delta, ReasoningDelta) and delta.text == "Hello"
    state = frame.events[4]
    assert isinstance(state, DaemonStateChanged) and state.state is DaemonState.WAITING
    assert [e.message for e in frame.events if isinstance(e, ErrorRaised)] == ["first", "second"]


def test_fold_sends_log_events_to_the_log_only_and_trims_to_the_newest() -> None:
    events = [LogEvent(Level.INFO, f"line {i}") for i in range(50)]
    frame = fold(events, NOW, max_log_lines=10)
    assert frame.events == []
    assert [line.text for line in frame.logs] == [f"line {i}" for i in range(40, 50)]
    assert frame.skipped_logs == {Level.INFO: 40}


def test_trimming_drops_chatter_first_and_never_a_warning_or_an_error() -> None:
    events: list[Event] = []
    for i in range(100):
        events.append(LogEvent(Level.DEBUG if i % 2 else Level.INFO, f"chatter {i}"))
        if i % 25 == 0:
            events.append(LogEvent(Level.ERROR, f"error {i}"))
            events.append(LogEvent(Level.WARNING, f"warning {i}"))
    frame = fold(events, NOW, max_log_lines=20)
    texts = [line.text for line in frame.logs]
    assert len(texts) == 20
    assert [t for t in texts if t.startswith(("error", "warning"))] == [
        f"{kind} {i}" for i in range(0, 100, 25) for kind in ("error", "warning")
    ]
    assert texts[-1] == "chatter 98"  # the newest info lines fill the rest, in order
    assert frame.skipped_logs == {Level.DEBUG: 50, Level.INFO: 38}


def test_a_repeated_order_update_is_logged_once_and_an_intent_says_no_fill() -> None:
    intent = Order(client_order_id="perun-sim-1", symbol="AAPL", side=Side.BUY, qty=10,
                   status=OrderStatus.NEW, signal_id="s1", created_at=NOW, updated_at=NOW)
    filled = intent.model_copy(update={"status": OrderStatus.FILLED, "filled_qty": 10,
                                       "filled_avg_price": 231.4})
    orders = OrderLog()
    frame = fold([OrderChanged(intent), OrderChanged(filled)], NOW, 100, orders)
    again = fold([OrderChanged(filled.model_copy())], NOW, 100, orders)
    texts = [line.text for line in frame.logs]
    assert texts == [
        "order BUY AAPL 10 new [perun-sim-1]",
        "order BUY AAPL 10 filled @ 231.40 [perun-sim-1]",
    ]
    assert again.logs == []
    assert len(again.events) == 1  # the event itself still reaches the screen


def test_a_halt_repeated_without_its_reason_keeps_it() -> None:
    frame = fold([DaemonStateChanged(DaemonState.HALTED, "daily loss limit"),
                  DaemonStateChanged(DaemonState.HALTED)], NOW, 100)
    [state] = frame.events
    assert isinstance(state, DaemonStateChanged) and state.reason == "daily loss limit"


def test_log_levels_for_record_events() -> None:
    assert log_line_for(ErrorRaised("x", "boom"), NOW).level is Level.ERROR  # type: ignore[union-attr]
    assert log_line_for(q("AAPL", 1.0), NOW) is None
    waiting = log_line_for(DaemonStateChanged(DaemonState.WAITING), NOW)
    halted = log_line_for(DaemonStateChanged(DaemonState.HALTED, "k"), NOW)
    assert waiting is not None and waiting.level is Level.DEBUG
    assert halted is not None and halted.level is Level.WARNING


class _Target:
    """Stands in for the screen: records frames and acknowledges them after a delay."""

    def __init__(self, work_s: float) -> None:
        self.frames: list[BusBatch] = []
        self.work_s = work_s
        self.bridge: Bridge | None = None

    def post_message(self, message: Message) -> bool:
        assert isinstance(message, BusBatch)
        self.frames.append(message)
        loop = asyncio.get_running_loop()
        assert self.bridge is not None
        loop.call_later(self.work_s, self.bridge.ack)
        return True


async def test_a_flood_becomes_few_frames_and_nothing_recorded_is_lost() -> None:
    bus = EventBus()
    target = _Target(work_s=0.0)
    bridge = Bridge(bus, target, lambda: NOW, max_rate_hz=20)  # type: ignore[arg-type]
    target.bridge = bridge
    task = asyncio.create_task(bridge.run())
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(3000):
        bus.publish(q("AAPL", 100 + i * 0.01))
        if i % 100 == 0:
            bus.publish(ErrorRaised("flood", f"record {i}"))
        if i % 300 == 0:
            await asyncio.sleep(0.01)
    async with asyncio.timeout(5):
        await bridge.settled()
    elapsed = loop.time() - start
    task.cancel()
    assert len(target.frames) <= elapsed * 20 + 2
    errors = [e.message for f in target.frames for e in f.events if isinstance(e, ErrorRaised)]
    assert errors == [f"record {i}" for i in range(0, 3000, 100)]
    last = [e for f in target.frames for e in f.events if isinstance(e, QuotesUpdated)][-1]
    assert abs(last.quotes["AAPL"].last - (100 + 2999 * 0.01)) < 1e-9


def test_timestamps_come_from_the_given_clock() -> None:
    line = log_line_for(LogEvent(Level.INFO, "x"), NOW + timedelta(minutes=1))
    assert line is not None and line.at == NOW + timedelta(minutes=1)
