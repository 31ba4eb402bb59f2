"""The terminal over a real daemon in sim mode: real memory (SQLite in tmp_path), the sim
broker, and the real Ollama client talking to the loopback FakeOllama."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from perun_tui.config import Settings
from perun_tui.events import DaemonState
from perun_tui.models import SignalStatus, client_order_id_for
from perun_tui.tui.app import PerunApp, real_runtime
from perun_tui.tui.screens.confirm import ConfirmModal
from perun_tui.tui.screens.errors import ErrorsModal
from perun_tui.tui.widgets import reasoning as reasoning_module
from tests.fakes.ollama_server import FakeOllama, HttpError, Reply
from tests.sim import SIM_START

from .conftest import until

SIZE = (120, 40)
SENT = {SignalStatus.SUBMITTED, SignalStatus.PARTIALLY_FILLED, SignalStatus.FILLED}


def _idea(symbol: str, confidence: float) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "action": "buy",
        "confidence": confidence,
        "rationale": f"{symbol} is above both moving averages on rising volume.",
    }


def two_buys(request: dict[str, Any]) -> Reply:
    doc = {"market_view": "Constructive tape.", "signals": [_idea("AAPL", 0.9), _idea("NVDA", 0.8)]}
    return Reply(content=json.dumps(doc), thinking="AAPL and NVDA both trend up; buy both.")


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(default_reply=two_buys) as server:
        yield server


def sim_settings(tmp_path: Path, host: str) -> Settings:
    return Settings.model_validate(
        {
            "storage": {"path": str(tmp_path)},
            "trading": {"mode": "sim", "symbols": ["AAPL", "MSFT", "NVDA", "SPY"]},
            "approval": {"mode": "manual", "ttl_minutes": 1440},
            "llm": {"provider": "ollama", "host": host, "fallback": "none", "timeout_s": 10},
            "notify": {"bell": False},
            "sim": {"seed": 42, "speed": 30, "start": SIM_START},
        }
    )


def sim_app(settings: Settings) -> PerunApp:
    # one cycle at start-up, then none for an hour: the test decides what happens
    return PerunApp(settings, runtime_factory=real_runtime(every_s=3600))


async def test_approve_and_reject_through_keys_reach_the_database_and_broker(
    tmp_path: Path, ollama: FakeOllama
) -> None:
    app = sim_app(sim_settings(tmp_path, ollama.url))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(app.main.signals.pending) == 2, within=30)
        runtime = app.runtime
        first = app.main.signals.selected()
        assert first is not None and first.id == app.main.signals.pending[0].id
        # ages and TTLs are in the daemon's (simulated) time from the start, not in the
        # wall-clock time the screen used before the runtime existed
        assert app.main.signals.pending_table.shown(first.id, "ttl") not in ("expired", None)

        await pilot.press("a")
        await until(pilot, lambda: (d := app.main.signals.decision(first.id)) is not None
                    and d.status in SENT)
        stored = await runtime.memory.get_signal(first.id)
        assert stored is not None and stored.status in SENT
        assert stored.client_order_id == client_order_id_for(first.id, "sim")
        order = await runtime.broker.order_by_client_id(stored.client_order_id)
        assert order is not None and order.symbol == first.symbol
        await until(pilot, lambda: first.symbol in app.main.portfolio.positions, within=20)

        second = app.main.signals.selected()
        assert second is not None and second.id != first.id
        await pilot.press("r")
        await until(pilot, lambda: (d := app.main.signals.decision(second.id)) is not None
                    and d.status is SignalStatus.REJECTED)
        stored = await runtime.memory.get_signal(second.id)
        assert stored is not None and stored.status is SignalStatus.REJECTED
        assert await runtime.broker.order_by_client_id(client_order_id_for(second.id, "sim")) \
            is None
        assert app.main.signals.selected_id() is None
        assert app.screen.active_bindings["a"].enabled is False

        await pilot.press("q")
        await until(pilot, lambda: app._exit, within=10)
    assert app.return_code == 0
    assert app.daemon is not None and app.daemon.state is DaemonState.STOPPED


async def test_halt_asks_first_then_halts_and_persists(
    tmp_path: Path, ollama: FakeOllama
) -> None:
    app = sim_app(sim_settings(tmp_path, ollama.url))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.status.state is DaemonState.WAITING, within=30)
        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("enter")  # focused: Cancel
        await until(pilot, lambda: app.screen is app.main)
        assert app.daemon is not None and app.daemon.state is not DaemonState.HALTED

        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("tab", "enter")
        await until(pilot, lambda: app.main.status.state is DaemonState.HALTED)
        assert await app.runtime.memory.get_state("halted")
        await pilot.press("q")
        await until(pilot, lambda: app._exit, within=10)
    assert app.return_code == 0


async def test_restart_shows_the_same_pending_signals(tmp_path: Path, ollama: FakeOllama) -> None:
    settings = sim_settings(tmp_path, ollama.url)
    app = sim_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(app.main.signals.pending) == 2, within=30)
        before = [s.id for s in app.main.signals.pending]
        await pilot.press("q")
        await until(pilot, lambda: app._exit, within=10)

    ollama.default_reply = Reply(content=json.dumps({"market_view": "calm", "signals": []}))
    again = sim_app(settings)
    async with again.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: again.main.status.state is DaemonState.WAITING, within=30)
        assert [s.id for s in again.main.signals.pending] == before
        assert again.main.signals.selected_id() == before[0]
        await pilot.press("q")
        await until(pilot, lambda: again._exit, within=10)


async def test_the_app_survives_an_analyst_error_and_shows_it(tmp_path: Path) -> None:
    with FakeOllama(default_reply=lambda request: HttpError(500, "model runner crashed")) as srv:
        app = sim_app(sim_settings(tmp_path, srv.url))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: any("crashed" in e.message for e in app.main.errors)
                        or any("500" in e.message for e in app.main.errors), within=40)
            await until(pilot, lambda: app.main.status.state is DaemonState.WAITING)
            assert "failed" in str(app.main.reasoning.border_title)
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, ErrorsModal))
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.main)
            await pilot.press("q")
            await until(pilot, lambda: app._exit, within=10)
        assert app.return_code == 0


async def test_recent_decisions_are_back_after_a_restart(
    tmp_path: Path, ollama: FakeOllama
) -> None:
    settings = sim_settings(tmp_path, ollama.url)
    app = sim_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(app.main.signals.pending) == 2, within=30)
        rejected = app.main.signals.selected()
        assert rejected is not None
        await pilot.press("r")
        await until(pilot, lambda: app.main.signals.decision(rejected.id) is not None)
        await pilot.press("q")
        await until(pilot, lambda: app._exit, within=10)

    ollama.default_reply = Reply(content=json.dumps({"market_view": "calm", "signals": []}))
    again = sim_app(settings)
    async with again.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: again.main.signals.decision(rejected.id) is not None,
                    within=30)
        decision = again.main.signals.decision(rejected.id)
        assert decision is not None and decision.status is SignalStatus.REJECTED
        shown = again.main.signals.decisions_table.shown(rejected.id, "outcome")
        assert shown is not None and shown.startswith("rejected")
        await pilot.press("q")
        await until(pilot, lambda: again._exit, within=10)


async def test_older_reasoning_is_loaded_from_the_database(
    tmp_path: Path, ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the last KEEP cycles stay in memory; `[` past them reads the database."""
    monkeypatch.setattr(reasoning_module, "KEEP", 2)
    app = PerunApp(sim_settings(tmp_path, ollama.url), runtime_factory=real_runtime(every_s=0.2))
    async with app.run_test(size=SIZE) as pilot:
        reasoning = app.main.reasoning
        await until(pilot, lambda: (reasoning.shown_cycle or 0) >= 4, within=40)
        await pilot.press("p")  # no new cycles while paging back
        await until(pilot, lambda: app.main.status.state is DaemonState.PAUSED)
        await until(pilot, lambda: reasoning.shown_cycle is not None
                    and reasoning.markdown_source != "")
        assert len(reasoning.cycles) == 2
        oldest = reasoning.cycles[0]
        await pilot.press("left_square_bracket")  # in memory
        await until(pilot, lambda: reasoning.shown_cycle == oldest)
        await pilot.press("left_square_bracket")  # from the database
        await until(pilot, lambda: reasoning.shown_cycle == oldest - 1)
        assert "buy both" in reasoning.shown_text()  # the stored thinking
        assert "history" in str(reasoning.border_subtitle)
        await pilot.press("q")
        await until(pilot, lambda: app._exit, within=10)
    assert app.return_code == 0
