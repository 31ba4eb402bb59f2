"""Shared pieces for the TUI tests: apps wired to a scripted or a real sim daemon."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
from textual.pilot import Pilot

from perun_tui.config import Settings
from perun_tui.tui.app import PerunApp
from perun_tui.tui.demo import DemoDaemon, demo_settings

# Snapshots must not depend on the developer's terminal or locale.
os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
os.environ["LC_ALL"] = "C.UTF-8"


def demo_app(settings: Settings | None = None) -> tuple[PerunApp, DemoDaemon]:
    settings = settings or demo_settings()
    daemon = DemoDaemon(settings)
    return PerunApp(settings, daemon=daemon, clock=daemon.clock), daemon


async def settle(pilot: Pilot[None]) -> None:
    """Everything published so far is on screen."""
    app = pilot.app
    assert isinstance(app, PerunApp)
    if app.main.bridge is not None:
        await app.main.bridge.settled()
    await pilot.pause()


async def until(pilot: Pilot[None], predicate: Callable[[], bool], within: float = 15.0) -> None:
    """Let the app run until ``predicate`` holds; fail with a clear message otherwise."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await pilot.pause(0.02)


@pytest.fixture
def demo() -> tuple[PerunApp, DemoDaemon]:
    return demo_app()
