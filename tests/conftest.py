"""Every test gets its own user config and data directories: applying a suggestion with no
config file in use creates the user's perun.toml, and that must never be the real one."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _own_user_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(Path(home) / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(Path(home) / "data"))
