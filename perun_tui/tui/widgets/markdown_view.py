"""The reasoning panel's markdown view, in a module of its own: Textual's Markdown
widget brings markdown-it with it (tens of ms of imports), loaded when the first
analysis has finished rather than before the first frame."""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.widgets import Markdown


class FollowingMarkdown(Markdown):
    """Markdown that keeps its scrolling parent at the end as it grows (while ``follow``)."""

    follow = True

    def on_resize(self) -> None:
        parent = self.parent
        if self.follow and isinstance(parent, VerticalScroll):
            parent.scroll_end(animate=False, immediate=True)
