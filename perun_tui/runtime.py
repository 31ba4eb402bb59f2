"""Wiring: build the services for a mode from settings. Used by the TUI, the headless
runner, tests and benchmarks alike, so they all run the same daemon."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from perun_tui.brokers.base import Broker
from perun_tui.bus import EventBus
from perun_tui.config import Settings
from perun_tui.daemon import SIM_TIME_KEY, OrchestrationDaemon
from perun_tui.llm.base import Analyst
from perun_tui.llm.rules import RulesAnalyst
from perun_tui.market_hours import (
    EXCHANGE_TZ,
    Clock,
    SimClock,
    TradingCalendar,
    WallClock,
    default_calendar,
)
from perun_tui.redact import register_secrets
from perun_tui.services.ai import AnalysisService
from perun_tui.services.instance_lock import InstanceLock
from perun_tui.services.memory import Memory
from perun_tui.services.notification import NotificationService, build_notification_service
from perun_tui.services.optimization import DailySummary, Optimizer
from perun_tui.services.risk import RiskPolicy


@dataclass
class Runtime:
    settings: Settings
    bus: EventBus
    memory: Memory
    broker: Broker
    clock: Clock
    calendar: TradingCalendar
    daemon: OrchestrationDaemon
    notifications: NotificationService
    optimizer: Optimizer
    summary: DailySummary
    instance_lock: InstanceLock | None = None  # one trading Perun per database

    async def close(self) -> None:
        # summaries and queued notifications first: they read memory and need the loop
        with contextlib.suppress(Exception):
            await self.summary.wait()
        await self.optimizer.aclose()
        await self.notifications.aclose()
        with contextlib.suppress(Exception):
            await self.broker.close()
        try:
            await self.memory.close()
        finally:
            if self.instance_lock is not None:
                self.instance_lock.release()


def build_broker(
    settings: Settings, clock: Clock, calendar: TradingCalendar, memory: Memory
) -> Broker:
    if settings.trading.mode == "sim":
        from perun_tui.brokers.sim import SimBroker

        return SimBroker(
            settings.trading.symbols,
            clock,
            calendar,
            seed=settings.sim.seed,
            starting_cash=settings.sim.starting_cash,
            store=memory,
        )
    from perun_tui.brokers.alpaca import AlpacaBroker

    return AlpacaBroker(settings, calendar=calendar)


def build_analyst(settings: Settings) -> tuple[Analyst, Analyst | None]:
    if settings.llm.provider == "rules":
        return RulesAnalyst(), None
    from perun_tui.llm.ollama import OllamaAnalyst

    fallback: Analyst | None = RulesAnalyst() if settings.llm.fallback == "rules" else None
    return OllamaAnalyst(settings.llm), fallback


async def sim_clock(settings: Settings, calendar: TradingCalendar, memory: Memory) -> SimClock:
    """The simulated clock: at ``sim.start`` (or the latest session's open), or, when this
    database has run before, where its simulated time stood when it stopped (saved by the
    daemon; at least its last cycle) — sim time never goes back, so pending signals keep
    the TTL they had left."""
    start = None
    if (day := settings.sim.start_date) is not None:
        start = calendar.clamp_to_session(dt.datetime.combine(day, dt.time(), EXCHANGE_TZ))
    seen = [c.started_at for c in await memory.cycles(limit=1)]
    if saved := await memory.get_state(SIM_TIME_KEY):
        seen.append(dt.datetime.fromisoformat(saved))
    return SimClock(calendar, speed=settings.sim.speed, start=start, resume=max(seen, default=None))


async def build_runtime(
    settings: Settings,
    *,
    every_s: float | None = None,
    max_cycles: int | None = None,
    clock: Clock | None = None,
    bus: EventBus | None = None,
    quote_interval_s: float | None = None,
) -> Runtime:
    register_secrets(settings.secret_values())
    bus = bus or EventBus()
    calendar = default_calendar()
    if quote_interval_s is None:
        # the sim costs nothing per quote; Alpaca allows ~200 requests/min per account
        quote_interval_s = 1.0 if settings.trading.mode == "sim" else 5.0
    if settings.trading.mode != "sim":
        # keys missing, or refused for this mode: ConfigError (exit 2) before the
        # database is opened or anything is written
        from perun_tui.brokers.alpaca import check_keys

        await check_keys(settings)
    # one trading Perun per database, taken before anything is read (AlreadyRunning)
    instance_lock = InstanceLock.acquire(settings.database_path())
    try:
        memory = await Memory.open(settings.database_path())
    except BaseException:
        instance_lock.release()
        raise
    try:
        if clock is None:
            clock = (
                await sim_clock(settings, calendar, memory)
                if settings.trading.mode == "sim"
                else WallClock()
            )
        broker = build_broker(settings, clock, calendar, memory)
        primary, fallback = build_analyst(settings)
    except Exception:
        await memory.close()
        instance_lock.release()
        raise
    notifications = build_notification_service(settings, bus)
    config_path = None if settings.source == "defaults" else Path(settings.source)
    optimizer = Optimizer(memory, settings, notifications, settings_path=config_path)
    summary = DailySummary(memory, notifications, enabled=settings.notify.daily_summary)
    summary.attach(bus)
    daemon = OrchestrationDaemon(
        settings=settings,
        bus=bus,
        broker=broker,
        memory=memory,
        analysis=AnalysisService(settings, bus, primary, fallback),
        policy=RiskPolicy(settings.risk),
        notifications=notifications,
        optimizer=optimizer,
        clock=clock,
        calendar=calendar,
        every_s=every_s,
        max_cycles=max_cycles,
        quote_interval_s=quote_interval_s,
    )
    return Runtime(
        settings=settings,
        bus=bus,
        memory=memory,
        broker=broker,
        clock=clock,
        calendar=calendar,
        daemon=daemon,
        notifications=notifications,
        optimizer=optimizer,
        summary=summary,
        instance_lock=instance_lock,
    )
