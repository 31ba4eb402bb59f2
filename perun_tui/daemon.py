"""OrchestrationDaemon: the lifecycle and the trading cycle.

States: ``starting → reconciling → waiting ⇄ cycling``, plus ``paused`` (by the user),
``halted`` (kill switch or daily loss limit; persisted until cleared) and
``stopping → stopped``. A failing cycle is recorded, published and retried after a
backoff; the daemon never dies silently.

Commands from the UI are plain async method calls (``approve``, ``reject``, ``pause``,
``resume``, ``run_now``, ``halt``); everything the daemon does is published on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from perun_tui.brokers.base import Broker, BrokerError, BrokerRetryable
from perun_tui.bus import EventBus
from perun_tui.config import Settings
from perun_tui.events import (
    AnalysisStarted,
    CycleFinished,
    CycleStarted,
    DaemonState,
    DaemonStateChanged,
    ErrorRaised,
    Level,
    LogEvent,
    PerformanceUpdated,
    PortfolioUpdated,
    QuotesUpdated,
    ReasoningDelta,
    ScheduleUpdated,
)
from perun_tui.features import compute_features
from perun_tui.llm.base import AnalysisContext, AnalysisResult
from perun_tui.market_hours import (
    EXCHANGE_TZ,
    Clock,
    SimClock,
    TradingCalendar,
    next_cycle_time,
)
from perun_tui.models import (
    Account,
    Action,
    Bar,
    CycleReport,
    MarketClock,
    Order,
    OrderStatus,
    Position,
    Quote,
    Side,
    Signal,
    SignalStatus,
    SignalTransition,
    signal_id_for,
)
from perun_tui.services.ai import AnalysisService
from perun_tui.services.execution import ExecutionService
from perun_tui.services.memory import Memory
from perun_tui.services.notification import NotificationService, fill_message
from perun_tui.services.optimization import Optimizer, compute_metrics
from perun_tui.services.reconcile_positions import startup_checks
from perun_tui.services.risk import RiskInputs, RiskPolicy
from perun_tui.services.scoring import dropped_signals

log = logging.getLogger(__name__)

HALT_KEY = "halted"
INSTANCE_KEY = "instance_id"
LOSS_BASE_KEY = "loss_base"  # the equity a person accepted by clearing a halt, and its day
RESUME_PENDING = '{"pending": true}'  # cleared: the next equity seen becomes the base
SIM_TIME_KEY = "sim_time"  # where simulated time stood: a restart carries on from there
MAX_BACKOFF_S = 300.0
ORDER_GRACE_S = 2.0  # at a stop, how long an order call in flight may take to finish
HALT_POLL_S = 1.0  # how often the shared halt flag (`perun halt` elsewhere) is read


@dataclass
class SignalDetails:
    signal: Signal
    transitions: list[SignalTransition]
    quote_now: Quote | None


class OrchestrationDaemon:
    def __init__(
        self,
        *,
        settings: Settings,
        bus: EventBus,
        broker: Broker,
        memory: Memory,
        analysis: AnalysisService,
        policy: RiskPolicy,
        notifications: NotificationService,
        clock: Clock,
        optimizer: Optimizer | None = None,
        calendar: TradingCalendar,
        every_s: float | None = None,
        max_cycles: int | None = None,
        quote_interval_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.broker = broker
        self.memory = memory
        self.analysis = analysis
        self.policy = policy
        self.notifications = notifications
        self.optimizer = optimizer  # step 10's full analysis; the TUI's `o` screen uses it
        self.clock = clock
        self.calendar = calendar
        self.every_s = every_s
        self.max_cycles = max_cycles
        self.quote_interval_s = quote_interval_s
        self.symbols = list(settings.trading.symbols)
        self._universe = frozenset(self.symbols)
        self.execution = ExecutionService(
            settings=settings,
            broker=broker,
            memory=memory,
            bus=bus,
            policy=policy,
            now=clock.now,
        )
        self.execution.risk_inputs = self._risk_inputs
        self.state = DaemonState.STARTING
        self.cycles_run = 0
        self.current_cycle = 0
        self.halt_reason: str | None = None
        self._paused = False
        self._stopping = False
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._failures = 0
        self._retry_after_s = 0.0  # a 429's Retry-After / X-RateLimit-Reset for the retry
        self._early_retry = False  # retry at once when the broker answers again (per streak)
        self._tasks: list[asyncio.Task[None]] = []
        self._cycle_task: asyncio.Task[CycleReport] | None = None
        self._account: Account | None = None
        self._positions: dict[str, Position] = {}
        self._open_orders: list[Order] = []
        self._quotes: dict[str, Quote] = {}
        self._orders_this_cycle = 0
        self._unknown_symbols: set[str] = set()
        self._instance = ""
        self._market: MarketClock | None = None
        self.next_cycle_at: datetime | None = None
        self._last_trade: dict[str, datetime] = {}
        self._day_start_equity: float | None = None
        # after a halt is cleared the daily loss is measured from the equity at that moment
        # (the person accepted the loss so far), for the rest of that day
        self._resume_base: tuple[date, float] | None = None
        self._resume_pending = False
        self._run_now = False
        self._bars: dict[str, list[Bar]] = {}
        self._halt_lock = asyncio.Lock()  # halt, resume and the shared flag, one at a time

    # ------------------------------------------------------------------ commands

    async def approve(self, signal_id: str) -> str:
        result = await self.execution.approve(signal_id, by="user")
        await self._refresh_portfolio()
        return result

    async def reject(self, signal_id: str, reason: str = "rejected by user") -> str:
        return await self.execution.reject(signal_id, reason=reason)

    def pending_signals(self) -> list[Signal]:
        return sorted(self.execution.pending.values(), key=lambda s: s.created_at)

    def recent_bars(self) -> dict[str, list[Bar]]:
        """The bar window per symbol as of the last cycle (oldest first; empty before the
        first cycle): the screen seeds its sparklines and the previous close from it."""
        return {sym: list(bars) for sym, bars in self._bars.items()}

    async def signal_details(self, signal_id: str) -> SignalDetails | None:
        signal = self.execution.pending.get(signal_id) or await self.memory.get_signal(signal_id)
        if signal is None:
            return None
        transitions = await self.memory.transitions(signal_id)
        quote: Quote | None
        try:
            quote = (await self.broker.latest([signal.symbol])).get(signal.symbol)
        except BrokerError:
            quote = self._quotes.get(signal.symbol)
        return SignalDetails(signal=signal, transitions=transitions, quote_now=quote)

    async def pull_model(self, on_progress: Callable[[str, float | None], None]) -> str:
        """Download the configured Ollama model (``ollama pull``), reporting each step as
        ``(status, fraction or None)``; returns what happened, for the user."""
        return await self.analysis.pull(on_progress)

    def run_now(self) -> None:
        """Run a cycle at once (also while waiting for the schedule)."""
        self._run_now = True
        self._wake.set()

    def pause(self) -> None:
        if self.state in (DaemonState.STOPPING, DaemonState.STOPPED):
            return
        self._paused = True
        if self._cycle_task is not None and not self._cycle_task.done():
            self._cycle_task.cancel()  # cancels an analysis in flight cleanly
        self._set_state(DaemonState.PAUSED, "paused by user")
        self._wake.set()

    def resume(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self.halt_reason:
            self._set_state(DaemonState.HALTED, self.halt_reason)
        else:
            self._set_state(DaemonState.WAITING)
        self._wake.set()

    async def halt(self, reason: str = "kill switch") -> None:
        """Stop all trading until cleared; persisted across restarts."""
        async with self._halt_lock:
            await self._halt(reason)

    async def _halt(self, reason: str) -> None:
        self.halt_reason = reason
        self.execution.halted = True
        await self.memory.set_state(HALT_KEY, reason)
        cycle = self._cycle_task
        if cycle is not None and not cycle.done() and cycle is not asyncio.current_task():
            # (from inside the cycle, e.g. the loss limit, the cycle returns by itself:
            # cancelling it here would also cancel the rest of this method)
            cycle.cancel()
        self._set_state(DaemonState.HALTED, reason)
        await self.notifications.notify("Halted", reason, Level.ERROR, "halt")
        if self.settings.risk.cancel_on_halt:
            await self._cancel_open_orders()

    async def clear_halt(self) -> None:
        async with self._halt_lock:
            await self._clear_halt()

    async def _clear_halt(self) -> None:
        self.halt_reason = None
        self.execution.halted = False
        await self.memory.set_state(HALT_KEY, None)
        await self.memory.set_state(LOSS_BASE_KEY, RESUME_PENDING)
        self._resume_pending = True
        self._set_state(DaemonState.PAUSED if self._paused else DaemonState.WAITING, "halt cleared")
        self._log(Level.INFO, "halt cleared: trading resumes")
        self._wake.set()

    async def stop(self) -> None:
        """Graceful stop: let an order call in flight finish, flush, close."""
        self._stopping = True
        self._wake.set()
        if self._cycle_task is not None and not self._cycle_task.done():
            # an analysis may be cancelled at once; an order call in flight (it holds the
            # execution lock) gets ORDER_GRACE_S to finish, then it is cancelled too: the
            # order is then marked unknown-outcome and looked up by client order id later
            lock = self.execution._lock
            acquired = False
            with contextlib.suppress(asyncio.TimeoutError):
                acquired = await asyncio.wait_for(lock.acquire(), ORDER_GRACE_S)
            try:
                if self._cycle_task is not None:
                    self._cycle_task.cancel()
            finally:
                if acquired:
                    lock.release()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), timeout=10)

    # ------------------------------------------------------------------ lifecycle

    def _set_state(self, state: DaemonState, reason: str = "") -> None:
        self.state = state
        self.bus.publish(DaemonStateChanged(state=state, reason=reason))

    def _log(self, level: Level, message: str) -> None:
        self.bus.publish(LogEvent(level=level, message=message, source="daemon"))

    def _error(self, where: str, message: str, detail: str = "") -> None:
        self.bus.publish(ErrorRaised(where=where, message=message, detail=detail))

    async def run(self) -> None:
        """Run until ``stop()`` (or ``max_cycles``)."""
        self.bus.bind_loop()
        self._run_now = False
        self._set_state(DaemonState.STARTING)
        try:
            await self._startup()
            first = True
            while not self._stopping:
                if not first:
                    await self._wait_for_next_cycle()
                first = False
                if self._stopping:
                    break
                if self._paused:
                    continue
                if self.halt_reason:
                    # halted: the slot passes without a cycle (no cycle row, no
                    # halted→cycling→halted flicker); it still counts for max_cycles
                    self.cycles_run += 1
                else:
                    await self._run_cycle_guarded()
                if self.max_cycles is not None and self.cycles_run >= self.max_cycles:
                    break
        finally:
            await self._shutdown()

    async def _startup(self) -> None:
        await asyncio.to_thread(self.calendar.warm)
        instance = await self.memory.get_state(INSTANCE_KEY)
        if instance is None:
            instance = secrets.token_hex(4)
            await self.memory.set_state(INSTANCE_KEY, instance)
        self._instance = instance
        await self.broker.start()
        self._set_state(DaemonState.RECONCILING)
        restored = await self.execution.restore_pending()
        if restored:
            self._log(Level.INFO, f"restored {len(restored)} pending signal(s)")
        for note in await self.execution.reconcile():
            self._log(Level.INFO, f"reconcile: {note}")
        await startup_checks(self.broker, self.memory, self.bus)  # positions, broker notices
        await self.analysis.choose()
        if self.optimizer is not None:
            self.optimizer.kick()  # in the background: track records from the first cycles on
        await self._load_loss_base()
        halt = await self.memory.get_state(HALT_KEY)
        if halt:
            self.halt_reason = halt
            self.execution.halted = True
            self._set_state(DaemonState.HALTED, halt)
            self._log(Level.WARNING, f"halted since last run: {halt} — clear it to trade")
            if self.settings.risk.cancel_on_halt:
                await self._cancel_open_orders()
        else:
            self._set_state(DaemonState.WAITING)
        await self._refresh_portfolio()
        self._tasks = [
            asyncio.create_task(self._order_updates_loop(), name="perun-order-updates"),
            asyncio.create_task(self._housekeeping_loop(), name="perun-housekeeping"),
            asyncio.create_task(self._halt_watch_loop(), name="perun-halt-watch"),
        ]

    async def _shutdown(self) -> None:
        self._set_state(DaemonState.STOPPING)
        updates, others = self._tasks[:1], self._tasks[1:]
        for task in others:
            task.cancel()
        with contextlib.suppress(Exception):
            await self.broker.close()
        # closing the broker ends its update stream once what is queued is applied,
        # so fills that arrived just before the stop are not lost
        if updates:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(updates[0], timeout=3)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.analysis.close()
        with contextlib.suppress(Exception):
            await self._save_sim_time()
        self._set_state(DaemonState.STOPPED)
        self._stopped.set()

    async def _wait_for_next_cycle(self) -> None:
        """Until the next cycle is due: the next aligned slot (``--every``: that many real
        seconds), a retry after a failed cycle's backoff, or ``run_now``. Other wake-ups
        (pause, resume, halt) only refresh the schedule; they do not run a cycle."""
        while not self._stopping:
            slept, slot = await self._sleep_for_next_cycle()
            if self._run_now:
                self._run_now = False
                return
            if slept:
                if slot is not None and self.every_s is not None and isinstance(
                    self.clock, SimClock
                ):
                    # --every: the simulated clock jumps to the scheduled time, so each
                    # cycle still sees a full interval of market
                    self.clock.advance_to(slot)
                return

    async def _sleep_for_next_cycle(self) -> tuple[bool, datetime | None]:
        """Sleep until due or woken; returns (slept the full wait, the slot waited for —
        None for a retry)."""
        now = self.clock.now()
        slot = next_cycle_time(now, self.settings.trading.frequency_minutes)
        real_s: float | None = None  # None: sleep on the clock until the slot
        retry = bool(self._failures)
        if retry:
            # a failed cycle is retried after its backoff, not at the next slot
            real_s = self._backoff_s()
            speed = self.clock.speed if isinstance(self.clock, SimClock) else 1.0
            self.next_cycle_at = now + timedelta(seconds=real_s * speed)
        elif self.every_s is not None:
            real_s = self.every_s
            self.next_cycle_at = (
                slot if isinstance(self.clock, SimClock) else now + timedelta(seconds=real_s)
            )
        else:
            self.next_cycle_at = slot
        self.bus.publish(
            ScheduleUpdated(next_cycle_at=self.next_cycle_at, now=now, market=self._market)
        )
        if self.state is DaemonState.CYCLING:
            self._set_state(DaemonState.WAITING)
        self._wake.clear()
        sleeper: Awaitable[None] = (
            asyncio.sleep(real_s) if real_s is not None else self.clock.sleep_until(slot)
        )
        sleep_task = asyncio.ensure_future(sleeper)
        wake_task = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleep_task, wake_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleep_task, wake_task):
                t.cancel()
        return sleep_task.done() and not sleep_task.cancelled(), None if retry else slot

    async def _run_cycle_guarded(self) -> None:
        self._cycle_task = asyncio.create_task(self._cycle())
        try:
            report = await self._cycle_task
        except asyncio.CancelledError:
            if self._stopping or self._paused or self.halt_reason:
                self._log(
                    Level.INFO, f"cycle {self.current_cycle} interrupted: {self._interruption()}"
                )
                return
            raise
        except Exception as exc:
            self._failures += 1
            self._retry_after_s = (
                exc.retry_after_s
                if isinstance(exc, BrokerRetryable) and exc.status == 429
                else 0.0
            )
            if self._failures == 1:
                self._early_retry = isinstance(exc, BrokerError)
            where = f"cycle {self.current_cycle}"
            message = f"{type(exc).__name__}: {exc}"
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            await self._record_error(where, message, detail)
            wait = self._backoff_s()
            self._log(Level.ERROR, f"{where} failed: {message}; retrying after {wait:.0f}s")
            return
        finally:
            self._cycle_task = None
            self.cycles_run += 1
        # the cycle got through its broker calls: the backoff starts again from scratch
        # (a cycle that only had errors, e.g. the analyst's, is not retried)
        self._failures, self._retry_after_s, self._early_retry = 0, 0.0, False
        self.bus.publish(CycleFinished(report=report))

    def _backoff_s(self) -> float:
        """How long a failed cycle waits for its retry: what the broker asked for after a
        429 (Retry-After / X-RateLimit-Reset), else 2, 4, 8… s up to MAX_BACKOFF_S."""
        if self._retry_after_s > 0:
            return min(MAX_BACKOFF_S, self._retry_after_s)
        return min(MAX_BACKOFF_S, 2.0**self._failures)

    def _broker_answered(self) -> None:
        """A broker call succeeded. After a cycle failed on a broker error, the first one
        ends the backoff: the cycle is retried now, not after up to MAX_BACKOFF_S (once
        per run of failures, so a cycle that keeps failing still backs off)."""
        if self._early_retry and self._failures and self._cycle_task is None:
            self._early_retry = False
            self._log(Level.INFO, "the broker answers again: retrying the cycle now")
            self._run_now = True
            self._wake.set()

    async def _record_error(self, where: str, message: str, detail: str = "") -> None:
        self._error(where, message, detail)
        with contextlib.suppress(Exception):
            await self.memory.save_error(
                self.current_cycle or None, self.clock.now(), where, message, detail
            )

    # ------------------------------------------------------------------ background loops

    async def _order_updates_loop(self) -> None:
        while not self._stopping:
            try:
                async for update in self.broker.order_updates():
                    await self.execution.on_update(update)
                    if update.event in ("fill", "partial_fill") and update.fill is not None:
                        f = update.fill
                        await self.notifications.notify(
                            "Filled",
                            fill_message(f),
                            Level.INFO,
                            "fill",
                            key=f"fill:{f.fill_id}",  # two equal partial fills: two messages
                        )
                        await self._refresh_portfolio()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._record_error("order updates", str(exc))
                await asyncio.sleep(2.0)

    async def _housekeeping_loop(self) -> None:
        """Quotes for the screen, TTL expiry and the shared halt flag, about once a second."""
        ticks = 0
        while not self._stopping:
            try:
                await self._tick_quotes()
                await self.execution.expire_due()
                if ticks % 5 == 0:
                    await self._refresh_portfolio()
                    await self._save_sim_time()
            except asyncio.CancelledError:
                raise
            except BrokerError as exc:
                self._log(Level.WARNING, f"market data: {exc}")
            except Exception as exc:
                await self._record_error("housekeeping", f"{type(exc).__name__}: {exc}")
            ticks += 1
            await asyncio.sleep(self.quote_interval_s)

    async def _save_sim_time(self) -> None:
        if isinstance(self.clock, SimClock):
            await self.memory.set_state(SIM_TIME_KEY, self.clock.now().isoformat())

    async def _tick_quotes(self) -> None:
        quotes = await self.broker.latest(self.symbols)
        self._broker_answered()
        if quotes:
            self._quotes.update(quotes)
            self.bus.publish(QuotesUpdated(quotes=quotes))

    async def _halt_watch_loop(self) -> None:
        """The kill switch from another shell, read on its own clock: seen within about
        HALT_POLL_S whatever the quote interval (5 s in paper/live) or the cycle does."""
        while not self._stopping:
            try:
                await self._sync_halt_flag()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._record_error("halt flag", f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(HALT_POLL_S)

    async def _sync_halt_flag(self) -> None:
        """`perun halt` / `perun resume` from another shell act through the database.

        Under the halt lock: a halt or resume of this process is written to the database
        before the flag is read again, so a read in between cannot undo it."""
        async with self._halt_lock:
            flag = await self.memory.get_state(HALT_KEY)
            if flag and not self.halt_reason:
                await self._halt(flag)
            elif not flag and self.halt_reason:
                await self._clear_halt()

    async def _refresh_portfolio(self) -> None:
        try:
            account, positions, open_orders = await asyncio.gather(
                self.broker.account(), self.broker.positions(), self.broker.open_orders()
            )
        except BrokerError as exc:
            self._log(Level.WARNING, f"portfolio refresh failed: {exc}")
            return
        self._broker_answered()
        self._account = account
        self._positions = {p.symbol: p for p in positions}
        self._open_orders = open_orders
        self.bus.publish(
            PortfolioUpdated(account=account, positions=positions, open_orders=open_orders)
        )

    async def _cancel_open_orders(self) -> None:
        """risk.cancel_on_halt: cancel what is open at the broker now (asked afresh: the
        portfolio's list can be minutes old, or empty at start-up)."""
        try:
            orders = await self.broker.open_orders()
        except BrokerError as exc:
            orders = list(self._open_orders)
            self._log(
                Level.ERROR,
                f"cancel on halt: could not list open orders ({exc}); canceling the "
                f"{len(orders)} known",
            )
        for order in orders:
            if order.broker_order_id:
                try:
                    await self.broker.cancel(order.broker_order_id)
                    self._log(Level.WARNING, f"canceled {order.symbol} {order.client_order_id}")
                except BrokerError as exc:
                    self._log(Level.ERROR, f"cancel {order.client_order_id} failed: {exc}")

    # ------------------------------------------------------------------ risk inputs

    def _risk_inputs(
        self, symbol: str, quote: Quote | None, base: RiskInputs | None = None
    ) -> RiskInputs:
        """What the risk policy sees for ``symbol`` now. ``base``: the account-wide part
        (``_risk_base()``) when many symbols are sized at one moment."""
        return replace(
            base if base is not None else self._risk_base(),
            quote=quote if quote is not None else self._quotes.get(symbol),
            last_trade_at=self._last_trade.get(symbol),
        )

    def _risk_base(self) -> RiskInputs:
        """The account-wide risk inputs (no symbol, no quote), computed once."""
        account = self._account or Account(cash=0, equity=0, buying_power=0)
        pending_buys = sum(
            (o.qty or 0) * (self._quotes[o.symbol].last if o.symbol in self._quotes else 0)
            + (o.notional or 0)
            for o in self._open_orders
            if o.side is Side.BUY
            and o.status in (OrderStatus.NEW, OrderStatus.INTENT, OrderStatus.UNKNOWN)
        )
        return RiskInputs(
            account=account,
            positions=self._positions,
            quote=None,
            now=self.clock.now(),
            orders_this_cycle=self._orders_this_cycle,
            open_position_count=len(
                {s for s, p in self._positions.items() if p.qty != 0}
                | {o.symbol for o in self._open_orders if o.side is Side.BUY}
            ),
            day_start_equity=self._day_start_equity,
            universe=self._universe,
            pending_buy_notional=pending_buys,
        )

    # ------------------------------------------------------------------ the cycle

    async def _cycle(self) -> CycleReport:
        now = self.clock.now()
        cycle = await self.memory.begin_cycle(now)  # number + row in one statement
        self.current_cycle = cycle
        report = CycleReport(cycle=cycle, started_at=now)
        self.bus.publish(CycleStarted(cycle=cycle, at=now))
        self._set_state(DaemonState.CYCLING, f"cycle {cycle}")
        try:
            await self._cycle_steps(report)
        except asyncio.CancelledError:
            # recorded as interrupted, not as a cycle in which the analyst proposed nothing
            report.skipped = f"interrupted: {self._interruption()}"
            raise
        finally:
            report.finished_at = self.clock.now()
            await self.memory.finish_cycle(report)
            if self.state is DaemonState.CYCLING:
                if self.halt_reason:
                    self._set_state(DaemonState.HALTED, self.halt_reason)
                else:
                    self._set_state(DaemonState.WAITING)
        return report

    def _interruption(self) -> str:
        if self._stopping:
            return "Perun stopping"
        if self.halt_reason:
            return f"halted ({self.halt_reason})"
        return "paused by user" if self._paused else "cancelled"

    async def _cycle_steps(self, report: CycleReport) -> None:
        cycle = report.cycle
        # 2. market check
        market = await self.broker.clock()
        self._market = market
        report.market_open = market.is_open
        self.bus.publish(
            ScheduleUpdated(next_cycle_at=self.next_cycle_at, now=market.ts, market=market)
        )
        await self._sync_halt_flag()  # a halt set elsewhere since the last poll counts now
        if self.halt_reason:
            report.skipped = f"halted: {self.halt_reason}"
            return
        if self.settings.trading.market_hours_only and not market.is_open:
            opens = market.next_open.astimezone(EXCHANGE_TZ).strftime("%a %H:%M ET")
            report.skipped = f"market closed (opens {opens})"
            return
        await self.execution.check_open_orders()

        # 3. fetch
        symbols = self.symbols
        quotes, history = await asyncio.gather(self.broker.latest(symbols), self._history(symbols))
        await self._refresh_portfolio()
        self._quotes.update(quotes)
        if quotes:
            self.bus.publish(QuotesUpdated(quotes=quotes))
        missing = [s for s in symbols if s not in quotes]
        for sym in missing:
            if sym not in self._unknown_symbols:
                self._unknown_symbols.add(sym)
                msg = f"no market data for {sym}: unknown or delisted symbol"
                report.errors.append(msg)
                await self._record_error(
                    "market data", msg, f"remove {sym} from trading.symbols or check spelling"
                )
        account = self._account
        if account is None:
            raise BrokerError("account unavailable")
        await self.memory.save_snapshot(
            cycle, report.started_at, account, list(self._positions.values()), quotes
        )
        day = report.started_at.astimezone(EXCHANGE_TZ).date()
        self._day_start_equity = await self._loss_reference(day, account) or (
            account.last_equity or await self.memory.day_start_equity(day)
        )
        if await self._check_loss_limit(account):
            report.skipped = f"halted: {self.halt_reason}"
            return

        # 4. recall
        prices = {s: q.last for s, q in quotes.items()}
        memory, self._last_trade = await self.memory.recall_context(
            symbols, per_symbol=3, prices=prices
        )

        # 5. analyse
        usable = [s for s in symbols if s in quotes]
        features = {s: compute_features(s, history.get(s, []), quotes[s]) for s in usable}
        self._orders_this_cycle = 0
        fractional = self.settings.trading.fractional
        base = self._risk_base()  # account-wide inputs: once, not once per symbol
        limits = self.policy.limits(
            usable, lambda s: self._risk_inputs(s, quotes[s], base), fractional=fractional
        )
        context = AnalysisContext(
            cycle=cycle,
            now=report.started_at,
            mode=self.settings.trading.mode,
            symbols=usable,
            features=features,
            limits=limits,
            cash=account.cash,
            equity=account.equity,
            buying_power=account.buying_power,
            max_position_pct=self.settings.risk.max_position_pct,
            min_confidence=self.settings.risk.min_confidence,
            memory={s: v for s, v in memory.items() if v},
            market_note=self.optimizer.track_note(usable) if self.optimizer else "",
        )
        choice = await self.analysis.choose()
        report.analyst = choice.label
        self.bus.publish(AnalysisStarted(cycle=cycle, analyst=choice.label))

        def on_delta(channel: str, text: str) -> None:
            self.bus.publish(ReasoningDelta(cycle=cycle, text=text, channel=channel))

        result, elapsed = await self.analysis.analyze(choice, context, on_delta)
        await self.memory.save_analysis(cycle, result, elapsed)
        self.bus.publish(result.finished(cycle, elapsed))
        for note in result.dropped:
            self._log(Level.WARNING, f"analyst idea dropped: {note}")
        if result.dropped_ideas:  # stored as refused signals: scoring covers them too
            await self.memory.save_signals(
                dropped_signals(result, cycle, quotes, self.clock.now(), self._instance)
            )
        if result.error:
            report.errors.append(f"analysis: {result.error}")
            await self._record_error(
                "analysis", result.error, "no signals this cycle; see the log and `perun doctor`"
            )
            await self.notifications.notify(
                "Analysis failed", result.error, Level.ERROR, "analysis"
            )
        else:
            # 6-7. evaluate and execute
            await self._evaluate(cycle, result, quotes, report)

        # 9. notify
        if report.pending:
            await self.notifications.notify(
                "Signals awaiting approval",
                f"{report.pending} new signal(s) in cycle {cycle}",
                Level.INFO,
                "pending",
            )
        # 10. optimise
        if cycle % self.settings.optimization.every_cycles == 0:
            await self.measure()

    async def _evaluate(
        self, cycle: int, result: AnalysisResult, quotes: dict[str, Quote], report: CycleReport
    ) -> None:
        seen: set[tuple[str, Action]] = set()
        for proposal in result.signals:
            if proposal.action is Action.HOLD:
                continue
            if (proposal.symbol, proposal.action) in seen:
                continue  # one idea per symbol and side per cycle
            seen.add((proposal.symbol, proposal.action))
            quote = quotes.get(proposal.symbol)
            now = self.clock.now()
            signal = Signal(
                id=signal_id_for(cycle, proposal.symbol, proposal.action, self._instance),
                cycle=cycle,
                symbol=proposal.symbol,
                action=proposal.action,
                confidence=proposal.confidence,
                rationale=proposal.rationale,
                analyst=result.analyst,
                created_at=now,
                price=quote.last if quote else 0.0,
                target_price=proposal.target_price,
                stop_loss=proposal.stop_loss,
            )
            report.signals += 1
            invalid = self.policy.validate(proposal, self._universe)
            if invalid is not None:
                report.refused += 1
                await self.execution.propose(signal, approved_by_risk=False, reason=invalid)
                continue
            decision = self.policy.size(
                proposal.action,
                proposal.symbol,
                proposal.confidence,
                proposal.stop_loss,
                self._risk_inputs(proposal.symbol, quote),
                fractional=self.settings.trading.fractional,
            )
            signal.risk_checks = decision.checks
            signal.qty = decision.qty
            signal.notional = decision.notional
            if not decision.approved:
                report.refused += 1
                await self.execution.propose(signal, approved_by_risk=False, reason=decision.reason)
                continue
            await self.execution.propose(signal, approved_by_risk=True, reason="")
            if signal.status is SignalStatus.PENDING:
                report.pending += 1
                await self.execution.supersede(signal)
            elif signal.client_order_id is not None:
                # an order went (or may have gone) to the broker: it counts against
                # risk.max_orders_per_cycle whatever the broker made of it
                self._orders_this_cycle += 1
                if signal.status in (
                    SignalStatus.SUBMITTED,
                    SignalStatus.FILLED,
                    SignalStatus.PARTIALLY_FILLED,
                ):
                    report.submitted += 1
                    self._last_trade[signal.symbol] = now
                    await self._refresh_portfolio()

    async def _history(self, symbols: list[str]) -> dict[str, list[Bar]]:
        """Bars per symbol, kept in a rolling window: after the first cycle only the bars
        that can have completed since the window's newest one (plus that one again) are
        fetched and merged, so a cycle does not re-download history."""
        want = self.settings.trading.history_bars
        minutes = self.settings.trading.frequency_minutes
        step = timedelta(minutes=minutes)
        now = self.clock.now()
        cold: list[str] = []
        warm: dict[int, list[str]] = {}  # how many bars to fetch -> symbols
        for s in symbols:
            window = self._bars.get(s, [])
            if len(window) < want // 2:
                cold.append(s)
            else:
                # bars completed since the newest one held, + that one: never a gap
                # (wall time over-counts closed hours, which only fetches more)
                n = max(2, min(want, int((now - window[-1].ts) / step)))
                warm.setdefault(n, []).append(s)
        fetches = []
        if cold:
            fetches.append(self.broker.history(cold, minutes, want))
        for n, names in warm.items():
            fetches.append(self.broker.history(names, minutes, n))
        for fetched in await asyncio.gather(*fetches):
            for sym, bars in fetched.items():
                old = self._bars.get(sym, [])
                if bars:
                    # the window is in time order: drop its tail from the first new bar on
                    first = bars[0].ts
                    keep = len(old)
                    while keep and old[keep - 1].ts >= first:
                        keep -= 1
                    old = old[max(0, keep + len(bars) - want) : keep]
                self._bars[sym] = (old + bars)[-want:]
        return {s: self._bars.get(s, []) for s in symbols}

    async def _loss_reference(self, day: date, account: Account) -> float | None:
        """The equity accepted when a halt was last cleared today, if one was."""
        if self._resume_pending:
            self._resume_pending = False
            self._resume_base = (day, account.equity)
            await self.memory.set_state(
                LOSS_BASE_KEY, json.dumps({"day": day.isoformat(), "equity": account.equity})
            )
        if self._resume_base is not None and self._resume_base[0] == day:
            return self._resume_base[1]
        return None

    async def _load_loss_base(self) -> None:
        text = await self.memory.get_state(LOSS_BASE_KEY)
        data = json.loads(text) if text else {}
        if data.get("pending"):
            self._resume_pending = True
        elif data.get("day") and data.get("equity"):
            self._resume_base = (date.fromisoformat(data["day"]), float(data["equity"]))

    async def _check_loss_limit(self, account: Account) -> bool:
        start = self._day_start_equity
        if not start or self.halt_reason:
            return bool(self.halt_reason)
        loss_pct = (start - account.equity) / start * 100
        limit = self.settings.risk.daily_loss_limit_pct
        if loss_pct >= limit:
            since = "since the halt was cleared" if self._resume_base else "today"
            await self.halt(
                f"daily loss limit: equity down {loss_pct:.3g}% {since} (limit {limit:g}%)"
            )
            return True
        return False

    async def measure(self) -> None:
        """Step 10: performance from memory, published and stored."""
        account = self._account
        if account is None:
            return
        fills = await self.memory.fills()
        curve = [equity for _, equity in await self.memory.equity_curve()]
        metrics = compute_metrics(
            at=self.clock.now(),
            equity=account.equity,
            cash=account.cash,
            positions=self._positions.values(),
            fills=fills,
            equity_curve=curve,
        )
        await self.memory.save_metrics(self.current_cycle, metrics)
        self.bus.publish(PerformanceUpdated(metrics=metrics))
        if self.optimizer is not None:
            self.optimizer.kick()  # the full report runs in the background, off the cycle
