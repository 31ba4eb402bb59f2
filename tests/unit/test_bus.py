"""EventBus: non-blocking publish, per-subscriber queues, coalescing, no lost records."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

from perun_tui.bus import EventBus
from perun_tui.events import Level, LogEvent, QuotesUpdated, ReasoningDelta
from perun_tui.models import Quote

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


def quote(sym: str, last: float) -> Quote:
    return Quote(symbol=sym, ts=T0, bid=last - 0.01, ask=last + 0.01, last=last)


async def test_state_events_coalesce_per_symbol_records_never_drop() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    for i in range(1000):
        bus.publish(QuotesUpdated(quotes={"AAPL": quote("AAPL", 100 + i)}))
        bus.publish(QuotesUpdated(quotes={"MSFT": quote("MSFT", 200 + i)}))
        bus.publish(LogEvent(level=Level.INFO, message=f"line {i}"))
    events = sub.drain()
    quotes = [e for e in events if isinstance(e, QuotesUpdated)]
    logs = [e for e in events if isinstance(e, LogEvent)]
    assert len(quotes) == 1
    assert quotes[0].quotes["AAPL"].last == 1099
    assert quotes[0].quotes["MSFT"].last == 1199
    assert [e.message for e in logs] == [f"line {i}" for i in range(1000)]


async def test_reasoning_deltas_merge_in_order() -> None:
    bus = EventBus()
    sub = bus.subscribe(ReasoningDelta)
    for word in ["The ", "trend ", "is ", "up."]:
        bus.publish(ReasoningDelta(cycle=3, text=word))
    bus.publish(ReasoningDelta(cycle=4, text="next"))
    got = sub.drain()
    assert [(e.cycle, e.text) for e in got] == [(3, "The trend is up."), (4, "next")]


async def test_uncoalesced_subscriber_sees_everything() -> None:
    bus = EventBus()
    sub = bus.subscribe(coalesce=False)
    for i in range(10):
        bus.publish(QuotesUpdated(quotes={"AAPL": quote("AAPL", i)}))
    assert len(sub.drain()) == 10


async def test_typed_subscribe_and_async_iteration() -> None:
    bus = EventBus()
    logs = bus.subscribe(LogEvent)
    bus.publish(QuotesUpdated(quotes={}))
    bus.publish(LogEvent(level=Level.WARNING, message="hello"))
    event = await asyncio.wait_for(logs.get(), 1)
    assert isinstance(event, LogEvent) and event.message == "hello"
    assert len(logs) == 0


async def test_publish_from_another_thread_is_marshalled() -> None:
    bus = EventBus()
    bus.bind_loop()
    sub = bus.subscribe(LogEvent)
    thread = threading.Thread(
        target=lambda: [bus.publish(LogEvent(level=Level.INFO, message=str(i))) for i in range(50)]
    )
    thread.start()
    thread.join()
    got: list[LogEvent] = []
    while len(got) < 50:
        got.append(await asyncio.wait_for(sub.get(), 1))
    assert [e.message for e in got] == [str(i) for i in range(50)]


async def test_closed_subscription_stops_receiving() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    sub.close()
    bus.publish(LogEvent(level=Level.INFO, message="x"))
    assert len(sub) == 0


def test_events_render_as_json_and_text() -> None:
    event = QuotesUpdated(quotes={"AAPL": quote("AAPL", 231.42)})
    assert "AAPL 231.42" in event.describe()
    data = event.to_dict()
    assert data["event"] == "QuotesUpdated"
    assert data["quotes"]["AAPL"]["last"] == 231.42
