"""Tables that are updated cell by cell, at a bounded memory cost.

Every panel table (market, positions, pending signals, decisions) is keyed by row
(symbol or signal id) and column, and repainted many times a second with mostly the same
text. :class:`CellTable` remembers what each cell shows and writes only the cells whose
text or style changed — Textual then re-renders only what is on screen — and grows a
column only when a cell got wider (re-measuring every column on every tick is what
costs).

Its render caches are sized for a panel, not for a spreadsheet: Textual's DataTable
keeps up to 10,000 rendered cells and 1,000 rendered rows and lines, keyed by an update
counter that changes on every write, so a table updated ten times a second fills them
with renders that are never used again — tens of MB for nothing over a session.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.text import Text
from textual.widgets import DataTable

CELL_CACHE = 512
ROW_CACHE = 128

Cells = Mapping[str, tuple[str, str]]
"""Column key → (text, style) for one row."""


class CellTable(DataTable[Text]):
    """A DataTable written through :meth:`write_row` (diffed per cell)."""

    def __init__(self, *, right: Iterable[str] = (), **kwargs: object) -> None:
        """``right``: the column keys whose cells are right-aligned (numbers)."""
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.right = frozenset(right)
        self._fixed: frozenset[str] = frozenset()
        self._shown: dict[tuple[str, str], str] = {}
        # private to DataTable, but the only way to bound them (see the module doc)
        self._cell_render_cache.maxsize = CELL_CACHE
        for cache in (self._row_render_cache, self._row_renderable_cache, self._line_cache):
            cache.maxsize = ROW_CACHE

    def write_row(self, row: str, cells: Cells) -> int:
        """Show ``cells`` in ``row`` (added at the end when new); only changed cells are
        written. Columns the table does not have are ignored. Returns how many cells
        were written."""
        if row not in self.rows:
            self.add_row(*(Text("") for _ in self.columns), key=row)
        written = 0
        for col in self.columns:
            key = str(col.value)
            value = cells.get(key)
            if value is None:
                continue
            text, style = value
            stamp = f"{style}|{text}"
            previous = self._shown.get((row, key))
            if previous == stamp:
                continue
            self._shown[(row, key)] = stamp
            self.update_cell(
                row,
                key,
                Text(text, style=style, justify="right" if key in self.right else "left"),
                update_width=key not in self._fixed
                and (previous is None or len(stamp) > len(previous)),
            )
            written += 1
        return written

    def drop_row(self, row: str) -> None:
        if row in self.rows:
            self.remove_row(row)
        for cell in [c for c in self._shown if c[0] == row]:
            del self._shown[cell]

    def reset(
        self, columns: Iterable[tuple[str, str]], widths: Mapping[str, int] | None = None
    ) -> None:
        """Remove everything and set the columns: (label, key) pairs; ``widths`` fixes
        the width of some columns (never re-measured)."""
        widths = widths or {}
        self.clear(columns=True)
        self._shown.clear()
        self._fixed = frozenset(widths)
        for label, key in columns:
            self.add_column(label, key=key, width=widths.get(key))

    def shown(self, row: str, column: str) -> str | None:
        """The text a cell shows (as last written), or None."""
        stamp = self._shown.get((row, column))
        return None if stamp is None else stamp.split("|", 1)[1]
