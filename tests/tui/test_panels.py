"""The panels' finer behaviour, driven through the real app with the scripted daemon:
the header (halt reason, pause, the analyst at 80 columns), immediate command feedback,
the log under load, and the reasoning stream."""

from __future__ import annotations

from datetime import timedelta

from textual.widgets import Label

from perun_tui.events import (
    AnalysisFinished,
    AnalysisStarted,
    AnalystStatus,
    DaemonState,
    DaemonStateChanged,
    Level,
    LogEvent,
    Notification,
    ReasoningDelta,
    ScheduleUpdated,
)
from perun_tui.tui.app import PerunApp
from perun_tui.tui.demo import DEMO_NOW, DemoDaemon, demo_settings

from .conftest import demo_app, settle, until

SIZE = (120, 40)


def _header(app: PerunApp, part: str) -> str:
    return str(app.main.status.query_one(f"#{part}", Label).render())


async def test_the_header_says_why_it_is_halted_and_keeps_saying_it() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.status.state is DaemonState.WAITING)
        daemon.set_state(DaemonState.HALTED, "daily loss limit hit (-3.2%)")
        await settle(pilot)
        assert _header(app, "state") == "● halted (daily loss limit hit (-3.2%))"
        daemon.set_state(DaemonState.PAUSED, "paused by user")
        daemon.set_state(DaemonState.HALTED)  # resumed: halted again, no reason given
        await settle(pilot)
        assert "daily loss limit" in _header(app, "state")
        daemon.set_state(DaemonState.WAITING, "halt cleared")
        await settle(pilot)
        daemon.set_state(DaemonState.HALTED)
        await settle(pilot)
        assert _header(app, "state").strip() == "● halted"  # a new halt: no old reason


async def test_paused_shows_no_countdown() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.status.state is DaemonState.WAITING)
        daemon.bus.publish(ScheduleUpdated(DEMO_NOW + timedelta(minutes=5), DEMO_NOW))
        await settle(pilot)
        assert "next cycle" in _header(app, "schedule")
        await pilot.press("p")
        await settle(pilot)
        assert _header(app, "state").strip() == "● paused"
        assert _header(app, "schedule") == ""


async def test_pause_shows_at_once_without_waiting_for_the_bus() -> None:
    class Quiet(DemoDaemon):
        """Changes state without publishing it: only immediate feedback can show it."""

        def pause(self) -> None:
            self.calls.append(("pause", ""))
            self._state = DaemonState.PAUSED

        def resume(self) -> None:
            self.calls.append(("resume", ""))
            self._state = DaemonState.WAITING

    settings = demo_settings()
    daemon = Quiet(settings)
    app = PerunApp(settings, daemon=daemon, clock=daemon.clock)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.status.state is DaemonState.WAITING)
        await pilot.press("p")
        assert app.main.status.state is DaemonState.PAUSED
        assert app.screen.active_bindings["p"].binding.action == "resume"
        await pilot.press("p")
        assert app.main.status.state is DaemonState.WAITING


async def test_the_analyst_and_its_reason_are_condensed_at_80_columns() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.main.bridge is not None)
        daemon.bus.publish(AnalystStatus(
            "rules (fallback)", False,
            "Ollama not reachable at http://127.0.0.1:11434 — start it with `ollama serve` "
            "or set llm.host; using the rules analyst",
        ))
        await settle(pilot)
        label = app.main.status.query_one("#analyst", Label)
        assert str(label.render()) == "rules · Ollama down"
        assert label.region.right <= 80 and label.region.width >= len("rules · Ollama down")
        daemon.bus.publish(AnalystStatus(
            "rules (fallback)", False, "model qwen3:8b not found — pull it", "qwen3:8b"
        ))
        await settle(pilot)
        assert str(label.render()) == "rules · qwen3:8b missing"
        assert "pull it" in str(label.tooltip)


async def test_a_flood_of_log_lines_keeps_every_warning_and_says_what_it_skipped() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.bridge is not None)
        for i in range(600):
            daemon.bus.publish(LogEvent(Level.INFO, f"tick {i}"))
            if i % 100 == 50:
                daemon.bus.publish(LogEvent(Level.WARNING, f"slow quote {i}"))
        await settle(pilot)
        log = app.main.log_panel
        rendered = "\n".join(log.log_widget.lines)
        for i in range(50, 600, 100):
            assert f"slow quote {i}" in rendered
        assert "tick 599" in rendered
        assert len(log.log_widget.lines) <= 2 * log.per_frame  # not 600 rendered lines
        assert "not shown under load" in rendered
        assert sum(log.skipped.values()) > 0 and Level.WARNING not in log.skipped
        kept = [line.text for line in log.lines()]  # in memory, for the next filter change
        assert [t for t in kept if t.startswith("slow")] == [
            f"slow quote {i}" for i in range(50, 600, 100)
        ]


