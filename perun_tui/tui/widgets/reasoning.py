"""Reasoning panel: the analyst's text streaming live as markdown, one document per cycle.

Text arrives already batched: the bridge merges the deltas of one frame (at most ~10 a
second, fewer under load), and each frame's text is one awaited ``Markdown.append()``. So
appends never queue up behind the widget, and their cost counts towards the frame budget
that paces the bridge. The last ``KEEP`` cycles stay in memory; ``[`` and ``]`` page
through them while the live cycle keeps recording in the background.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Markdown

from perun_tui.events import AnalysisFinished

KEEP = 20
SOFT_BREAK = 600
MAX_DOC_CHARS = 16_000
"""Per cycle. Markdown re-renders the last block on every append, so an unbounded
document (a runaway model) would make each append slower; the full reply is in the
database either way."""


@dataclass(slots=True)
class _Doc:
    cycle: int
    analyst: str = ""
    started_at: datetime | None = None
    started_mono: float | None = None  # real elapsed time, whatever the daemon clock does
    elapsed_s: float | None = None
    tokens: int | None = None
    error: str | None = None
    finished: bool = False
    channel: str = ""
    fenced: bool = False
    parts: list[str] = field(default_factory=list)
    size: int = 0
    run: int = 0  # characters since the last paragraph break

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, channel: str, text: str) -> str:
        """Append a delta; returns the markdown fragment to write (with any separator)."""
        fragment = ""
        if channel != self.channel:
            if self.fenced:
                fragment += "\n```\n"
                self.fenced = False
            if channel == "thinking":
                fragment += "\n*thinking…*\n\n" if self.size else "*thinking…*\n\n"
            elif self.size:
                fragment += "\n\n---\n\n"
            if channel != "thinking" and text.lstrip()[:1] in ("{", "["):
                fragment += "```json\n"
                self.fenced = True
            self.channel = channel
        fragment += self._soft_breaks(text)
        return self._push(fragment)

    def _soft_breaks(self, text: str) -> str:
        """Break runaway paragraphs: Markdown re-renders the whole last block on every
        append, so a model that never starts a new paragraph would make each append
        slower. Outside code blocks, a paragraph longer than ``SOFT_BREAK`` characters is
        split at a space."""
        cut = text.rfind("\n\n")
        if cut >= 0:
            self.run = len(text) - cut - 2
            return text
        self.run += len(text)
        if self.fenced or self.run <= SOFT_BREAK:
            return text
        space = text.rfind(" ")
        if space < 0:
            return text
        self.run = len(text) - space - 1
        return text[:space] + "\n\n" + text[space + 1 :]

    def finish(self, event: AnalysisFinished) -> str:
        self.finished = True
        self.elapsed_s = event.elapsed_s
        self.tokens = event.tokens
        self.analyst = event.analyst or self.analyst
        self.error = event.error
        fragment = ""
        if self.fenced:
            fragment += "\n```\n"
            self.fenced = False
        if event.error:
            fragment += "\n\n**Analysis failed** — no signals this cycle:\n\n```text\n"
            fragment += event.error.replace("```", "'''") + "\n```\n"
        elif event.market_view and event.market_view.strip() not in self.text:
            fragment += f"\n\n**Market view:** {event.market_view.strip()}\n"
        if not self.size and not event.error and not event.market_view:
            fragment += f"*{event.signals} idea(s); no reasoning text was streamed.*\n"
        return self._push(fragment)

    def _push(self, fragment: str) -> str:
        if not fragment or self.size >= MAX_DOC_CHARS:
            return ""
        room = MAX_DOC_CHARS - self.size
        if len(fragment) >= room:
            fragment = fragment[:room] + "\n\n*… (display limit reached; the full reply is "
            fragment += "stored with the cycle)*\n"
        self.parts.append(fragment)
        self.size += len(fragment)
        return fragment


class _FollowingMarkdown(Markdown):
    """Markdown that keeps its scrolling parent at the end as it grows (while ``follow``)."""

    follow = True

    def on_resize(self) -> None:
        parent = self.parent
        if self.follow and isinstance(parent, VerticalScroll):
            parent.scroll_end(animate=False, immediate=True)


class ReasoningPanel(Vertical):
    BORDER_TITLE = "Reasoning"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._docs: OrderedDict[int, _Doc] = OrderedDict()
        self._live: int | None = None
        self._shown: int | None = None
        self._now: datetime | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="reasoning-scroll"):
            yield _FollowingMarkdown("*Waiting for the first analysis…*", id="reasoning-md")

    @property
    def markdown(self) -> _FollowingMarkdown:
        return self.query_one("#reasoning-md", _FollowingMarkdown)

    @property
    def shown_cycle(self) -> int | None:
        return self._shown

    @property
    def cycles(self) -> list[int]:
        return list(self._docs)

    def shown_text(self) -> str:
        doc = self._docs.get(self._shown) if self._shown is not None else None
        return doc.text if doc is not None else ""

    # ------------------------------------------------------------------ updates

    def _doc(self, cycle: int) -> _Doc:
        doc = self._docs.get(cycle)
        if doc is None:
            doc = self._docs[cycle] = _Doc(cycle)
            while len(self._docs) > KEEP:
                self._docs.popitem(last=False)
        return doc

    async def start(self, cycle: int, analyst: str, at: datetime) -> None:
        doc = self._doc(cycle)
        doc.analyst = analyst
        doc.started_at = at
        doc.started_mono = time.monotonic()
        follow = self._shown is None or self._shown == self._live
        self._live = cycle
        if follow:
            await self.show(cycle)
        self._retitle()

    async def append(self, cycle: int, channel: str, text: str) -> None:
        if cycle not in self._docs:
            await self.start(cycle, "", self._now or datetime.now().astimezone())
        fragment = self._doc(cycle).add(channel, text)
        if fragment and cycle == self._shown:
            await self._append(fragment)

    async def finish(self, event: AnalysisFinished) -> None:
        fragment = self._doc(event.cycle).finish(event)
        if fragment and event.cycle == self._shown:
            await self._append(fragment)
        self._retitle()

    async def _append(self, fragment: str) -> None:
        """Append to the shown document; keep following the end unless scrolled up."""
        scroll = self.query_one("#reasoning-scroll", VerticalScroll)
        markdown = self.markdown
        markdown.follow = scroll.scroll_y >= scroll.max_scroll_y - 1
        await markdown.append(fragment)

    async def show(self, cycle: int) -> None:
        """Display one cycle's document."""
        if cycle not in self._docs:
            return
        self._shown = cycle
        markdown = self.markdown
        markdown.follow = True
        await markdown.update(self._docs[cycle].text)
        self._retitle()

    async def step(self, delta: int) -> bool:
        """Show the previous (-1) or next (+1) cycle; False when there is none."""
        if self._shown is None or not self._docs:
            return False
        cycles = list(self._docs)
        i = cycles.index(self._shown) if self._shown in cycles else len(cycles) - 1
        j = i + delta
        if not 0 <= j < len(cycles):
            return False
        await self.show(cycles[j])
        return True

    def tick(self, now: datetime) -> None:
        self._now = now
        doc = self._docs.get(self._shown) if self._shown is not None else None
        if doc is not None and not doc.finished:
            self._retitle()

    def _retitle(self) -> None:
        doc = self._docs.get(self._shown) if self._shown is not None else None
        if doc is None:
            self.border_title = "Reasoning"
            return
        bits = [f"Reasoning · cycle {doc.cycle}"]
        if doc.elapsed_s is not None:
            bits.append(f"{doc.elapsed_s:.1f} s")
        elif doc.started_mono is not None:
            bits.append(f"{time.monotonic() - doc.started_mono:.0f} s")
        if doc.tokens:
            bits.append(f"{doc.tokens} tok")
        if doc.analyst:
            bits.append(doc.analyst)
        if doc.error:
            bits.append("failed")
        self.border_title = " · ".join(bits)
        if self._live is not None and self._shown != self._live:
            self.border_subtitle = f"history · live is cycle {self._live} · ]"
        else:
            self.border_subtitle = ""
