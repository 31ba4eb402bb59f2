"""EventBus: one publisher side, a private queue per subscriber.

``publish()`` never blocks and never awaits: it appends to each subscriber's queue and
wakes it. State events with the same ``coalesce_key`` that a subscriber has not consumed
yet are merged in place (keeping their position in the queue), so a subscriber that
falls behind sees fewer, newer state events; record events are always delivered, in
order. Publishing from another thread is allowed: it is marshalled onto the bus's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

from perun_tui.events import Event

E = TypeVar("E", bound=Event)


class _Slot:
    __slots__ = ("event", "key")

    def __init__(self, event: Event, key: object | None) -> None:
        self.event = event
        self.key = key


class Subscription(Generic[E]):
    """A subscriber's queue. Iterate it with ``async for`` or drain with ``drain()``."""

    def __init__(
        self, bus: EventBus, types: tuple[type[Event], ...] | None, coalesce: bool
    ) -> None:
        self._bus = bus
        self._types = types
        self._coalesce = coalesce
        self._queue: deque[_Slot] = deque()
        self._by_key: dict[object, _Slot] = {}
        self._wakeup = asyncio.Event()
        self._closed = False
        self.delivered = 0
        self.merged = 0

    def wants(self, event: Event) -> bool:
        return self._types is None or isinstance(event, self._types)

    def _put(self, event: Event) -> None:
        if self._closed:
            return
        key = event.coalesce_key() if self._coalesce else None
        if key is not None:
            slot = self._by_key.get(key)
            if slot is not None:
                slot.event = slot.event.merge(event)
                self.merged += 1
                return
            slot = _Slot(event, key)
            self._by_key[key] = slot
        else:
            slot = _Slot(event, None)
        self._queue.append(slot)
        self._wakeup.set()

    def _pop(self) -> Event:
        slot = self._queue.popleft()
        if slot.key is not None and self._by_key.get(slot.key) is slot:
            del self._by_key[slot.key]
        self.delivered += 1
        return slot.event

    def __len__(self) -> int:
        return len(self._queue)

    def drain(self, limit: int | None = None) -> list[E]:
        """Everything queued right now (up to ``limit``), without waiting."""
        out: list[E] = []
        while self._queue and (limit is None or len(out) < limit):
            out.append(self._pop())  # type: ignore[arg-type]
        if not self._queue:
            self._wakeup.clear()
        return out

    async def get(self) -> E:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._pop()  # type: ignore[return-value]

    async def wait(self) -> None:
        """Wait until at least one event is queued (or the subscription closes)."""
        while not self._queue and not self._closed:
            self._wakeup.clear()
            await self._wakeup.wait()

    def __aiter__(self) -> AsyncIterator[E]:
        return self

    async def __anext__(self) -> E:
        return await self.get()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._bus._remove(self)
        self._wakeup.set()


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscription[Event]] = []
        self._listeners: list[tuple[tuple[type[Event], ...] | None, Callable[[Event], None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.published = 0

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def subscribe(self, *types: type[E], coalesce: bool = True) -> Subscription[E]:
        """A new queue receiving the given event types (all events when none given)."""
        if self._loop is None:
            with contextlib.suppress(RuntimeError):
                self.bind_loop()
        sub: Subscription[E] = Subscription(self, tuple(types) or None, coalesce)
        self._subs.append(sub)  # type: ignore[arg-type]
        return sub

    def listen(self, callback: Callable[[Event], None], *types: type[Event]) -> None:
        """A synchronous listener called inline on publish. Keep it tiny and non-blocking:
        it is meant for counters and loggers, not for work."""
        self._listeners.append((tuple(types) or None, callback))

    def _remove(self, sub: Subscription[E]) -> None:
        if sub in self._subs:
            self._subs.remove(sub)  # type: ignore[arg-type]

    def publish(self, event: Event) -> None:
        if (
            self._loop is not None
            and self._loop_thread is not None
            and threading.get_ident() != self._loop_thread
        ):
            self._loop.call_soon_threadsafe(self._deliver, event)
            return
        self._deliver(event)

    def _deliver(self, event: Event) -> None:
        self.published += 1
        for types, callback in self._listeners:
            if types is None or isinstance(event, types):
                callback(event)
        for sub in self._subs:
            if sub.wants(event):
                sub._put(event)
