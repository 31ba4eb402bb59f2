"""The Perun terminal (Textual). The only package that imports ``textual``."""

from __future__ import annotations

from perun_tui.tui.app import PerunApp, run_tui

__all__ = ["PerunApp", "run_tui"]
