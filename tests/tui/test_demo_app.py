"""Driving the screen like a person, with a scripted daemon (fast and exact)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rich.text import Text

from perun_tui.events import (
    DaemonState,
    ErrorRaised,
    Level,
    LogEvent,
    QuotesUpdated,
    ReasoningDelta,
)
from perun_tui.models import Action, Quote, SignalStatus
from perun_tui.tui.app import PerunApp
from perun_tui.tui.demo import DEMO_NOW, DemoDaemon, demo_settings, stage
from perun_tui.tui.screens.confirm import ConfirmModal, TypedConfirmModal
from perun_tui.tui.screens.details import SignalDetailsModal
from perun_tui.tui.screens.errors import ErrorsModal
from perun_tui.tui.screens.help import HelpScreen
from perun_tui.tui.screens.main import COMMANDS
from perun_tui.tui.widgets.signals import PendingTable

from .conftest import demo_app, settle, until

SIZE = (120, 40)


def _enabled(app: PerunApp, key: str) -> bool | None:
    """True/False when the footer shows the key enabled/greyed, None when hidden."""
    binding = app.screen.active_bindings.get(key)
    return None if binding is None else binding.enabled


async def test_keys_are_greyed_without_a_selection() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.bridge is not None)
        await settle(pilot)
        assert app.main.signals.selected_id() is None
        assert _enabled(app, "a") is False
        assert _enabled(app, "r") is False
        assert _enabled(app, "enter") is False
        await pilot.press("a", "r", "enter", "A")
        await settle(pilot)
        assert daemon.calls == []
        assert app.screen is app.main  # nothing opened

        daemon.propose("NVDA", Action.BUY, 12, 0.82, "trend")
        await settle(pilot)
        assert app.main.signals.selected_id() is not None
        assert _enabled(app, "a") is True
        assert _enabled(app, "r") is True
        assert _enabled(app, "enter") is True


async def test_cursor_starts_on_the_oldest_pending_and_a_approves_it() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.bridge is not None)
        newer = daemon.propose("MSFT", Action.SELL, 6, 0.71, "trim", age_s=30)
        older = daemon.propose("NVDA", Action.BUY, 12, 0.82, "trend", age_s=120)
        await settle(pilot)
        # published newest first, but the table is oldest first with the cursor on it
        assert [s.id for s in app.main.signals.pending] == [newer.id, older.id]
        assert isinstance(app.focused, PendingTable)
        selected = app.main.signals.selected_id()
        assert selected is not None
        await pilot.press("a")
        await until(pilot, lambda: ("approve", selected) in daemon.calls)
        await settle(pilot)
        decision = app.main.signals.decision(selected)
        assert decision is not None and decision.status is SignalStatus.FILLED
        # the other one is now selected; r rejects it
        remaining = app.main.signals.selected_id()
        assert remaining is not None and remaining != selected
        await pilot.press("r")
        await until(pilot, lambda: ("reject", remaining) in daemon.calls)
        await settle(pilot)
        rejected = app.main.signals.decision(remaining)
        assert rejected is not None and rejected.status is SignalStatus.REJECTED
        assert app.main.signals.selected_id() is None
        assert _enabled(app, "a") is False


async def test_seeded_pending_signals_are_shown_oldest_first() -> None:
    """After a restart the daemon already holds pending signals: they show at once."""
    settings = demo_settings()
    daemon = DemoDaemon(settings)
    young = daemon.propose("MSFT", Action.SELL, 6, 0.71, "trim", age_s=10)
    old = daemon.propose("NVDA", Action.BUY, 12, 0.82, "trend", age_s=300)
    app = PerunApp(settings, daemon=daemon, clock=daemon.clock)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.bridge is not None)
        await settle(pilot)
        assert [s.id for s in app.main.signals.pending] == [old.id, young.id]
        assert app.main.signals.selected_id() == old.id


async def test_halt_asks_first_and_cancel_is_the_default() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.bridge is not None)
        await until(pilot, lambda: app.main.status.state is DaemonState.WAITING)
        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        buttons = list(app.screen.query("Button"))
        assert [b.id for b in buttons] == ["cancel", "confirm"]  # safe choice first
        assert app.focused is buttons[0]
        await pilot.press("enter")  # the default answer: cancel
        await until(pilot, lambda: app.screen is app.main)
        assert not [c for c in daemon.calls if c[0] == "halt"]

        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main)
        assert not [c for c in daemon.calls if c[0] == "halt"]

        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("tab", "enter")
        await until(pilot, lambda: any(c[0] == "halt" for c in daemon.calls))
        await settle(pilot)
        assert app.main.status.state is DaemonState.HALTED
        # now k clears the halt (asking again), and cycle-now/pause are not offered
        assert _enabled(app, "c") is False
        assert app.screen.active_bindings["k"].binding.action == "clear_halt"


async def test_pause_and_resume_share_p() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.status.state is DaemonState.WAITING)
        assert app.screen.active_bindings["p"].binding.action == "pause"
        await pilot.press("p")
        await settle(pilot)
        assert app.main.status.state is DaemonState.PAUSED
        assert app.screen.active_bindings["p"].binding.action == "resume"
        await pilot.press("p")
        await settle(pilot)
        assert [c[0] for c in daemon.calls] == ["pause", "resume"]
        await pilot.press("c")
        assert ("run_now", "") in daemon.calls


async def test_details_modal_shows_rationale_and_approves() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await stage(app, daemon)
        selected = app.main.signals.selected()
        assert selected is not None
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, SignalDetailsModal))
        rationale = app.screen.query_one("#details-rationale")
        assert selected.rationale in str(rationale.render())
        sizing = str(app.screen.query_one("#details-sizing").render())
        assert sizing  # rendered without error
        await pilot.press("a")
        await until(pilot, lambda: ("approve", selected.id) in daemon.calls)
        assert app.screen is app.main


async def test_help_lists_every_key() -> None:
    app, _ = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        rows = app.screen._rows
        helps = [what for _, what, _ in rows]
        for command in COMMANDS:
            assert command.help in helps
        keys = {key for key, _, _ in rows}
        for key in ("a", "r", "A", "c", "p", "k", "l", "e", "[", "]", "?", "enter",
                    "q / ctrl+c", "ctrl+p"):
            assert key in keys
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main)


async def test_log_level_cycles_and_filters() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.bridge is not None)
        daemon.bus.publish(LogEvent(Level.DEBUG, "debug detail"))
        daemon.bus.publish(LogEvent(Level.INFO, "info line"))
        daemon.bus.publish(LogEvent(Level.ERROR, "error line"))
        await settle(pilot)
        log = app.main.log_panel
        assert log.level is Level.INFO
        shown = lambda: log.log_widget.lines  # noqa: E731
        assert any("info line" in s for s in shown())
        assert not any("debug detail" in s for s in shown())
        await pilot.press("l", "l")  # info → warning → error
        await settle(pilot)
        assert log.level is Level.ERROR
        assert any("error line" in s for s in shown())
        assert not any("info line" in s for s in shown())
        await pilot.press("l")  # → debug
        await settle(pilot)
        assert any("debug detail" in s for s in shown())


async def test_errors_toast_and_the_details_modal_escapes_markup() -> None:
    app, daemon = demo_app()
    nasty = "broker said [bold red]NO[/] — see [link=http://x]here[/link]"
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.bridge is not None)
        daemon.bus.publish(ErrorRaised("order submit", nasty, "check the [b]account[/b]"))
        await settle(pilot)
        assert app._notifications  # a toast was shown
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ErrorsModal))
        body = app.screen.query_one("#errors-text").render()
        plain = body.plain if isinstance(body, Text) else str(body)
        assert "[bold red]NO[/]" in plain and "[b]account[/b]" in plain
        assert "Traceback" not in plain
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main)


async def test_app_survives_an_analyst_error_and_shows_it() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.bridge is not None)
        daemon.publish_cycle(12, error="Ollama returned HTTP 500: model crashed")
        await settle(pilot)
        assert "failed" in str(app.main.reasoning.border_title)
        assert any("HTTP 500" in e.message for e in app.main.errors)
        # still responsive: the next cycle streams normally
        daemon.publish_cycle(13)
        await settle(pilot)
        assert app.main.reasoning.shown_cycle == 13
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert app.main.reasoning.shown_cycle == 12
        assert "Analysis failed" in app.main.reasoning.shown_text()


async def test_a_crashing_daemon_is_reported_not_fatal() -> None:
    class Crashing(DemoDaemon):
        async def run(self) -> None:
            raise RuntimeError("database is locked [sic]")

    settings = demo_settings()
    daemon = Crashing(settings)
    app = PerunApp(settings, daemon=daemon, clock=daemon.clock)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: bool(app.main.errors))
        assert "database is locked [sic]" in app.main.errors[-1].message
        assert app.main.status.state is DaemonState.STOPPED
        await pilot.press("q")
        await until(pilot, lambda: app._exit)
    assert app.return_code == 0


async def test_quit_stops_the_daemon_then_exits_zero() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.status.state is DaemonState.WAITING)
        await pilot.press("q")
        await until(pilot, lambda: app._exit)
    assert ("stop", "") in daemon.calls
    assert daemon.state is DaemonState.STOPPED
    assert app.return_code == 0


async def test_ctrl_c_quits_gracefully_too() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.status.state is DaemonState.WAITING)
        await pilot.press("ctrl+c")
        await until(pilot, lambda: app._exit)
    assert ("stop", "") in daemon.calls
    assert app.return_code == 0


async def test_live_mode_asks_for_a_typed_confirmation_before_starting() -> None:
    settings = demo_settings(trading={"mode": "live", "live_confirm": True})
    daemon = DemoDaemon(settings)
    app = PerunApp(settings, daemon=daemon, clock=daemon.clock)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, TypedConfirmModal))
        assert app.main.bridge is None  # nothing started yet
        assert "-live" in app.main.query_one("#mode").classes
        confirm = app.screen.query_one("#confirm")
        await pilot.press(*"live")
        assert confirm.disabled  # case matters
        await pilot.press("backspace", "backspace", "backspace", "backspace", *"LIVE")
        assert not confirm.disabled
        await pilot.press("enter")
        await until(pilot, lambda: daemon.state is DaemonState.WAITING)


async def test_live_mode_declined_exits_without_starting() -> None:
    settings = demo_settings(trading={"mode": "live", "live_confirm": True})
    daemon = DemoDaemon(settings)
    app = PerunApp(settings, daemon=daemon, clock=daemon.clock)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, TypedConfirmModal))
        await pilot.press("escape")
        await until(pilot, lambda: app._exit)
    assert daemon.state is DaemonState.STARTING
    assert app.return_code == 1


async def test_command_palette_offers_the_same_actions() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await stage(app, daemon)
        names = [name for name, _, _ in app.main.palette_commands()]
        assert {"Approve", "Reject", "Approve all", "Halt", "Pause", "Details"} <= set(names)
        await pilot.press("ctrl+p")
        await settle(pilot)
        await pilot.press(*"approve all")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("tab", "enter")
        await until(pilot, lambda: sum(c[0] == "approve" for c in daemon.calls) == 2)


async def test_quotes_update_cells_without_rebuilding_rows() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.bridge is not None)
        table = app.main.market.table
        keys_before = list(table.rows)
        now = DEMO_NOW
        # three 15-minute bars; the last one ticks twice (its point follows the price)
        for minutes, price in ((0, 100.0), (15, 101.0), (30, 98.0), (31, 99.5)):
            daemon.bus.publish(QuotesUpdated({"AAPL": Quote(
                symbol="AAPL", ts=now + timedelta(minutes=minutes), bid=price, ask=price,
                last=price, volume=1000)}))
            await settle(pilot)
        assert list(table.rows) == keys_before
        assert table.shown("AAPL", "last") == "99.50"
        assert str(table.shown("AAPL", "chg")).startswith("-0.5")
        assert len(str(table.shown("AAPL", "trend"))) == 3
        # a change in one row invalidates that row's line only
        await pilot.pause()
        assert {"AAPL", "MSFT", "NVDA"} <= table.drawn_rows
        assert table.write_row("AAPL", {"last": ("99.60", "")}) == 1
        assert "AAPL" not in table.drawn_rows and {"MSFT", "NVDA"} <= table.drawn_rows
        assert table.write_row("MSFT", {"sym": ("MSFT", "")}) == 0  # unchanged: nothing


async def test_change_and_trend_are_seeded_from_the_daemons_bars() -> None:
    """After a restart the panel does not start flat at +0.0%: the previous close and
    the recent bars come from the daemon once its first cycle has them."""
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.bridge is not None)
        daemon.bus.publish(QuotesUpdated({"AAPL": Quote(
            symbol="AAPL", ts=DEMO_NOW, bid=231.4, ask=231.4, last=231.4, volume=1000)}))
        await settle(pilot)
        table = app.main.market.table
        assert table.shown("AAPL", "chg") == "+0.0%"
        daemon.make_bars()
        prev_close = daemon.bars["AAPL"][-1].close
        daemon.publish_cycle(1)
        await settle(pilot)
        await until(pilot, lambda: app.main.market.seeded)
        expected = (231.4 / prev_close - 1) * 100
        assert table.shown("AAPL", "chg") == f"{expected:+.1f}%"
        assert len(str(table.shown("AAPL", "trend"))) == 9  # 8 bars + live


async def test_reasoning_streams_and_previous_cycles_are_reachable() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await stage(app, daemon)
        assert app.main.reasoning.shown_cycle == 11
        daemon.publish_cycle(12)
        daemon.bus.publish(ReasoningDelta(13, "thinking hard", "thinking"))
        await settle(pilot)
        assert app.main.reasoning.shown_cycle == 13
        await pilot.press("left_square_bracket", "left_square_bracket")
        await settle(pilot)
        assert app.main.reasoning.shown_cycle == 11
        assert "history" in str(app.main.reasoning.border_subtitle)
        await pilot.press("right_square_bracket", "right_square_bracket")
        await settle(pilot)
        assert app.main.reasoning.shown_cycle == 13


async def test_shift_a_approves_all_after_confirmation() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await stage(app, daemon)
        ids = [s.id for s in app.main.signals.pending]
        await pilot.press("A")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("enter")  # cancel: nothing approved
        await until(pilot, lambda: app.screen is app.main)
        assert not [c for c in daemon.calls if c[0] == "approve"]
        await pilot.press("A")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("tab", "enter")
        await until(pilot, lambda: [c[1] for c in daemon.calls if c[0] == "approve"] == ids)


async def test_a_crash_prints_no_locals() -> None:
    app, _ = demo_app()
    secret = "sk-THIS-IS-SECRET-123"

    async def boom() -> None:
        api_key = secret  # a local that must not be printed
        raise RuntimeError(f"failed near {len(api_key)} chars")

    printed: list[str] = []
    original = app._print_error_renderables

    def capture() -> None:
        printed.extend(str(r) for r in app._exit_renderables)
        original()

    app._print_error_renderables = capture  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):  # run_test re-raises the app's crash at the end
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.main.bridge is not None)
            app.main.action_errors = lambda: app.call_later(boom)  # type: ignore[method-assign]
            await pilot.press("e")
            await pilot.pause(0.2)
    assert app.return_code == 1
    rendered = " ".join(printed)
    assert "RuntimeError" in rendered
    assert secret not in rendered
