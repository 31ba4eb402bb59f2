"""The Perun terminal (Textual). The only package that imports ``textual``."""

from __future__ import annotations

import os

# Textual redraws on a timer that, once it has been idle, waits one to two periods
# before the next draw: at its default 60 Hz that is up to 33 ms between a key press
# and the screen answering under a flood of updates. At 120 Hz it is half that; the
# number of redraws still follows what changes (a flood is drawn at 10 frames a
# second). Set before Textual is imported; TEXTUAL_FPS in the environment wins.
os.environ.setdefault("TEXTUAL_FPS", "120")

from perun_tui.tui.app import PerunApp, run_tui

__all__ = ["PerunApp", "run_tui"]
