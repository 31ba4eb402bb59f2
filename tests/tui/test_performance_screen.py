"""The performance screen: `o` opens it over a real sim daemon; apply, dismiss and undo by
key act on the real optimizer, database and config file."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from textual.app import App
from textual.widgets import DataTable, Footer, Static

from perun_tui.config import Settings, load_settings
from perun_tui.services.memory import Memory
from perun_tui.services.optimization import Optimizer
from perun_tui.services.suggestions import load_changes, load_dismissed
from perun_tui.tui.app import PerunApp, real_runtime
from perun_tui.tui.screens.confirm import ConfirmModal
from perun_tui.tui.screens.performance import CurveView, PerformanceScreen
from tests.integration.test_report import rising_market_with_bad_sells
from tests.sim import SIM_START

from .conftest import until


async def test_o_opens_the_performance_screen(tmp_path: Path) -> None:
    settings = Settings.model_validate({
        "storage": {"path": str(tmp_path)}, "llm": {"provider": "rules"},
        "approval": {"mode": "auto"}, "risk": {"cooldown_minutes": 0},
        "notify": {"bell": False}, "sim": {"start": SIM_START},
    })
    app = PerunApp(settings, runtime_factory=real_runtime(every_s=0.02, cycles=40))
    async with app.run_test(size=(120, 45)) as pilot:
        await until(pilot, lambda: app.runtime is not None and app.runtime.daemon.cycles_run >= 40,
                    within=60)
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, PerformanceScreen), within=10)
        screen = app.screen
        assert isinstance(screen, PerformanceScreen)
        await until(pilot, lambda: screen.refreshed_at is not None, within=20)
        await pilot.pause()
        assert screen.report is not None and screen.report.period.snapshots >= 40
        # its own footer: `a` applies here, it does not approve a signal
        footer = screen.query_one(Footer)
        keys = {b.binding.key: b.binding.description for b in screen.active_bindings.values()}
        assert keys["a"] == "Apply" and footer.display
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, PerformanceScreen)


class ScreenApp(App[None]):
    """Just the screen, over the real optimizer of a database filled by hand."""

    def __init__(self, optimizer: Optimizer) -> None:
        super().__init__()
        self.optimizer = optimizer

    def on_mount(self) -> None:
        self.push_screen(PerformanceScreen(self.optimizer))


def _settings(tmp_path: Path) -> tuple[Settings, Path]:
    config = tmp_path / "perun.toml"
    config.write_text("[risk]\nmin_confidence = 0.55  # the analyst's own gate\n")
    env = {
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_SIM__START": SIM_START,
        "PERUN_TRADING__SYMBOLS": "A,B",
    }
    return load_settings(config, env=env, use_dotenv=False), config


def text_of(widget: Static) -> str:
    """What a Static shows, as plain text (tables included)."""
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


def _rows(screen: PerformanceScreen) -> list[str]:
    table = screen.query_one("#perf-suggestions", DataTable)
    return [str(k.value) for k in table.rows]


async def test_apply_undo_and_dismiss_by_key(tmp_path: Path) -> None:
    settings, config = _settings(tmp_path)
    await rising_market_with_bad_sells(settings)  # sells at 0.6 all wrong, buys at 0.7 right
    async with await Memory.open(settings.database_path()) as memory:
        optimizer = Optimizer(memory, settings, settings_path=config)
        app = ScreenApp(optimizer)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, PerformanceScreen))
            screen = app.screen
            assert isinstance(screen, PerformanceScreen)
            await until(pilot, lambda: screen.refreshed_at is not None, within=20)
            await pilot.pause()
            report = screen.report
            assert report is not None
            thr = next(s for s in report.suggestions if s.key == "risk.min_confidence")
            advice = next(s for s in report.suggestions if s.key is None)

            # the highlighted suggestion's whole evidence and why it is not auto-applied
            table = screen.query_one("#perf-suggestions", DataTable)
            table.move_cursor(row=_rows(screen).index(thr.id))
            await pilot.pause()
            detail = text_of(screen.query_one("#perf-suggestion-detail", Static))
            assert "lost in 12 of 12 cases" in detail and "Raise risk.min_confidence" in detail
            assert "auto-apply: no, step larger than optimization.max_step_pct" in detail

            # apply: asks first (the safe choice focused), then writes the file
            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
            await pilot.click("#confirm")
            await until(pilot, lambda: bool(screen.report and screen.report.changes))
            (change,) = await load_changes(memory)
            assert (change.key, change.old, change.new, change.by) == (
                "risk.min_confidence", 0.55, 0.65, "user"
            )
            assert change.persisted_to == str(config) and change.in_force
            assert "min_confidence = 0.65  # the analyst's own gate" in config.read_text()
            assert settings.risk.min_confidence == 0.65
            assert thr.id not in _rows(screen)  # done: no longer suggested
            changes = text_of(screen.query_one("#perf-changes", Static))
            assert "in force" in changes
            overrides = text_of(screen.query_one("#perf-overrides", Static))
            assert overrides.startswith("Human overrides:")  # still shown next to changes

            # undo
            await pilot.press("u")
            await until(pilot, lambda: bool(screen.report and not screen.report.changes[-1]
                                            .in_force))
            (change,) = await load_changes(memory)
            assert change.reverted_by == "user" and change.state == "reverted"
            assert "min_confidence = 0.55  # the analyst's own gate" in config.read_text()
            assert settings.risk.min_confidence == 0.55
            assert screen.check_action("undo", ()) is None  # nothing left to undo: greyed

            # dismiss the advice: stored, and gone from the table; advice cannot be applied
            table.move_cursor(row=_rows(screen).index(advice.id))
            await pilot.pause()
            assert screen.check_action("apply", ()) is None
            await pilot.press("d")
            await until(pilot, lambda: advice.id not in _rows(screen))
            assert advice.id in await load_dismissed(memory)


async def test_the_chart_fits_its_container_at_80x24(tmp_path: Path) -> None:
    settings, config = _settings(tmp_path)
    await rising_market_with_bad_sells(settings)
    async with await Memory.open(settings.database_path()) as memory:
        app = ScreenApp(Optimizer(memory, settings, settings_path=config))
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, PerformanceScreen))
            screen = app.screen
            assert isinstance(screen, PerformanceScreen)
            await until(pilot, lambda: screen.refreshed_at is not None, within=20)
            await pilot.pause()
            chart = screen.query_one(CurveView)
            width = chart.content_size.width
            assert 0 < width < 80
            lines = str(chart.render()).splitlines()
            assert len(lines) == 13 and max(len(line) for line in lines) <= width
