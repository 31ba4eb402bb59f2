"""Snapshots of the screen (pytest-textual-snapshot). Deterministic: scripted daemon with
fixed data and seed, a frozen clock, fixed terminal sizes, no animations or blinking.

Review changes with the HTML report before accepting them with ``--snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from textual.pilot import Pilot

from perun_tui.tui.app import PerunApp
from perun_tui.tui.demo import DemoDaemon, stage, wait_for
from perun_tui.tui.screens.details import SignalDetailsModal
from perun_tui.tui.screens.help import HelpScreen

from .conftest import demo_app

SnapCompare = Callable[..., bool]


def _staged(
    app: PerunApp, daemon: DemoDaemon, *keys: str, until: type | None = None
) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run_before(pilot: Pilot[None]) -> None:
        await stage(app, daemon)
        if keys:
            await pilot.press(*keys)
        if until is not None:
            await wait_for(lambda: isinstance(app.screen, until))
        await pilot.pause()

    return run_before


def test_main_screen_120x40(snap_compare: SnapCompare) -> None:
    app, daemon = demo_app()
    assert snap_compare(app, terminal_size=(120, 40), run_before=_staged(app, daemon))


def test_main_screen_80x24(snap_compare: SnapCompare) -> None:
    app, daemon = demo_app()
    assert snap_compare(app, terminal_size=(80, 24), run_before=_staged(app, daemon))


def test_details_modal(snap_compare: SnapCompare) -> None:
    app, daemon = demo_app()
    run_before = _staged(app, daemon, "enter", until=SignalDetailsModal)
    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)


def test_help_screen(snap_compare: SnapCompare) -> None:
    app, daemon = demo_app()
    run_before = _staged(app, daemon, "question_mark", until=HelpScreen)
    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)
