"""Log panel: a bounded, level-coloured log with a level filter (``l`` cycles it)."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import RichLog

from perun_tui.events import Level
from perun_tui.tui.format import et_time
from perun_tui.tui.messages import LogLine
from perun_tui.tui.widgets.tones import tone

REFILL = 200
LEVELS = (Level.DEBUG, Level.INFO, Level.WARNING, Level.ERROR)
_RANK = {level: i for i, level in enumerate(LEVELS)}
_TONE = {Level.DEBUG: "text-muted", Level.INFO: "", Level.WARNING: "warning", Level.ERROR: "error"}


class LogPanel(Vertical):
    BORDER_TITLE = "Log"

    def __init__(self, max_lines: int = 1000, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._max_lines = max_lines
        self._lines: deque[LogLine] = deque(maxlen=max_lines)
        self._level = Level.INFO
        self.skipped = 0

    def compose(self) -> ComposeResult:
        log = RichLog(
            id="log", max_lines=self._max_lines, wrap=False, markup=False, highlight=False
        )
        log.can_focus = False
        yield log

    def on_mount(self) -> None:
        self._retitle()

    @property
    def level(self) -> Level:
        return self._level

    @property
    def log_widget(self) -> RichLog:
        return self.query_one("#log", RichLog)

    def lines(self) -> list[LogLine]:
        return list(self._lines)

    def add(self, lines: list[LogLine], skipped: int = 0) -> None:
        """Append one frame's lines with a single write (one render, one scroll)."""
        self.skipped += skipped
        floor = _RANK[self._level]
        texts: list[Text] = []
        if skipped:
            texts.append(Text(f"… {skipped} log line(s) skipped under load", style="dim"))
        for line in lines:
            self._lines.append(line)
            if _RANK[line.level] >= floor:
                texts.append(self._line_text(line))
        if texts:
            self.log_widget.write(Text("\n").join(texts))

    def cycle_level(self) -> Level:
        """Next filter level (debug → info → warning → error → debug).

        Re-renders only the newest ``REFILL`` matching lines, so the key answers at once
        even with a full log; older lines stay in memory for the next change.
        """
        self._level = LEVELS[(_RANK[self._level] + 1) % len(LEVELS)]
        floor = _RANK[self._level]
        texts: list[Text] = []
        for line in reversed(self._lines):
            if _RANK[line.level] >= floor:
                texts.append(self._line_text(line))
                if len(texts) >= REFILL:
                    break
        log = self.log_widget
        log.clear()
        if texts:
            log.write(Text("\n").join(reversed(texts)))
        self._retitle()
        return self._level

    def _retitle(self) -> None:
        self.border_title = f"Log · {self._level.value}+"

    def _line_text(self, line: LogLine) -> Text:
        style = tone(self, _TONE[line.level])
        text = Text(f"{et_time(line.at, seconds=True)} ", style="dim")
        text.append(f"{line.level.value.upper():7} ", style=style or "")
        text.append(line.text, style=style if line.level is not Level.INFO else "")
        return text
