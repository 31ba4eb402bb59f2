"""A scripted stand-in for the daemon: fixed data on a real EventBus.

Used where the screen must look exactly the same every time — snapshot tests, the
SVGs in ``screenshots/``, the TUI benchmark's flood — and where a real trading cycle
would only add timing noise. It speaks the same API as ``OrchestrationDaemon`` (see
``protocol.DaemonAPI``) and publishes the same events, so the screen cannot tell.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from perun_tui.bus import EventBus
from perun_tui.config import Settings
from perun_tui.events import (
    AnalysisFinished,
    AnalysisStarted,
    AnalystStatus,
    CycleFinished,
    CycleStarted,
    DaemonState,
    DaemonStateChanged,
    ErrorRaised,
    FillReceived,
    Level,
    LogEvent,
    Notification,
    OrderChanged,
    PortfolioUpdated,
    QuotesUpdated,
    ReasoningDelta,
    ScheduleUpdated,
    SignalChanged,
)
from perun_tui.market_hours import FrozenClock
from perun_tui.models import (
    Account,
    Action,
    Bar,
    CycleReport,
    Fill,
    MarketClock,
    Order,
    OrderStatus,
    Position,
    Quote,
    RiskCheck,
    Signal,
    SignalStatus,
    SignalTransition,
    client_order_id_for,
    signal_id_for,
)
from perun_tui.tui.app import PerunApp

Settle = Callable[[], Awaitable[None]]

# Tuesday 2026-03-10 10:41:30 ET: a regular session, market open.
DEMO_NOW = datetime(2026, 3, 10, 14, 41, 30, tzinfo=UTC)
BASE_PRICES = {"AAPL": 231.40, "MSFT": 418.20, "NVDA": 126.80, "SPY": 571.30, "TSLA": 248.10}


@dataclass(slots=True)
class SignalDetails:
    signal: Signal
    transitions: list[SignalTransition] = field(default_factory=list)
    quote: Quote | None = None


class DemoDaemon:
    """Enough of the daemon to drive the screen: state, signals, approvals, a bus."""

    def __init__(self, settings: Settings, clock: FrozenClock | None = None) -> None:
        self.settings = settings
        self.bus = EventBus()
        self.clock = clock or FrozenClock(DEMO_NOW)
        self._state = DaemonState.STARTING
        self._pending: dict[str, Signal] = {}
        self._history: dict[str, list[SignalTransition]] = {}
        self._quotes: dict[str, Quote] = {}
        self._stopped = asyncio.Event()
        self.calls: list[tuple[str, str]] = []
        self.halt_reason = ""
        self.bars: dict[str, list[Bar]] = {}

    # ------------------------------------------------------------------ DaemonAPI

    @property
    def state(self) -> DaemonState:
        return self._state

    def set_state(self, state: DaemonState, reason: str = "") -> None:
        self._state = state
        self.bus.publish(DaemonStateChanged(state, reason))

    async def run(self) -> None:
        self.set_state(DaemonState.WAITING)
        await self._stopped.wait()

    async def stop(self) -> None:
        self.calls.append(("stop", ""))
        self.set_state(DaemonState.STOPPING)
        self.set_state(DaemonState.STOPPED)
        self._stopped.set()

    async def approve(self, signal_id: str) -> str:
        self.calls.append(("approve", signal_id))
        signal = self._pending.pop(signal_id, None)
        if signal is None:
            return f"not pending: {signal_id}"
        now = self.clock.now()
        self._move(signal, SignalStatus.APPROVED, "user", "approved by user")
        signal.client_order_id = client_order_id_for(signal.id, self.settings.trading.mode)
        self._move(signal, SignalStatus.SUBMITTED, "system", "order sent")
        order = Order(
            client_order_id=signal.client_order_id,
            symbol=signal.symbol,
            side=signal.side,
            qty=signal.qty,
            status=OrderStatus.FILLED,
            filled_qty=signal.qty,
            filled_avg_price=signal.price,
            signal_id=signal.id,
            created_at=now,
            updated_at=now,
        )
        self.bus.publish(OrderChanged(order))
        self.bus.publish(
            FillReceived(
                Fill(
                    fill_id=f"fill-{signal.id}",
                    client_order_id=order.client_order_id,
                    symbol=signal.symbol,
                    side=signal.side,
                    qty=signal.qty,
                    price=signal.price,
                    ts=now,
                )
            )
        )
        signal.fill_price = signal.price
        self._move(signal, SignalStatus.FILLED, "broker", "")
        return f"submitted {signal.action.value.upper()} {signal.symbol} {signal.qty:g}"

    async def reject(self, signal_id: str, reason: str = "by user") -> str:
        self.calls.append(("reject", signal_id))
        signal = self._pending.pop(signal_id, None)
        if signal is None:
            return f"not pending: {signal_id}"
        self._move(signal, SignalStatus.REJECTED, "user", reason)
        return f"rejected {signal.action.value.upper()} {signal.symbol}"

    def run_now(self) -> None:
        self.calls.append(("run_now", ""))

    def pause(self) -> None:
        self.calls.append(("pause", ""))
        self.set_state(DaemonState.PAUSED, "by user")

    def resume(self) -> None:
        self.calls.append(("resume", ""))
        self.set_state(DaemonState.WAITING)

    async def halt(self, reason: str) -> None:
        self.calls.append(("halt", reason))
        self.halt_reason = reason
        self.set_state(DaemonState.HALTED, reason)

    async def clear_halt(self) -> None:
        self.calls.append(("clear_halt", ""))
        self.set_state(DaemonState.WAITING)

    def pending_signals(self) -> list[Signal]:
        return sorted(self._pending.values(), key=lambda s: s.created_at)

    def recent_bars(self) -> dict[str, list[Bar]]:
        return {sym: list(bars) for sym, bars in self.bars.items()}

    async def signal_details(self, signal_id: str) -> SignalDetails:
        signal = self._pending.get(signal_id)
        if signal is None:
            raise KeyError(f"unknown signal {signal_id}")
        return SignalDetails(
            signal=signal,
            transitions=list(self._history.get(signal_id, [])),
            quote=self._quotes.get(signal.symbol),
        )

    # ------------------------------------------------------------------ scripting

    def _move(self, signal: Signal, new: SignalStatus, by: str, reason: str) -> None:
        record = signal.transition(new, by=by, reason=reason, at=self.clock.now())
        self._history.setdefault(signal.id, []).append(record)
        self.bus.publish(SignalChanged(signal.model_copy(deep=True), record))

    def propose(
        self,
        symbol: str,
        action: Action,
        qty: float,
        confidence: float,
        rationale: str,
        *,
        cycle: int = 1,
        age_s: float = 0.0,
        status: SignalStatus = SignalStatus.PENDING,
        reason: str = "",
    ) -> Signal:
        """Publish a new signal and move it to ``status`` (pending by default)."""
        now = self.clock.now()
        price = (self._quotes[symbol].last if symbol in self._quotes
                 else BASE_PRICES.get(symbol, 100.0))
        created = now - timedelta(seconds=age_s)
        ttl = timedelta(minutes=self.settings.approval.ttl_minutes)
        signal = Signal(
            id=signal_id_for(cycle, symbol, action, salt="demo"),
            cycle=cycle,
            symbol=symbol,
            action=action,
            confidence=confidence,
            rationale=rationale,
            analyst="rules",
            created_at=created,
            price=round(price, 2),
            target_price=round(price * (1.03 if action is Action.BUY else 0.97), 2),
            stop_loss=round(price * (0.98 if action is Action.BUY else 1.02), 2),
            qty=qty,
            notional=round(qty * price, 2),
            expires_at=created + ttl,
            risk_checks=[
                RiskCheck(name="position size", ok=True, detail="3.0% of equity ≤ 10%"),
                RiskCheck(name="order notional", ok=True,
                          detail=f"${qty * price:,.0f} ≤ $5,000"),
                RiskCheck(name="open positions", ok=True, detail="1 of 5"),
                RiskCheck(name="daily loss", ok=True, detail="+0.2% (limit −3%)"),
            ],
        )
        self.bus.publish(
            SignalChanged(
                signal.model_copy(deep=True),
                SignalTransition(signal_id=signal.id, old=None, new=SignalStatus.PROPOSED,
                                 by="analyst", reason="", at=created),
            )
        )
        if status is SignalStatus.REFUSED:
            self._move(signal, SignalStatus.REFUSED, "risk", reason)
            return signal
        self._move(signal, SignalStatus.PENDING, "risk", "awaiting approval")
        self._pending[signal.id] = signal
        return signal

    async def publish_quotes(
        self, settle: Settle | None = None, steps: int = 16, seed: int = 7
    ) -> None:
        """A deterministic price path per symbol, one bar at a time: the bus keeps only the
        newest quote per symbol for a slow reader, so ``settle`` waits for each to land."""
        rng = random.Random(seed)
        now = self.clock.now()
        symbols = self.settings.trading.symbols
        paths = {s: BASE_PRICES.get(s, 100.0) for s in symbols}
        for step in range(steps):
            ts = now - timedelta(minutes=(steps - 1 - step) * 5)
            quotes: dict[str, Quote] = {}
            for i, sym in enumerate(symbols):
                drift = math.sin(step / 4 + i) * 0.002 + rng.gauss(0, 0.003)
                paths[sym] *= 1 + drift
                last = round(paths[sym], 2)
                volume = 1000 * (1 + i) * (1.6 if step == steps - 1 and i == 2 else
                                           0.8 + rng.random() * 0.4)
                quotes[sym] = Quote(symbol=sym, ts=ts, bid=round(last - 0.02, 2),
                                    ask=round(last + 0.02, 2), last=last, volume=volume)
            self._quotes.update(quotes)
            self.bus.publish(QuotesUpdated(quotes))
            if settle is not None:
                await settle()

    def make_bars(self, seed: int = 5) -> None:
        """The previous session's last two hours in 15-minute bars (for the sparklines and
        the previous close), as the real daemon has them after its first cycle."""
        rng = random.Random(seed)
        close = datetime(2026, 3, 9, 20, 0, tzinfo=UTC)  # Monday 16:00 ET
        for i, sym in enumerate(self.settings.trading.symbols):
            price = BASE_PRICES.get(sym, 100.0) * (0.994 + 0.003 * i)
            bars: list[Bar] = []
            for k in range(8):
                ts = close - timedelta(minutes=15 * (8 - k))
                step = price * (1 + math.sin(k / 2 + i) * 0.002 + rng.gauss(0, 0.002))
                bars.append(Bar(symbol=sym, ts=ts, open=round(price, 2),
                                high=round(max(price, step) * 1.001, 2),
                                low=round(min(price, step) * 0.999, 2),
                                close=round(step, 2), volume=1000.0 * (1 + i)))
                price = step
            self.bars[sym] = bars

    def publish_portfolio(self) -> None:
        q = self._quotes
        aapl = q["AAPL"].last if "AAPL" in q else BASE_PRICES["AAPL"]
        msft = q["MSFT"].last if "MSFT" in q else BASE_PRICES["MSFT"]
        positions = [
            Position(symbol="AAPL", qty=40, avg_price=228.10, market_price=aapl),
            Position(symbol="MSFT", qty=6, avg_price=421.75, market_price=msft),
        ]
        value = sum(p.market_value for p in positions)
        cash = 100_000 - 40 * 228.10 - 6 * 421.75
        equity = cash + value
        account = Account(cash=round(cash, 2), equity=round(equity, 2),
                          buying_power=round(cash * 2, 2), last_equity=99_812.40)
        self.bus.publish(PortfolioUpdated(account, positions, []))

    def publish_cycle(self, cycle: int, *, error: str | None = None) -> None:
        now = self.clock.now()
        self.bus.publish(CycleStarted(cycle, now))
        self.bus.publish(AnalysisStarted(cycle, "rules"))
        if error is None:
            for channel, text in REASONING:
                self.bus.publish(ReasoningDelta(cycle, text, channel))
        self.bus.publish(
            AnalysisFinished(cycle, "rules", "" if error else "Mixed tape; tech leads.",
                             0 if error else 2, 1.4, tokens=None if error else 212, error=error)
        )
        if error is not None:
            self.bus.publish(ErrorRaised("analysis", error,
                                         "no signals this cycle; see the log and `perun doctor`"))
            self.bus.publish(Notification("Analysis failed", error, Level.ERROR))
        report = CycleReport(cycle=cycle, started_at=now, finished_at=now + timedelta(seconds=2),
                             analyst="rules", signals=0 if error else 2, pending=0 if error else 2,
                             errors=[error] if error else [])
        self.bus.publish(CycleFinished(report))

    def publish_header(self) -> None:
        now = self.clock.now()
        market = MarketClock(ts=now, is_open=True,
                             next_open=datetime(2026, 3, 11, 13, 30, tzinfo=UTC),
                             next_close=datetime(2026, 3, 10, 20, 0, tzinfo=UTC))
        self.bus.publish(ScheduleUpdated(datetime(2026, 3, 10, 14, 45, tzinfo=UTC), now, market))
        self.bus.publish(AnalystStatus(
            "rules", False,
            "Ollama not reachable at http://127.0.0.1:11434; using the rules analyst",
        ))

    async def populate(self, settle: Settle | None = None) -> None:
        """The standard demo screen: prices, a portfolio, a cycle, signals, a log."""
        self.set_state(DaemonState.WAITING)
        self.publish_header()
        self.make_bars()
        await self.publish_quotes(settle)
        self.publish_portfolio()
        self.bus.publish(LogEvent(Level.INFO, "reconciled 0 local orders with the broker"))
        self.publish_cycle(11)
        filled = self.propose("AAPL", Action.BUY, 8, 0.78, "Momentum above the 20-bar mean.",
                              cycle=10, age_s=900)
        self._pending.pop(filled.id, None)
        filled.client_order_id = client_order_id_for(filled.id, self.settings.trading.mode)
        self._move(filled, SignalStatus.APPROVED, "user", "approved by user")
        self._move(filled, SignalStatus.SUBMITTED, "system", "order sent")
        filled.fill_price = 229.85
        self._move(filled, SignalStatus.FILLED, "broker", "")
        self.propose("TSLA" if "TSLA" in self.settings.trading.symbols else "SPY",
                     Action.BUY, 30, 0.66, "Breakout attempt.", cycle=11, age_s=240,
                     status=SignalStatus.REFUSED, reason="max order notional $5,000 exceeded")
        self.propose(
            "NVDA", Action.BUY, 12, 0.82,
            "NVDA is up 1.9% on 1.6x average volume, trading above both moving averages "
            "(fast 125.9 > slow 124.2) with RSI 61: trend continuation with room to run. "
            "Stop 2% below entry, target +3%.",
            cycle=11, age_s=130,
        )
        self.propose(
            "MSFT", Action.SELL, 6, 0.71,
            "MSFT is 1.1% below its average cost after two lower highs; RSI 38 and falling. "
            "Trim the position before the loss widens.",
            cycle=11, age_s=95,
        )
        self.bus.publish(LogEvent(Level.WARNING, "AnalystStatus: Ollama unreachable; rules in use"))
        if settle is not None:
            await settle()


REASONING: tuple[tuple[str, str], ...] = (
    ("content", "**Market read** — tech leads, breadth is mixed.\n\n"),
    ("content", "- **NVDA**: above both moving averages, volume 1.6x average, RSI 61 "
                "→ *buy* 12 sh (conf 0.82).\n"),
    ("content", "- **MSFT**: two lower highs, below cost → *trim* 6 sh (conf 0.71).\n"),
    ("content", "- **AAPL**, **SPY**: no edge; hold.\n"),
)


def demo_settings(**sections: dict[str, object]) -> Settings:
    """Settings for the demo screen: five symbols, manual approval, no bell."""
    data: dict[str, dict[str, object]] = {
        "trading": {"symbols": ["AAPL", "MSFT", "NVDA", "SPY", "TSLA"]},
        "notify": {"bell": False},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Settings.model_validate(data)


async def wait_for(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``predicate`` on the event loop until it holds (or raise TimeoutError)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling app state from outside the app
            await asyncio.sleep(0.01)


async def stage(app: PerunApp, daemon: DemoDaemon) -> None:
    """Bring a running app with a DemoDaemon to the standard demo screen, fully drawn."""
    await wait_for(lambda: app.main.bridge is not None)
    bridge = app.main.bridge
    assert bridge is not None
    await daemon.populate(bridge.settled)
    await bridge.settled()
    reasoning = app.main.reasoning
    await wait_for(lambda: reasoning.markdown_source == reasoning.shown_text())
    await settle_layout(app)


async def settle_layout(app: PerunApp, quiet_checks: int = 3) -> None:
    """Wait until the reasoning panel has stopped growing and scrolled to its end."""
    scroll = app.main.reasoning.scroll
    last: object = None
    quiet = 0
    async with asyncio.timeout(5):
        while quiet < quiet_checks:
            await asyncio.sleep(0.02)
            markdown = app.main.reasoning.markdown
            state = (markdown and markdown.size, scroll.max_scroll_y, scroll.scroll_y)
            at_end = scroll.scroll_y >= scroll.max_scroll_y
            quiet = quiet + 1 if state == last and at_end else 0
            last = state


_WORDS = (
    "price", "volume", "trend", "momentum", "above", "below", "average", "support",
    "resistance", "breakout", "risk", "position", "size", "stop", "target", "confidence",
    "signal", "sector", "tape", "breadth", "rotation",
)


async def flood(daemon: DemoDaemon, rate: float, cycle_s: float = 20.0) -> None:
    """Publish about ``rate`` events per second until cancelled: a third price ticks, a
    third log lines, a third reasoning deltas (a new cycle every ``cycle_s``; cycles
    numbered from 100)."""
    rng = random.Random(11)
    symbols = daemon.settings.trading.symbols
    prices = {s: BASE_PRICES.get(s, 100.0) for s in symbols}
    loop = asyncio.get_running_loop()
    started = loop.time()
    first = cycle = 100
    daemon.bus.publish(AnalysisStarted(cycle, "rules"))
    sent = 0
    tick = 0.01
    while True:
        elapsed = loop.time() - started
        while cycle < first + int(elapsed / cycle_s):  # several per tick when they are short
            daemon.bus.publish(AnalysisFinished(cycle, "rules", "flood", 0, cycle_s))
            cycle += 1
            daemon.bus.publish(AnalysisStarted(cycle, "rules"))
        due = int(elapsed * rate) - sent
        now = daemon.clock.now()
        for i in range(max(0, due)):
            kind = (sent + i) % 3
            if kind == 0:
                sym = symbols[(sent + i) // 3 % len(symbols)]
                prices[sym] *= 1 + rng.gauss(0, 0.0005)
                p = round(prices[sym], 2)
                daemon.bus.publish(QuotesUpdated({sym: Quote(
                    symbol=sym, ts=now, bid=p - 0.01, ask=p + 0.01, last=p,
                    volume=1000 + rng.random() * 500)}))
            elif kind == 1:
                daemon.bus.publish(LogEvent(Level.INFO, f"flood {sent + i}: market data ok"))
            else:
                word = rng.choice(_WORDS)
                text = word + (".\n\n" if rng.random() < 0.03 else " ")
                daemon.bus.publish(ReasoningDelta(cycle, text, "thinking"))
        sent += max(0, due)
        await asyncio.sleep(tick)


class DemoApp(PerunApp):
    """The terminal on the demo daemon, optionally under a flood (for benchmarks)."""

    def __init__(self, flood_rate: float = 0.0, cycle_s: float = 20.0) -> None:
        settings = demo_settings()
        self.demo = DemoDaemon(settings)
        super().__init__(settings, daemon=self.demo, clock=self.demo.clock)
        self.flood_rate = flood_rate
        self.cycle_s = cycle_s

    async def on_ready(self) -> None:
        self.run_worker(self._script(), name="demo", group="demo", exit_on_error=False)

    async def _script(self) -> None:
        await stage(self, self.demo)
        if self.flood_rate > 0:
            await flood(self.demo, self.flood_rate, self.cycle_s)


def main(argv: list[str] | None = None) -> int:
    """``python -m perun_tui.tui.demo [--flood RATE [--cycle-s S]] [--no-mouse]``"""
    import argparse

    parser = argparse.ArgumentParser(description="Perun's terminal on scripted data.")
    parser.add_argument("--flood", type=float, default=0.0, metavar="RATE",
                        help="also publish RATE bus events per second (ticks, logs, reasoning)")
    parser.add_argument("--cycle-s", type=float, default=20.0, metavar="SECONDS",
                        help="with --flood: a new analysis cycle every SECONDS")
    parser.add_argument("--no-mouse", action="store_true")
    args = parser.parse_args(argv)
    app = DemoApp(args.flood, args.cycle_s)
    app.run(mouse=not args.no_mouse)
    return app.return_code or 0


if __name__ == "__main__":
    raise SystemExit(main())
