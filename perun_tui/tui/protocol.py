"""What the TUI needs from the orchestration daemon, written down as a Protocol.

The TUI talks to the daemon in exactly two ways: it reads the event bus (through the
bridge) and it calls these plain async methods for commands. Keeping the contract here
lets tests drive the whole screen with a small fake, and mypy checks that the real
``OrchestrationDaemon`` still fits.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from perun_tui.bus import EventBus
from perun_tui.config import Settings
from perun_tui.events import DaemonState
from perun_tui.models import Quote, Signal, SignalTransition


class SignalDetailsLike(Protocol):
    """The parts of ``SignalDetails`` the details modal shows."""

    @property
    def signal(self) -> Signal: ...

    @property
    def transitions(self) -> list[SignalTransition]: ...

    @property
    def quote(self) -> Quote | None: ...


@runtime_checkable
class NowSource(Protocol):
    def now(self) -> datetime: ...


class DaemonAPI(Protocol):
    @property
    def bus(self) -> EventBus: ...

    @property
    def state(self) -> DaemonState: ...

    @property
    def settings(self) -> Settings: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...

    async def approve(self, signal_id: str) -> str: ...

    async def reject(self, signal_id: str, reason: str = ...) -> str: ...

    def run_now(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    async def halt(self, reason: str) -> Any: ...

    async def clear_halt(self) -> Any: ...

    def pending_signals(self) -> list[Signal]: ...

    async def signal_details(self, signal_id: str) -> Any: ...


if TYPE_CHECKING:  # a static check that the real daemon still fits the contract
    from perun_tui.daemon import OrchestrationDaemon

    def _fits(daemon: OrchestrationDaemon) -> DaemonAPI:
        return daemon
