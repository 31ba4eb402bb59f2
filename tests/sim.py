"""The synthetic market is a function of (seed, symbol, time) and the simulated clock
starts at the latest session by default, so a test that expects the rules analyst to
propose something would depend on the day it runs. Tests pin the session instead."""

from __future__ import annotations

from pathlib import Path

from perun_tui.config import Settings, load_settings

SIM_START = "2026-11-24"


def settings_for(tmp_path: Path, **env: str) -> Settings:
    """Sim settings for a daemon test: its own storage, the rules analyst, no cooldown,
    the pinned session; ``env`` adds or overrides (``PERUN_APPROVAL__MODE="auto"``)."""
    base = {
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_LLM__PROVIDER": "rules",
        "PERUN_RISK__COOLDOWN_MINUTES": "0",
        "PERUN_SIM__START": SIM_START,
    }
    base.update(env)
    return load_settings(env=base, cwd=tmp_path, use_dotenv=False)
