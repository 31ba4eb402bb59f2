"""A client-side token bucket that keeps Perun under a broker's request budget.

Alpaca allows about 200 requests per minute per account and answers 429 beyond that. A
bucket refilled at ``per_minute / 60`` tokens a second with room for a short burst keeps
any 60-second window at ``burst + per_minute`` requests or fewer, so the default of 150
per minute with a burst of 15 never comes near Alpaca's limit. When the broker says 429
anyway (another program using the same keys), :meth:`TokenBucket.pause` holds every
caller until the broker's reset time instead of letting each one find out on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["TokenBucket", "default_burst"]


def default_burst(per_minute: int) -> int:
    """A burst big enough for one cycle's requests, small next to the per-minute budget."""
    return max(1, min(20, per_minute // 10))


class TokenBucket:
    """Async token bucket; ``acquire()`` waits (FIFO) until a token is available."""

    def __init__(
        self,
        per_minute: int,
        *,
        burst: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if per_minute <= 0:
            raise ValueError(f"per_minute must be > 0, got {per_minute}")
        self.per_minute = per_minute
        self.rate = per_minute / 60.0  # tokens per second
        self.capacity = float(burst if burst is not None else default_burst(per_minute))
        if self.capacity < 1:
            raise ValueError(f"burst must be ≥ 1, got {burst}")
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = self.capacity
        self._stamp = monotonic()
        self._paused_until = 0.0
        self._lock: asyncio.Lock | None = None
        self.waited_s = 0.0  # total time callers spent waiting (for stats and benchmarks)
        self.acquired = 0

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._stamp = now

    def delay(self) -> float:
        """Seconds until the next token would be available (0 when one is ready now)."""
        now = self._monotonic()
        self._refill(now)
        wait = max(0.0, self._paused_until - now)
        if self._tokens < 1.0:
            wait = max(wait, (1.0 - self._tokens) / self.rate)
        return wait

    async def acquire(self) -> float:
        """Take one token, waiting as needed; returns the seconds waited."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        waited = 0.0
        async with self._lock:  # FIFO: callers are served in arrival order
            while True:
                wait = self.delay()
                if wait <= 0:
                    break
                await self._sleep(wait)
                waited += wait
            self._tokens -= 1.0
        self.waited_s += waited
        self.acquired += 1
        return waited

    def pause(self, seconds: float) -> None:
        """Hold all callers for ``seconds`` (the broker said 429) and empty the bucket."""
        if seconds <= 0:
            return
        now = self._monotonic()
        self._refill(now)
        self._paused_until = max(self._paused_until, now + seconds)
        self._tokens = min(self._tokens, 0.0)

    def debit(self, n: int) -> None:
        """Count ``n`` requests that were sent without ``acquire()`` (extra pages of a
        paginated call); later callers wait for them to be paid back."""
        if n <= 0:
            return
        self._refill(self._monotonic())
        self._tokens -= n
