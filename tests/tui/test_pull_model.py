"""Pulling a missing model from the screen: the real app, the real daemon in sim mode and
the real ``ollama`` client against the loopback FakeOllama, which starts without the
configured model and streams ``/api/pull`` progress like Ollama does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from perun_tui.config import Settings
from perun_tui.tui.app import PerunApp, real_runtime
from perun_tui.tui.screens import pull as pull_module
from perun_tui.tui.screens.confirm import ConfirmModal
from perun_tui.tui.screens.pull import PullModal
from tests.fakes.ollama_server import FakeOllama
from tests.sim import SIM_START

from .conftest import until

SIZE = (120, 40)
MODEL = "qwen3:8b"


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models=[], pull_delay=0.05) as server:
        yield server


def settings_for(tmp_path: Path, host: str) -> Settings:
    return Settings.model_validate({
        "storage": {"path": str(tmp_path)},
        "trading": {"mode": "sim", "symbols": ["AAPL", "MSFT"]},
        "llm": {"provider": "ollama", "model": MODEL, "host": host, "fallback": "rules",
                "timeout_s": 10},
        "notify": {"bell": False},
        "sim": {"seed": 42, "speed": 30, "start": SIM_START},
    })


def toasts(app: PerunApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_a_missing_model_is_offered_once_and_pulled_with_progress(
    tmp_path: Path, ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[PullModal] = []

    class Recorded(PullModal):
        def on_mount(self) -> None:  # Textual calls PullModal.on_mount as well
            shown.append(self)

    monkeypatch.setattr(pull_module, "PullModal", Recorded)
    app = PerunApp(settings_for(tmp_path, ollama.url), runtime_factory=real_runtime(every_s=3600))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), within=30)
        # the safe choice is first and focused (and the modal is composed)
        await until(pilot, lambda: app.focused is not None and app.focused.id == "cancel")
        body = str(app.screen.query_one("#dialog-body").render())
        assert f"model {MODEL} not found on {ollama.url} — pull it now?" in body
        await pilot.press("tab", "enter")
        # the modal may come and go between two looks on a busy machine: record it
        await until(pilot, lambda: bool(shown), within=20)
        [modal] = shown
        await until(pilot, lambda: app.screen is app.main, within=20)
        assert "pulling manifest" in modal.steps and "success" in modal.steps
        assert any(step.startswith("pulling ") and step != "pulling manifest"
                   for step in modal.steps)  # the download itself, with byte counts
        assert MODEL in ollama.models
        await until(pilot, lambda: any(f"{MODEL} is ready" in t for t in toasts(app)))
        # the analyst is back: the header no longer offers a pull
        await until(pilot, lambda: not app.main.missing_model)
        assert app.screen.active_bindings["m"].enabled is False
        await pilot.press("q")
        await until(pilot, lambda: app._exit, within=10)
    assert app.return_code == 0


async def test_escape_cancels_the_pull_and_m_offers_it_again(
    tmp_path: Path, ollama: FakeOllama
) -> None:
    ollama.pull_delay = 1.0  # slow enough to cancel halfway
    app = PerunApp(settings_for(tmp_path, ollama.url), runtime_factory=real_runtime(every_s=3600))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), within=30)
        await pilot.press("escape")  # not now
        await until(pilot, lambda: app.screen is app.main)
        assert app.main.missing_model == MODEL
        await pilot.press("m")  # the key offers it again
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await until(pilot, lambda: app.focused is not None and app.focused.id == "cancel")
        await pilot.press("tab", "enter")
        await until(pilot, lambda: isinstance(app.screen, PullModal))
        modal = app.screen
        assert isinstance(modal, PullModal)
        await until(pilot, lambda: bool(modal.steps))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main, within=10)
        await until(pilot, lambda: any("cancelled" in t for t in toasts(app)))
        assert MODEL not in ollama.models
        assert app.main.missing_model == MODEL
        await pilot.press("q")
        await until(pilot, lambda: app._exit, within=10)
    assert app.return_code == 0
