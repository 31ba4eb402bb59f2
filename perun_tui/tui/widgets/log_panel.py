"""Log panel: a bounded, level-coloured log with a level filter (``l`` cycles it).

The lines live in a :class:`TailLog` of fixed capacity: its scrollable height never
changes, so writing to it (or refilling it on ``l``) repaints the panel and nothing
else. A growing log (Textual's RichLog) changes its virtual size with every write
until it is full, and every such change re-lays out the whole screen (~30 ms here).

Under a flood, a frame can bring hundreds of lines for a panel that shows a handful:
only about twice the visible height is rendered per frame (the newest lines), warnings
and errors always among them, and a dim line says how many were skipped and of which
level — nothing is dropped silently. Every line is kept in memory (the newest
``max_lines``) for the next change of filter.

Lines never wrap: each is fitted to the panel's width at a word boundary, with "…",
and at narrow widths the time loses its seconds and the level is abbreviated.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from functools import cached_property

from rich.segment import Segment
from rich.text import Text
from textual.app import ComposeResult
from textual.cache import LRUCache
from textual.containers import Vertical
from textual.events import Resize
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from perun_tui.events import Level
from perun_tui.tui.format import et_time, fit
from perun_tui.tui.messages import LogLine
from perun_tui.tui.widgets.tones import tone

REFILL = 120
CAPACITY = 500
NARROW = 90  # below this many columns: short time and level
MIN_PER_FRAME = 20
LEVELS = (Level.DEBUG, Level.INFO, Level.WARNING, Level.ERROR)
_RANK = {level: i for i, level in enumerate(LEVELS)}
_TONE = {Level.DEBUG: "text-muted", Level.INFO: "", Level.WARNING: "warning", Level.ERROR: "error"}
_SHORT = {Level.DEBUG: "DBG", Level.INFO: "INF", Level.WARNING: "WRN", Level.ERROR: "ERR"}


def keep_newest(lines: list[LogLine], budget: int) -> tuple[list[LogLine], Counter[Level]]:
    """The newest ``budget`` lines with every warning and error among them (when they
    alone exceed the budget, the newest of them), in order; and what was left out."""
    if len(lines) <= budget:
        return lines, Counter()
    important = [i for i, line in enumerate(lines) if line.level in (Level.WARNING, Level.ERROR)]
    keep = set(important[-budget:])
    for i in range(len(lines) - 1, -1, -1):
        if len(keep) >= budget:
            break
        keep.add(i)
    hidden = Counter(line.level for i, line in enumerate(lines) if i not in keep)
    return [line for i, line in enumerate(lines) if i in keep], hidden


class TailLog(ScrollView):
    """The newest ``capacity`` lines, bottom-aligned, in a scrollable area whose size is
    fixed (the capacity): appending and refilling only repaint. Lines are single rows
    (fitted by the caller); while scrolled up, the view stays on the same lines."""

    DEFAULT_CSS = """
    TailLog { overflow-x: hidden; overflow-y: auto; }
    """

    def __init__(self, capacity: int = CAPACITY, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.capacity = capacity
        self._lines: deque[tuple[int, Text]] = deque(maxlen=capacity)
        self._seq = 0
        self._strips: LRUCache[tuple[int, int], Strip] = LRUCache(256)

    def on_mount(self) -> None:
        self._size_to(self.scrollable_content_region.width)
        self.scroll_end(animate=False, immediate=True)

    def on_resize(self, event: Resize) -> None:
        self._size_to(self.scrollable_content_region.width)
        self.scroll_end(animate=False, immediate=True)

    def _size_to(self, width: int) -> None:
        size = Size(max(0, width), self.capacity)
        if self.virtual_size != size:
            self.virtual_size = size
            self._strips.clear()

    @property
    def lines(self) -> list[str]:
        """The lines held, as plain text (oldest first)."""
        return [text.plain for _, text in self._lines]

    @property
    def following(self) -> bool:
        return self.scroll_y >= self.max_scroll_y - 1

    def write_lines(self, texts: list[Text]) -> None:
        """Append lines at the bottom (the oldest fall out beyond the capacity)."""
        if not texts:
            return
        following = self.following
        for text in texts:
            self._seq += 1
            self._lines.append((self._seq, text))
        if following:
            self.scroll_end(animate=False, immediate=True)
        else:  # keep the same lines in view: they moved up by len(texts)
            self.scroll_to(y=max(0, self.scroll_y - len(texts)), animate=False, immediate=True)
        self.refresh()

    def replace(self, texts: list[Text]) -> None:
        """Show these lines instead (a new filter, a new width); back to the end."""
        self._lines.clear()
        self._strips.clear()
        self.write_lines(texts)
        self.scroll_end(animate=False, immediate=True)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        style = self.rich_style
        top = min(int(self.scroll_y), self.max_scroll_y)
        index = top + y - (self.capacity - len(self._lines))
        if not 0 <= index < len(self._lines) or width <= 0:
            return Strip.blank(width, style)
        seq, text = self._lines[index]
        key = (seq, width)
        strip = self._strips.get(key)
        if strip is None:
            segments = Segment.apply_style(text.render(self.app.console), style)
            strip = Strip(list(segments)).crop_extend(0, width, style)
            self._strips[key] = strip
        return strip


class LogPanel(Vertical):
    BORDER_TITLE = "Log"

    def __init__(self, max_lines: int = 1000, *, id: str | None = None) -> None:
        """``max_lines``: how many lines are kept in memory for a change of filter."""
        super().__init__(id=id)
        self._lines: deque[LogLine] = deque(maxlen=max_lines)
        self._level = Level.INFO
        self._width = 0
        self.skipped: Counter[Level] = Counter()

    def compose(self) -> ComposeResult:
        log = TailLog(id="log")
        log.can_focus = False
        yield log

    def on_mount(self) -> None:
        self._retitle()

    def on_resize(self, event: Resize) -> None:
        width = self.content_region.width - 1  # the log's vertical scrollbar
        if width != self._width:
            self._width = width
            self._refill()  # fitted to the new width

    @property
    def level(self) -> Level:
        return self._level

    @cached_property  # one query: the widget is composed once
    def log_widget(self) -> TailLog:
        return self.query_one("#log", TailLog)

    def lines(self) -> list[LogLine]:
        return list(self._lines)

    @property
    def per_frame(self) -> int:
        """How many lines one frame renders at most: about twice the visible height."""
        return max(MIN_PER_FRAME, 2 * self.log_widget.size.height)

    def add(self, lines: list[LogLine], skipped: Mapping[Level, int] | None = None) -> None:
        """Append one frame's lines with a single write (one render, one scroll)."""
        self._lines.extend(lines)
        floor = _RANK[self._level]
        shown, hidden = keep_newest(
            [line for line in lines if _RANK[line.level] >= floor], self.per_frame
        )
        for level, n in (skipped or {}).items():
            if _RANK[level] >= floor:
                hidden[level] += n
        self.skipped.update(hidden)
        texts: list[Text] = []
        if hidden:
            texts.append(self._skipped_text(hidden))
        texts.extend(self._line_text(line) for line in shown)
        self.log_widget.write_lines(texts)

    def cycle_level(self) -> Level:
        """Next filter level (debug → info → warning → error → debug)."""
        self._level = LEVELS[(_RANK[self._level] + 1) % len(LEVELS)]
        self._refill()
        self._retitle()
        return self._level

    def _refill(self) -> None:
        """Re-render the newest ``REFILL`` matching lines (the key answers at once even
        with a full log; older lines stay in memory for the next change)."""
        floor = _RANK[self._level]
        texts: list[Text] = []
        for line in reversed(self._lines):
            if _RANK[line.level] >= floor:
                texts.append(self._line_text(line))
                if len(texts) >= REFILL:
                    break
        texts.reverse()
        self.log_widget.replace(texts)

    def _retitle(self) -> None:
        self.border_title = f"Log · {self._level.value}+"

    def _skipped_text(self, hidden: Counter[Level]) -> Text:
        total = sum(hidden.values())
        parts = ", ".join(f"{n} {level.value}" for level, n in _by_rank(hidden.items()))
        return Text(
            fit(f"… {total} line(s) not shown under load ({parts})", self._width), style="dim"
        )

    def _line_text(self, line: LogLine) -> Text:
        style = tone(self, _TONE[line.level])
        narrow = 0 < self._width < NARROW
        stamp = et_time(line.at, seconds=not narrow)
        level = _SHORT[line.level] if narrow else f"{line.level.value.upper():7}"
        text = Text(f"{stamp} ", style="dim")
        text.append(f"{level} ", style=style or "")
        room = self._width - len(stamp) - len(level) - 2 if self._width else 0
        text.append(fit(line.text, room), style=style if line.level is not Level.INFO else "")
        return text


def _by_rank(items: Iterable[tuple[Level, int]]) -> list[tuple[Level, int]]:
    return sorted(items, key=lambda item: -_RANK[item[0]])
