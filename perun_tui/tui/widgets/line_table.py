"""A keyed table drawn line by line, for the panel updated on every frame (market).

Textual's DataTable keys its render caches on a counter that every cell update bumps,
so changing one price re-renders every row (about 5 ms a frame for five symbols here).
:class:`LineTable` keeps one rendered strip per row and redraws only the rows whose
cells changed — a tick on one symbol repaints one line. It has no cursor and no focus:
it is for reading. The API matches :class:`~perun_tui.tui.widgets.table.CellTable`
(``reset``, ``write_row``, ``drop_row``, ``shown``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget

from perun_tui.tui.widgets.table import Cells
from perun_tui.tui.widgets.tones import tone

PAD = 1  # blank cells either side of a column, as DataTable draws them


class LineTable(Widget):
    DEFAULT_CSS = """
    LineTable { height: auto; }
    """

    def __init__(self, *, right: Iterable[str] = (), id: str | None = None) -> None:
        super().__init__(id=id)
        self.right = frozenset(right)
        self._columns: list[tuple[str, str]] = []  # (label, key)
        self._widths: dict[str, int] = {}
        self._fixed: frozenset[str] = frozenset()
        self._rows: dict[str, dict[str, tuple[str, str]]] = {}
        self._order: list[str] = []
        self._strips: dict[str, Strip] = {}
        self._header: Strip | None = None
        self._styles: dict[str, Style] = {}

    # ------------------------------------------------------------------ content

    def reset(
        self, columns: Iterable[tuple[str, str]], widths: Mapping[str, int] | None = None
    ) -> None:
        widths = widths or {}
        self._columns = list(columns)
        self._fixed = frozenset(widths)
        self._widths = {key: widths.get(key, cell_len(label)) for label, key in self._columns}
        self._rows.clear()
        self._order.clear()
        self._invalidate_all()
        self.refresh(layout=True)

    @property
    def columns(self) -> list[str]:
        return [key for _, key in self._columns]

    @property
    def rows(self) -> list[str]:
        return list(self._order)

    def write_row(self, row: str, cells: Cells) -> int:
        """Show ``cells`` in ``row`` (added at the end when new); only a row whose cells
        changed is drawn again. Returns how many cells changed."""
        current = self._rows.get(row)
        if current is None:
            current = self._rows[row] = {}
            self._order.append(row)
            self.refresh(layout=True)  # one line taller
        changed = 0
        wider = False
        for key in self._widths:
            value = cells.get(key)
            if value is None or current.get(key) == value:
                continue
            current[key] = value
            changed += 1
            width = cell_len(value[0])
            if key not in self._fixed and width > self._widths[key]:
                self._widths[key] = width
                wider = True
        if wider:
            self._invalidate_all()
            self.refresh()
        elif changed:
            self._strips.pop(row, None)
            y = self._order.index(row) + 1
            self.refresh(Region(0, y, self.size.width, 1))
        return changed

    def drop_row(self, row: str) -> None:
        if row in self._rows:
            del self._rows[row]
            self._order.remove(row)
            self._strips.clear()  # the rows below move up
            self.refresh(layout=True)

    @property
    def drawn_rows(self) -> set[str]:
        """Rows whose line is drawn and still valid (not to be rendered again)."""
        return set(self._strips)

    def shown(self, row: str, column: str) -> str | None:
        value = self._rows.get(row, {}).get(column)
        return None if value is None else value[0]

    def _invalidate_all(self) -> None:
        self._strips.clear()
        self._header = None
        self._styles.clear()

    # ------------------------------------------------------------------ drawing

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return 1 + len(self._order)

    def on_resize(self) -> None:
        self._invalidate_all()

    def _style(self, spec: str) -> Style:
        style = self._styles.get(spec)
        if style is None:
            style = self._styles[spec] = Style.parse(spec) if spec else Style()
        return style

    def _line(self, texts: list[tuple[str, str, str]]) -> Strip:
        """One line from (key, text, style) per column."""
        base = self.rich_style
        segments: list[Segment] = []
        for key, text, spec in texts:
            width = self._widths[key]
            if cell_len(text) > width:
                text = text[:width]
            gap = " " * (width - cell_len(text))
            body = gap + text if key in self.right else text + gap
            segments.append(Segment(" " * PAD, base))
            segments.append(Segment(body, base + self._style(spec)))
            segments.append(Segment(" " * PAD, base))
        return Strip(segments)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if y == 0:
            if self._header is None:
                muted = tone(self, "text-muted")
                self._header = self._line([(k, label, muted) for label, k in self._columns])
            return self._header.crop_extend(0, width, base)
        if not 0 < y <= len(self._order):
            return Strip.blank(width, base)
        row = self._order[y - 1]
        strip = self._strips.get(row)
        if strip is None:
            cells = self._rows[row]
            strip = self._line([(k, *cells.get(k, ("", ""))) for _, k in self._columns])
            self._strips[row] = strip
        return strip.crop_extend(0, width, base)
