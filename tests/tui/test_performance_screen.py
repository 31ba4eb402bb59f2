"""Proposed tests/tui/test_performance_screen.py: `o` opens the screen over a real sim daemon."""

from pathlib import Path

from perun_tui.config import Settings
from perun_tui.tui.app import PerunApp, real_runtime
from perun_tui.tui.screens.performance import PerformanceScreen

from .conftest import until


async def test_o_opens_the_performance_screen(tmp_path: Path) -> None:
    settings = Settings.model_validate({
        "storage": {"path": str(tmp_path)}, "llm": {"provider": "rules"},
        "approval": {"mode": "auto"}, "risk": {"cooldown_minutes": 0},
        "notify": {"bell": False},
    })
    app = PerunApp(settings, runtime_factory=real_runtime(every_s=0.02, cycles=40))
    async with app.run_test(size=(120, 45)) as pilot:
        await until(pilot, lambda: app.runtime is not None and app.runtime.daemon.cycles_run >= 40,
                    within=60)
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, PerformanceScreen), within=10)
        await until(pilot, lambda: app.screen.report is not None, within=20)
        await pilot.pause()
        assert app.screen.report.period.snapshots >= 40
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, PerformanceScreen)
