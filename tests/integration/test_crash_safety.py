"""Crash safety: kill Perun anywhere, interrupt it, halt it, feed it garbage — nothing is
lost, doubled or sent when it must not be.

The bounded version of ``python -m tests.faults`` (see ``tests/faults/``): 22 ``kill -9``
points and 21 SIGTERM/SIGHUP/SIGINT interruptions across the sim exchange and the loopback
Alpaca server, the kill switch from another shell, an order call hanging at a stop, broker
and model faults during a run, and hypothesis properties for model replies and config
values. Longer variants are marked ``slow`` and run with ``PERUN_SLOW=1``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from perun_tui.config import ConfigError, Settings, load_settings
from perun_tui.daemon import ORDER_GRACE_S
from perun_tui.events import ErrorRaised
from perun_tui.llm.base import (
    AnalysisContext,
    AnalysisResult,
    AnalystHealth,
    DeltaCallback,
    ProposedSignal,
    SymbolLimits,
)
from perun_tui.llm.schema import parse_reply
from perun_tui.models import Account, Action, Order, OrderRequest, OrderStatus, Side, SignalStatus
from perun_tui.runtime import Runtime, build_runtime
from tests.faults.harness import (
    EXIT_BUDGET_S,
    Backend,
    PaperBackend,
    Series,
    SimBackend,
    Tally,
    read_db,
    run_series,
    trader_ollama,
)
from tests.faults.soak import run_soak
from tests.sim import SIM_START

SLOW = os.environ.get("PERUN_SLOW") == "1"


def _report(name: str, tally: Tally) -> None:
    print(f"\n{name}: {json.dumps(tally.details())}")


# --------------------------------------------------------------------------- kill -9 / signals


@pytest.mark.timeout(400)
def test_kill_9_and_interrupts_leave_nothing_lost_or_doubled(tmp_path: Path) -> None:
    """22 kill -9 points and 21 SIGTERM/SIGHUP/SIGINT interruptions: the sim exchange and
    the loopback Alpaca server side by side (two series at once: half the wall time)."""
    plan = {"sim": (12, 11, 101), "paper": (10, 10, 202)}
    with ThreadPoolExecutor(len(plan)) as pool:
        futures = {
            mode: pool.submit(
                run_series, mode, tmp_path / mode, kills=k, interrupts=i, seed=seed
            )
            for mode, (k, i, seed) in plan.items()
        }
        tallies = {mode: f.result() for mode, f in futures.items()}
    total = Tally()
    for mode, tally in tallies.items():
        _report(mode, tally)
        kills, interrupts, _ = plan[mode]
        assert (tally.kills, tally.interrupts) == (kills, interrupts)
        assert tally.ok, f"{mode}: {json.dumps(tally.details(), indent=1)}"
        assert tally.orders >= 10 and tally.pending_checked >= 10, f"{mode}: too little happened"
        total.add(tally)
    assert total.kills >= 20 and total.interrupts >= 20


@pytest.mark.parametrize("mode", ["sim", "paper"])
@pytest.mark.timeout(1800)
@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="long run: set PERUN_SLOW=1")
def test_kill_9_long(tmp_path: Path, mode: str) -> None:
    tally = run_series(mode, tmp_path, kills=100, interrupts=25, seed=303)
    _report(mode, tally)
    assert tally.ok, json.dumps(tally.details(), indent=1)


# --------------------------------------------------------------------------- an order call hanging


@pytest.mark.timeout(120)
def test_sigterm_while_an_order_call_hangs(tmp_path: Path) -> None:
    """The broker takes the order and never answers; SIGTERM comes. The call gets a grace,
    is then recorded as unknown-outcome, and the next start finds the order by its id —
    never sending it again."""
    backend = PaperBackend(9, timeout_s=10.0)  # alpaca.request_timeout_s's default
    fake = backend.fake
    try:
        with trader_ollama(9) as ollama:
            series = Series(
                backend, ollama, tmp_path, seed=9, extra_env={"PERUN_APPROVAL__MODE": "auto"}
            )
            child = series.start()
            assert child.wait_events("CycleFinished", 2, 30), child.output()[-2000:]
            sent_before = len(fake.requests("POST", "/v2/orders"))
            fake.faults.submit.append("hang_after_create")
            deadline = time.monotonic() + 30
            while len(fake.requests("POST", "/v2/orders")) == sent_before:
                assert time.monotonic() < deadline, "no order was sent"
                time.sleep(0.01)
            cid = fake.requests("POST", "/v2/orders")[sent_before].json["client_order_id"]
            time.sleep(0.3)
            started = time.monotonic()
            child.send(signal.SIGTERM)
            rc = child.finish(60)
            took = time.monotonic() - started
            assert rc == 0, child.stderr[-10:]
            # unknown-outcome — or already "filled" when the update stream said so first
            assert read_db(series.db_path)["orders"][cid]["status"] in ("unknown", "filled")

            series.final()  # restart: reconciliation looks the order up
            _report("hang", series.tally)
            assert series.tally.ok, json.dumps(series.tally.details(), indent=1)
            assert read_db(series.db_path)["orders"][cid]["status"] == "filled"
            assert fake.submit_attempts[cid] == 1
    finally:
        backend.close()
    if took > EXIT_BUDGET_S:
        pytest.xfail(
            f"exit took {took:.1f}s: the daemon stopped after its {ORDER_GRACE_S:g}s grace, "
            "but AlpacaBroker's ThreadPoolExecutor worker stuck in the hanging HTTP call is "
            "joined at interpreter exit (until alpaca.request_timeout_s)"
        )


# --------------------------------------------------------------------------- the kill switch


def _halted(event: dict[str, Any] | None) -> bool:
    return bool(event) and event.get("event") == "DaemonStateChanged" and (
        event.get("state") == "halted"
    )


def _perun(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "perun_tui.cli", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("mode", ["sim", "paper"])
@pytest.mark.timeout(150)
def test_perun_halt_from_another_shell(tmp_path: Path, mode: str) -> None:
    backend: Backend = SimBackend(tmp_path) if mode == "sim" else PaperBackend(5)
    try:
        with trader_ollama(5) as ollama:
            series = Series(
                backend, ollama, tmp_path, seed=5, extra_env={"PERUN_APPROVAL__MODE": "auto"}
            )
            child = series.start()
            assert child.wait_events("OrderChanged", 3, 40), "not trading before the halt"

            halt = _perun(series.env, tmp_path, "halt", "--mode", mode, "test: stop now")
            assert halt.returncode == 0, halt.stderr
            # "a running perun stops trading within seconds" (HALT_POLL_S, in every mode)
            assert child.wait_for(lambda ls: any(_halted(ln.event) for ln in ls), 5)
            time.sleep(2.5)  # ~20 more cycles' worth of time, with auto approval on
            lines = list(child.lines)
            at = next(i for i, ln in enumerate(lines) if _halted(ln.event))
            observed = lines[at].wall
            late = [cid for t, cid in backend.submit_times() if t > observed]
            assert not late, f"submitted after the halt was observed: {late}"
            after = [ln.event for ln in lines[at:] if ln.event]
            approved = [
                e["signal"]["id"] for e in after
                if e["event"] == "SignalChanged" and e["transition"]["new"] == "approved"
            ]
            assert not approved, f"approved after the halt: {approved}"
            child.send(signal.SIGTERM)
            assert child.finish(30) == 0

            # the halt survives a restart
            count = len(backend.submit_times())
            child = series.start()
            assert child.wait_for(lambda ls: any(_halted(ln.event) for ln in ls), 30)
            time.sleep(2.0)
            assert len(backend.submit_times()) == count, "submitted while halted after restart"

            # `perun resume` from another shell: trading picks up again
            resume = _perun(series.env, tmp_path, "resume", "--mode", mode)
            assert resume.returncode == 0, resume.stderr
            deadline = time.monotonic() + 30
            while len(backend.submit_times()) == count:
                assert time.monotonic() < deadline, "no order after `perun resume`"
                time.sleep(0.05)
            child.send(signal.SIGTERM)
            assert child.finish(30) == 0
            series.check(child, after="resume", graceful=True)
            assert series.tally.ok, json.dumps(series.tally.details(), indent=1)
    finally:
        backend.close()


class ScriptedAnalyst:
    """Proposes the same ideas every cycle (an in-process stand-in for a model)."""

    name = "scripted"

    def __init__(self, *ideas: ProposedSignal) -> None:
        self.ideas = list(ideas)

    async def check(self) -> AnalystHealth:
        return AnalystHealth(ok=True, name=self.name)

    async def analyze(self, context: AnalysisContext, on_delta: DeltaCallback) -> AnalysisResult:
        return AnalysisResult(analyst=self.name, signals=list(self.ideas))

    async def close(self) -> None:
        return None


def _sim_settings(path: Path, **env: str) -> Settings:
    base = {
        "PERUN_STORAGE__PATH": str(path / "data"),
        "PERUN_SIM__START": SIM_START,
        "PERUN_LLM__PROVIDER": "rules",
        "PERUN_APPROVAL__MODE": "auto",
        "PERUN_RISK__COOLDOWN_MINUTES": "0",
        "PERUN_NOTIFY__BELL": "false",
        **env,
    }
    return load_settings(env=base, cwd=path, use_dotenv=False)


BUY_AAPL = ProposedSignal(symbol="AAPL", action=Action.BUY, confidence=0.9, rationale="test")


async def test_a_halt_observed_while_an_order_is_approved_sends_nothing(
    tmp_path: Path,
) -> None:
    """The kill switch fires between the approval's commit and the broker call (the
    window a `perun halt` from another shell can hit): the order is not sent."""
    runtime = await build_runtime(_sim_settings(tmp_path), every_s=3600, max_cycles=1)
    daemon, memory = runtime.daemon, runtime.memory
    daemon.analysis.primary = ScriptedAnalyst(BUY_AAPL)
    sent: list[str] = []
    real_submit = runtime.broker.submit

    async def submit(request: Any) -> Any:
        sent.append(request.client_order_id)
        return await real_submit(request)

    real_save = memory.save_signal

    async def save_signal(sig: Any, transition: Any = None, order: Any = None) -> None:
        await real_save(sig, transition, order)
        if transition is not None and transition.new is SignalStatus.APPROVED:
            await daemon.halt("perun halt, observed mid-approval")

    runtime.broker.submit = submit  # type: ignore[method-assign]
    memory.save_signal = save_signal  # type: ignore[method-assign]
    try:
        await asyncio.wait_for(daemon.run(), 60)
        assert sent == []
        failed = await memory.signals([SignalStatus.FAILED])
        assert [s.symbol for s in failed] == ["AAPL"]
        assert "halted" in failed[0].reason
        orders = await memory.orders()
        assert [o.status for o in orders] == [OrderStatus.FAILED]
        assert await memory.get_state("halted")
    finally:
        await runtime.close()


@pytest.mark.parametrize("reaches_broker", [True, False])
async def test_stop_gives_an_order_in_flight_a_grace_then_records_it_unknown(
    tmp_path: Path, reaches_broker: bool
) -> None:
    """A stop while the broker call hangs: after ORDER_GRACE_S the call is abandoned and
    the order recorded as unknown-outcome (or as what the broker's update stream said);
    the next start settles it by looking it up, and never sends it again."""
    settings_ = _sim_settings(tmp_path)
    runtime = await build_runtime(settings_, every_s=3600, max_cycles=None)
    daemon = runtime.daemon
    daemon.analysis.primary = ScriptedAnalyst(BUY_AAPL)
    reached = asyncio.Event()
    real_submit = runtime.broker.submit
    sent: list[str] = []

    async def submit_then_hang(request: Any) -> Any:
        sent.append(request.client_order_id)
        if reaches_broker:
            await real_submit(request)  # the broker has the order...
        reached.set()
        await asyncio.Event().wait()  # ...and the answer never comes

    runtime.broker.submit = submit_then_hang  # type: ignore[method-assign]
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(reached.wait(), 30)
        started = time.monotonic()
        await asyncio.wait_for(daemon.stop(), 10)
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - started < ORDER_GRACE_S + 1.5
        (order,) = await runtime.memory.orders()
        # the sim's update stream may already have said "filled" before the stop ended
        expected = {OrderStatus.UNKNOWN, OrderStatus.FILLED} if reaches_broker else {
            OrderStatus.UNKNOWN
        }
        assert order.status in expected
    finally:
        await runtime.close()

    # next start: reconciliation settles it by client order id
    again = await build_runtime(settings_, every_s=3600, max_cycles=1)
    again.daemon.analysis.primary = ScriptedAnalyst()
    try:
        await asyncio.wait_for(again.daemon.run(), 60)
        (order,) = await again.memory.orders()
        (sig,) = await again.memory.signals()
        assert sig.client_order_id == order.client_order_id == sent[0]
        at_broker = await again.broker.order_by_client_id(order.client_order_id)
        if reaches_broker:
            assert at_broker is not None
            assert (order.status, sig.status) == (OrderStatus.FILLED, SignalStatus.FILLED)
            fills = await again.memory.fills(client_order_id=order.client_order_id)
            assert sum(f.qty for f in fills) == pytest.approx(order.filled_qty)
        else:
            assert at_broker is None
            assert (order.status, sig.status) == (OrderStatus.FAILED, SignalStatus.FAILED)
        assert len(sent) == 1  # never sent again
    finally:
        await again.close()


async def test_a_loss_limit_halt_inside_the_cycle_still_cancels_open_orders(
    tmp_path: Path,
) -> None:
    """The daily loss limit halts from inside the cycle; with risk.cancel_on_halt the
    open orders must still be canceled (the halt must not cancel its own task first)."""
    settings_ = _sim_settings(
        tmp_path, PERUN_RISK__CANCEL_ON_HALT="true", PERUN_RISK__DAILY_LOSS_LIMIT_PCT="3"
    )
    runtime = await build_runtime(settings_, every_s=3600, max_cycles=1)
    daemon = runtime.daemon
    canceled: list[str] = []

    async def cancel(broker_order_id: str) -> None:
        canceled.append(broker_order_id)

    runtime.broker.cancel = cancel  # type: ignore[method-assign]
    request = OrderRequest(client_order_id="perun-sim-x", symbol="AAPL", side=Side.BUY, qty=1)
    resting = Order.from_request(request, daemon.clock.now())
    resting.broker_order_id = "b-1"
    try:
        daemon._open_orders = [resting]
        daemon._day_start_equity = 100_000.0
        daemon._cycle_task = asyncio.current_task()  # as the cycle itself would call it
        hit = await daemon._check_loss_limit(Account(cash=0, equity=90_000, buying_power=0))
        assert hit and daemon.halt_reason and "daily loss limit" in daemon.halt_reason
        assert canceled == ["b-1"]
        assert await runtime.memory.get_state("halted")
    finally:
        daemon._cycle_task = None
        await runtime.close()


# --------------------------------------------------------------------------- faults during a run

CI_FAULTS = [
    "submit:504_after_create",
    "submit:drop_after_create",
    "submit:hang_after_create",
    "submit:429",
    "path:/v2/account:500",
    "path:/v2/stocks/*:drop",
    "ollama:stream_error",
    "ollama:garbage",
    "ollama:hang",
]


@pytest.mark.timeout(240)
def test_broker_and_model_faults_are_visible_and_survived(tmp_path: Path) -> None:
    result = run_soak(tmp_path, 0, seed=11, plan=CI_FAULTS)
    print(f"\nsoak: {json.dumps(result.figures())} {json.dumps(result.tally.details())}")
    assert sum(result.injected.values()) == len(CI_FAULTS)
    assert not result.invisible, f"faults nobody could see: {result.invisible}"
    assert not result.stuck, f"no clean cycle after: {result.stuck}"
    assert result.tally.ok, json.dumps(result.tally.details(), indent=1)


@pytest.mark.timeout(1200)
@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="long run: set PERUN_SLOW=1")
def test_broker_and_model_faults_long(tmp_path: Path) -> None:
    result = run_soak(tmp_path, 300, seed=12)
    print(f"\nsoak: {json.dumps(result.figures())}")
    assert not result.invisible and not result.stuck
    assert result.tally.ok, json.dumps(result.tally.details(), indent=1)


# --------------------------------------------------------------------------- properties

UNIVERSE = ["AAPL", "MSFT", "NVDA", "SPY"]
_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.sampled_from(["0.9", " 0.8 ", "80", "NaN", "1e400", "-1", "abc", "", "0x1"]),
    st.booleans(),
    st.none(),
)
_symbols = st.one_of(
    st.sampled_from([*UNIVERSE, "aapl", " nvda ", "TSLA", "", "AAPL ", "BRK.B", "💥", "SPY\n"]),
    st.text(max_size=8),
    _numbers,
)
_actions = st.one_of(
    st.sampled_from(["buy", "sell", "hold", "BUY", " Sell ", "long", "short", ""]),
    st.text(max_size=6),
    _numbers,
)
_idea = st.fixed_dictionaries(
    {"symbol": _symbols, "action": _actions, "confidence": _numbers},
    optional={
        "rationale": st.one_of(st.text(max_size=30), _numbers),
        "target_price": _numbers,
        "stop_loss": _numbers,
        "qty": _numbers,
    },
)
_document = st.fixed_dictionaries(
    {"signals": st.one_of(st.lists(st.one_of(_idea, _numbers), max_size=8), _numbers)},
    optional={"market_view": st.one_of(st.text(max_size=40), _numbers)},
)
_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=10)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_good_idea = st.fixed_dictionaries(
    {
        "symbol": st.sampled_from([*UNIVERSE, "aapl", " nvda "]),
        "action": st.sampled_from(["buy", "buy", "BUY", "hold", "sell"]),
        "confidence": st.one_of(st.floats(0.5, 1), st.sampled_from([0.0, 1.0, "0.9"])),
        "rationale": st.text(max_size=20),
    },
    optional={"stop_loss": st.one_of(st.floats(0.01, 1e6), st.none()),
              "target_price": st.one_of(st.floats(0.01, 1e6), st.none())},
)
_good_document = st.fixed_dictionaries(
    {"market_view": st.text(max_size=20), "signals": st.lists(_good_idea, max_size=6)}
)
REPLIES = st.one_of(
    _good_document.map(json.dumps),
    _good_document.map(json.dumps),
    _document.map(json.dumps),
    _document.map(json.dumps).flatmap(lambda s: st.integers(0, len(s)).map(lambda i: s[:i])),
    _json_values.map(json.dumps),
    st.text(max_size=200),
)
_limits = st.fixed_dictionaries(
    {s: st.tuples(st.booleans(), st.booleans()) for s in UNIVERSE}
).map(
    lambda d: {
        s: SymbolLimits(symbol=s, max_buy_qty=10 if b else 0, held_qty=5 if sell else 0,
                        can_buy=b, can_sell=sell)
        for s, (b, sell) in d.items()
    }
)


@settings(max_examples=400, deadline=None)
@given(content=REPLIES, limits=_limits)
def test_any_model_reply_parses_to_nothing_or_to_allowed_ideas(
    content: str, limits: dict[str, SymbolLimits]
) -> None:
    parsed = parse_reply(content, universe=UNIVERSE, limits=limits)
    seen: set[str] = set()
    for idea in parsed.signals:
        assert idea.symbol in UNIVERSE and idea.symbol not in seen
        seen.add(idea.symbol)
        assert isinstance(idea.action, Action)
        assert math.isfinite(idea.confidence) and 0.0 <= idea.confidence <= 1.0
        if idea.action is Action.BUY:
            assert limits[idea.symbol].can_buy
        if idea.action is Action.SELL:
            assert limits[idea.symbol].can_sell
        for price in (idea.target_price, idea.stop_loss):
            assert price is None or (math.isfinite(price) and price > 0)


class ReplyAnalyst:
    """Answers every cycle with the same raw model reply, validated like Ollama's."""

    name = "reply"

    def __init__(self, content: str) -> None:
        self.content = content

    async def check(self) -> AnalystHealth:
        return AnalystHealth(ok=True, name=self.name)

    async def analyze(self, context: AnalysisContext, on_delta: DeltaCallback) -> AnalysisResult:
        parsed = parse_reply(self.content, universe=context.symbols, limits=context.limits)
        if parsed.problems or parsed.reply is None:
            return AnalysisResult(analyst=self.name, error="; ".join(parsed.problems))
        return AnalysisResult(
            analyst=self.name, signals=parsed.signals, dropped=parsed.unknown,
            market_view=parsed.reply.market_view,
        )

    async def close(self) -> None:
        return None


class EagerAnalyst:
    """Buys whatever may be bought and sells whatever may be sold, every cycle."""

    name = "eager"

    async def check(self) -> AnalystHealth:
        return AnalystHealth(ok=True, name=self.name)

    async def analyze(self, context: AnalysisContext, on_delta: DeltaCallback) -> AnalysisResult:
        ideas = []
        for sym, lim in context.limits.items():
            if lim.can_sell:
                ideas.append(ProposedSignal(symbol=sym, action=Action.SELL, confidence=0.95,
                                            rationale="eager"))
            elif lim.can_buy:
                ideas.append(ProposedSignal(symbol=sym, action=Action.BUY, confidence=0.95,
                                            rationale="eager"))
        return AnalysisResult(analyst=self.name, signals=ideas)

    async def close(self) -> None:
        return None


CRASHES = ("cycle", "housekeeping", "order updates")


async def _run_checked(runtime: Runtime, analyst: Any) -> None:
    """Run the runtime's cycles; fail on any crash; check every order against the limits."""
    runtime.daemon.analysis.primary = analyst
    sub = runtime.bus.subscribe(ErrorRaised)
    await asyncio.wait_for(runtime.daemon.run(), 60)
    crashes = [e for e in sub.drain() if e.where.startswith(CRASHES)]
    assert not crashes, [f"{e.where}: {e.message}" for e in crashes]
    orders = await _assert_within_limits(runtime)
    event(f"orders: {'none' if not orders else '1-3' if orders <= 3 else 'more'}")


async def _assert_within_limits(runtime: Runtime) -> int:
    risk = runtime.settings.risk
    memory = runtime.memory
    per_cycle: Counter[int] = Counter()
    for order in await memory.orders():
        assert order.signal_id is not None, f"an order without a signal: {order}"
        sig = await memory.get_signal(order.signal_id)
        assert sig is not None
        per_cycle[sig.cycle] += 1
        qty = order.qty or 0.0
        assert 0 < qty <= sig.qty + 1e-9, (order, sig.qty)
        assert math.isfinite(sig.notional)
        assert sig.notional <= risk.max_order_notional * (1 + 1e-9) + 1e-6, sig
    assert all(n <= risk.max_orders_per_cycle for n in per_cycle.values()), per_cycle
    account = await runtime.broker.account()
    positions = [p for p in await runtime.broker.positions() if abs(p.qty) > 1e-9]
    if not risk.allow_short:
        assert all(p.qty > 0 for p in positions), positions
    assert len(positions) <= risk.max_open_positions
    cap = risk.max_position_pct / 100 * account.equity
    for p in positions:
        assert abs(p.qty) * p.market_price <= cap * 1.05 + 1e-6, (p, cap)
    return sum(per_cycle.values())


@settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(content=REPLIES)
def test_any_model_reply_never_crashes_the_daemon_nor_breaks_the_limits(content: str) -> None:
    async def scenario() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            settings_ = _sim_settings(
                Path(tmp), PERUN_RISK__MAX_ORDER_NOTIONAL="3000", PERUN_RISK__MAX_POSITION_PCT="5"
            )
            runtime = await build_runtime(settings_, every_s=0.001, max_cycles=2,
                                          quote_interval_s=0.05)
            try:
                await _run_checked(runtime, ReplyAnalyst(content))
            finally:
                await runtime.close()

    asyncio.run(scenario())


_junk = st.one_of(
    st.integers(-5, 10**7).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "true", "false", "nan", "inf", "-inf", "1e309", "abc", "0", "-0",
                     " 5 ", "1.5", "0.01", "100", "manual", "auto", "threshold", "limit"]),
    st.text(max_size=6),
)
_plausible: dict[str, st.SearchStrategy[str]] = {
    "PERUN_TRADING__FRACTIONAL": st.sampled_from(["true", "false"]),
    "PERUN_TRADING__ORDER_TYPE": st.sampled_from(["market", "limit"]),
    "PERUN_TRADING__LIMIT_BAND_PCT": st.floats(0, 5).map(str),
    "PERUN_TRADING__HISTORY_BARS": st.integers(25, 200).map(str),
    "PERUN_TRADING__FREQUENCY_MINUTES": st.integers(1, 390).map(str),
    "PERUN_APPROVAL__MODE": st.sampled_from(["manual", "threshold", "auto"]),
    "PERUN_APPROVAL__AUTO_MIN_CONFIDENCE": st.floats(0, 1).map(str),
    "PERUN_APPROVAL__MAX_DRIFT_PCT": st.floats(0.01, 50).map(str),
    "PERUN_RISK__MAX_POSITION_PCT": st.floats(0.01, 100).map(str),
    "PERUN_RISK__MAX_OPEN_POSITIONS": st.integers(1, 500).map(str),
    "PERUN_RISK__MAX_ORDER_NOTIONAL": st.floats(0.01, 1e9).map(str),
    "PERUN_RISK__RISK_PER_TRADE_PCT": st.floats(0.01, 100).map(str),
    "PERUN_RISK__DEFAULT_STOP_PCT": st.floats(0.01, 50).map(str),
    "PERUN_RISK__MIN_CONFIDENCE": st.floats(0, 1).map(str),
    "PERUN_RISK__DAILY_LOSS_LIMIT_PCT": st.floats(0.01, 100).map(str),
    "PERUN_RISK__MAX_ORDERS_PER_CYCLE": st.integers(1, 500).map(str),
    "PERUN_RISK__MAX_QUOTE_AGE_S": st.floats(0.01, 1e6).map(str),
    "PERUN_RISK__ALLOW_SHORT": st.sampled_from(["true", "false"]),
    "PERUN_SIM__SEED": st.integers(-(2**31), 2**31).map(str),
    "PERUN_SIM__SPEED": st.floats(0.01, 100000).map(str),
    "PERUN_SIM__STARTING_CASH": st.floats(0.01, 1e12).map(str),
}
CONFIGS = st.dictionaries(
    st.sampled_from(sorted(_plausible)),
    st.just(""),
    max_size=10,
).flatmap(
    lambda keys: st.fixed_dictionaries(
        # mostly values within the documented ranges (so the daemon runs), some junk
        {k: st.integers(0, 7).flatmap(lambda i, k=k: _junk if i == 0 else _plausible[k])
         for k in keys}
    )
)


@settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(env=CONFIGS)
def test_any_config_is_refused_clearly_or_trades_within_its_limits(env: dict[str, str]) -> None:
    async def scenario() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                settings_ = _sim_settings(Path(tmp), **env)
            except ConfigError as exc:
                event("refused")
                assert str(exc).startswith("invalid configuration"), exc
                return
            runtime = await build_runtime(settings_, every_s=0.001, max_cycles=2,
                                          quote_interval_s=0.05)
            try:
                await _run_checked(runtime, EagerAnalyst())
            finally:
                await runtime.close()

    asyncio.run(scenario())


@pytest.fixture(autouse=True)
def _no_stray_perun_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith(("PERUN_", "APCA_")):
            monkeypatch.delenv(key)
    yield