async def test_long_log_lines_end_at_a_word_with_an_ellipsis() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.main.bridge is not None)
        daemon.bus.publish(LogEvent(Level.INFO, "analysis 1 by rules: " + "word " * 40))
        await settle(pilot)
        last = app.main.log_panel.log_widget.lines[-1]
        assert last.endswith("word…")
        assert len(last) <= 80


async def test_reasoning_streams_into_one_widget_and_renders_markdown_when_done() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.main.bridge is not None)
        reasoning = app.main.reasoning
        daemon.bus.publish(AnalysisStarted(7, "qwen3:8b"))
        for i in range(40):
            daemon.bus.publish(ReasoningDelta(7, f"Paragraph {i} about the tape.\n\n", "thinking"))
        await settle(pilot)
        assert reasoning.streaming and reasoning.live_view.display
        assert not reasoning.scroll.display
        assert "Paragraph" not in reasoning.markdown_source  # no markdown while streaming
        await until(pilot, lambda: "Paragraph 39" in reasoning.live_view.text())
        daemon.bus.publish(AnalysisFinished(
            7, "qwen3:8b", "calm", 0, 3.1, tokens=519, prompt_tokens=456,
            completion_tokens=63, load_ms=48.0, tokens_per_s=45.2,
        ))
        await settle(pilot)
        assert not reasoning.streaming and reasoning.scroll.display
        assert "Paragraph 39" in reasoning.markdown_source
        assert reasoning.border_title == (
            "Reasoning · cycle 7 · 3.1 s · 456 in / 63 out · 45 tok/s"
        )
        assert reasoning.border_subtitle == "qwen3:8b · load 48 ms"


async def test_a_halt_whose_reason_was_coalesced_away_reads_it_from_the_daemon() -> None:
    app, daemon = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        # the demo is up (its own WAITING routed), and halted like a real daemon would be:
        # otherwise the screen's clock tick reads its state back and races the events
        await until(pilot, lambda: app.main.status.state is DaemonState.WAITING)
        daemon._state = DaemonState.HALTED
        daemon.halt_reason = "kill switch (k) pressed"
        daemon.bus.publish(DaemonStateChanged(DaemonState.HALTED, "kill switch (k) pressed"))
        daemon.bus.publish(DaemonStateChanged(DaemonState.HALTED))
        await settle(pilot)
        assert app.main.status.reason == "kill switch (k) pressed"


async def test_toasts_and_the_bell_follow_the_notify_settings() -> None:
    settings = demo_settings(notify={"bell": True, "toast_events": ["fills", "halts"],
                                     "bell_events": ["halts"]})
    daemon = DemoDaemon(settings)
    app = PerunApp(settings, daemon=daemon, clock=daemon.clock)
    rings: list[int] = []
    async with app.run_test(size=SIZE) as pilot:
        app.bell = lambda: rings.append(1)  # type: ignore[method-assign]
        await until(pilot, lambda: app.main.bridge is not None)
        daemon.bus.publish(Notification("Filled", "BUY AAPL 8 @ 229.85", Level.INFO, ("fill",)))
        daemon.bus.publish(Notification("Pending", "BUY NVDA 12", Level.INFO, ("pending",)))
        await settle(pilot)
        assert [str(n.message) for n in app._notifications] == ["BUY AAPL 8 @ 229.85"]
        assert rings == []
        daemon.bus.publish(Notification("Halted", "kill switch", Level.ERROR, ("halt",)))
        await settle(pilot)
        assert "kill switch" in [str(n.message) for n in app._notifications]
        assert rings == [1]


def test_the_size_classes_set_before_compose_are_the_ones_textual_sets() -> None:
    """MainScreen sets its breakpoint classes before the first styling (so the first
    resize does not restyle the whole screen): they must be exactly Textual's."""
    screen = demo_app()[0].main
    for width, height in ((80, 24), (99, 29), (100, 30), (120, 40), (250, 80)):
        screen.size_classes(width, height)
        expected = screen._get_breakpoint_classes(
            width, screen.HORIZONTAL_BREAKPOINTS or []
        ) | screen._get_breakpoint_classes(height, screen.VERTICAL_BREAKPOINTS or [])
        names = {name for _, name in [*(screen.HORIZONTAL_BREAKPOINTS or []),
                                      *(screen.VERTICAL_BREAKPOINTS or [])]}
        assert set(screen.classes) & names == expected, (width, height)
