"""Start-up checks after order reconciliation: positions, and the broker's notices.

Reconciliation (``ExecutionService.reconcile``) matches orders by client order id. A
position can still differ from what Perun knows — shares bought in the broker's own app,
a corporate action, fills Perun never heard of — so the broker's positions are compared
per symbol with what this mode's database implies: the positions of its last snapshot
plus the fills recorded after it. Differences are warnings on the log; the broker's
numbers are the ones used (Perun reads positions from the broker every cycle).

Brokers that raise notices (``set_notice_sink``: Alpaca's stream outages, clock and
calendar disagreements) have them forwarded to the log here too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from perun_tui.brokers.base import Broker, BrokerError
from perun_tui.bus import EventBus
from perun_tui.events import Level, LogEvent
from perun_tui.models import Position, Side
from perun_tui.services.memory import Memory

__all__ = [
    "ExpectedPositions",
    "PositionDifference",
    "compare_positions",
    "expected_positions",
    "forward_broker_notices",
    "startup_checks",
]

_SOURCE = "reconcile"
_TOLERANCE = 1e-6  # fractional shares are kept to 9 decimals


@dataclass(frozen=True, slots=True)
class PositionDifference:
    symbol: str
    broker: float
    expected: float

    def describe(self) -> str:
        return (
            f"{self.symbol}: broker {self.broker:g}, Perun expected {self.expected:g} — "
            "trusting the broker"
        )


@dataclass(frozen=True, slots=True)
class ExpectedPositions:
    """What this database implies per symbol. ``at_snapshot``: fills stamped exactly at
    the snapshot's time, which may or may not be in its positions (frozen clocks)."""

    qty: dict[str, float]
    at_snapshot: dict[str, float]


async def expected_positions(memory: Memory) -> ExpectedPositions | None:
    """Positions per symbol as this database knows them: the last snapshot's, plus the
    fills recorded after it. None when there is no snapshot yet (nothing to expect)."""
    snapshot = await memory.last_snapshot()
    if snapshot is None:
        return None
    expected = {p.symbol: p.qty for p in snapshot.positions}
    boundary: dict[str, float] = {}
    for fill in await memory.fills(since=snapshot.at):
        signed = fill.qty if fill.side is Side.BUY else -fill.qty
        into = boundary if fill.ts <= snapshot.at else expected
        into[fill.symbol] = round(into.get(fill.symbol, 0.0) + signed, 9)
    return ExpectedPositions(expected, boundary)


def compare_positions(
    broker: Iterable[Position], expected: ExpectedPositions | Mapping[str, float]
) -> list[PositionDifference]:
    """Every symbol whose quantity at the broker is not what was expected, by symbol."""
    if not isinstance(expected, ExpectedPositions):
        expected = ExpectedPositions(dict(expected), {})
    held = {p.symbol: p.qty for p in broker}
    out = []
    for symbol in sorted(set(held) | set(expected.qty) | set(expected.at_snapshot)):
        theirs, ours = held.get(symbol, 0.0), expected.qty.get(symbol, 0.0)
        candidates = (ours, ours + expected.at_snapshot.get(symbol, 0.0))
        if all(abs(theirs - c) > _TOLERANCE for c in candidates):
            out.append(PositionDifference(symbol, theirs, ours))
    return out


async def check_positions(broker: Broker, memory: Memory, bus: EventBus) -> list[
    PositionDifference
]:
    """Compare and say so on the log; the differences found (empty when none)."""

    def say(level: Level, message: str) -> None:
        bus.publish(LogEvent(level=level, message=message, source=_SOURCE))

    expected = await expected_positions(memory)
    if expected is None:
        return []  # a first run in this mode: the broker's positions are the start
    try:
        positions = await broker.positions()
    except BrokerError as exc:
        say(Level.WARNING, f"positions could not be compared with the broker's: {exc}")
        return []
    differences = compare_positions(positions, expected)
    for difference in differences:
        say(Level.WARNING, difference.describe())
    return differences


def forward_broker_notices(broker: Broker, bus: EventBus) -> None:
    """Send the broker's notices (if it has any) to the log, those kept so far first."""
    set_sink = getattr(broker, "set_notice_sink", None)
    if set_sink is None:
        return

    def sink(level: int, message: str) -> None:
        bus.publish(
            LogEvent(
                level=Level.WARNING if level >= logging.WARNING else Level.INFO,
                message=message,
                source="broker",
            )
        )

    set_sink(sink)


async def startup_checks(broker: Broker, memory: Memory, bus: EventBus) -> None:
    """After reconciliation: the broker's notices to the log, then the positions."""
    forward_broker_notices(broker, bus)
    await check_positions(broker, memory, bus)
