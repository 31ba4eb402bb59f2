"""Reasoning panel: the analyst's text streaming live, then as markdown, one per cycle.

While a cycle is being analysed its text streams into one widget: a ``Static`` showing
the tail that fits the panel ("tail -f"), repainted in place once per bridge frame — no
new widgets, no layout pass. Streaming into ``Markdown`` instead mounts a block widget
per paragraph and re-lays out the whole screen each time (tens of ms per paragraph
under a flood). When the analysis finishes, the cycle's document is rendered once as
full markdown, scrollable.

The last ``KEEP`` cycles stay in memory; ``[`` and ``]`` page through them while the
live cycle keeps recording in the background, and older cycles are loaded from the
database on demand (``add_history``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING

from rich.segment import Segment
from rich.text import Span, Text
from textual.app import ComposeResult
from textual.cache import LRUCache
from textual.containers import Vertical, VerticalScroll
from textual.strip import Strip
from textual.timer import Timer

if TYPE_CHECKING:
    from perun_tui.tui.widgets.markdown_view import FollowingMarkdown
from textual.widget import Widget

from perun_tui.events import AnalysisFinished

KEEP = 20
LIVE_INTERVAL_S = 0.2
"""The live tail is repainted at most five times a second: enough to watch it being
written, and a fifth of the repaints of a 10 Hz flood of deltas."""
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
    usage: str = ""  # "456 in / 63 out · 45 tok/s"
    load_ms: float | None = None
    error: str | None = None
    finished: bool = False
    channel: str = ""
    fenced: bool = False
    parts: list[str] = field(default_factory=list)
    size: int = 0
    run: int = 0  # characters since the last paragraph break
    raw: list[tuple[str, str]] = field(default_factory=list)  # (channel, text), live view
    raw_size: int = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, channel: str, text: str) -> str:
        """Append a delta; returns the markdown fragment to write (with any separator)."""
        self._add_raw(channel, text)
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

    def _add_raw(self, channel: str, text: str) -> None:
        if self.raw_size >= MAX_DOC_CHARS:
            return
        if self.raw and self.raw[-1][0] == channel:
            self.raw[-1] = (channel, self.raw[-1][1] + text)
        else:
            self.raw.append((channel, text))
        self.raw_size += len(text)

    def tail(self, chars: int) -> Text:
        """The newest ``chars`` characters of the streamed text, thinking in italics."""
        pieces: list[tuple[str, str]] = []
        left = chars
        for channel, text in reversed(self.raw):
            if left <= 0:
                break
            piece = text[-left:]
            left -= len(piece)
            pieces.append((piece, "italic" if channel == "thinking" else ""))
        out = Text()
        for piece, style in reversed(pieces):
            out.append(piece, style=style)
        return out

    def finish(self, event: AnalysisFinished) -> str:
        self.finished = True
        self.elapsed_s = event.elapsed_s
        self.tokens = event.tokens
        self.usage = usage_line(event)
        self.load_ms = event.load_ms
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


def stored_doc(
    cycle: int,
    *,
    analyst: str,
    elapsed_s: float,
    reasoning: str,
    reply: str,
    finished: AnalysisFinished,
) -> _Doc:
    """A cycle's document rebuilt from what the database keeps (older cycles): the
    rules analyst's reasoning is its reply; an LLM's is its thinking, then its reply."""
    doc = _Doc(cycle, analyst=analyst, elapsed_s=elapsed_s)
    if analyst.startswith("rules"):
        doc.add("content", reasoning or reply)
    else:
        if reasoning:
            doc.add("thinking", reasoning)
        if reply:
            doc.add("content", reply)
    doc.finish(finished)
    return doc


def usage_line(event: AnalysisFinished) -> str:
    """``456 in / 63 out · 45 tok/s`` (the load time goes to the subtitle)."""
    if event.prompt_tokens is None or event.completion_tokens is None:
        return f"{event.tokens} tok" if event.tokens else ""
    line = f"{event.prompt_tokens} in / {event.completion_tokens} out"
    if event.tokens_per_s:
        line += f" · {event.tokens_per_s:.0f} tok/s"
    return line


class LiveTail(Widget):
    """The last lines of the live cycle, already wrapped: drawn line by line and
    replaced in place (no re-wrap, no layout)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines: list[Text] = []
        # as the text streams, the lines scroll up: the same lines again, one row higher
        self._strips: LRUCache[tuple[str, tuple[Span, ...], int], Strip] = LRUCache(256)

    def show_lines(self, lines: list[Text]) -> None:
        self._lines = lines
        self.refresh()

    def text(self) -> str:
        return "\n".join(line.plain for line in self._lines)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if not 0 <= y < len(self._lines):
            return Strip.blank(width, base)
        line = self._lines[y]
        key = (line.plain, tuple(line.spans), width)
        strip = self._strips.get(key)
        if strip is None:
            segments = Segment.apply_style(line.render(self.app.console), base)
            strip = self._strips[key] = Strip(list(segments)).crop_extend(0, width, base)
        return strip


class ReasoningPanel(Vertical):
    BORDER_TITLE = "Reasoning"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._docs: OrderedDict[int, _Doc] = OrderedDict()
        self._live: int | None = None
        self._shown: int | None = None
        self._now: datetime | None = None
        self._dirty = False  # something to draw at the next flush()
        self._mode: bool | None = None  # streaming (True) or markdown (False) on screen
        self._painted_at = 0.0
        self._markdown: FollowingMarkdown | None = None
        self._paint_timer: Timer | None = None
        self._rendered: tuple[int, int] | None = None  # (cycle, size) in the markdown

    def compose(self) -> ComposeResult:
        yield LiveTail(id="reasoning-live")
        yield VerticalScroll(id="reasoning-scroll")

    def on_mount(self) -> None:
        self.scroll.display = False
        self.live_view.show_lines([Text("Waiting for the first analysis…", style="italic dim")])

    @property
    def markdown(self) -> FollowingMarkdown | None:
        """The markdown view, once a finished cycle has been shown."""
        return self._markdown

    @property
    def markdown_source(self) -> str:
        return self._markdown.source if self._markdown is not None else ""

    async def _markdown_view(self) -> FollowingMarkdown:
        if self._markdown is None:
            from perun_tui.tui.widgets.markdown_view import FollowingMarkdown

            self._markdown = FollowingMarkdown(id="reasoning-md")
            await self.scroll.mount(self._markdown)
        return self._markdown

    @cached_property  # one query: the widget is composed once
    def live_view(self) -> LiveTail:
        return self.query_one("#reasoning-live", LiveTail)

    @cached_property  # one query: the widget is composed once
    def scroll(self) -> VerticalScroll:
        return self.query_one("#reasoning-scroll", VerticalScroll)

    @property
    def shown_cycle(self) -> int | None:
        return self._shown

    @property
    def _shown_doc(self) -> _Doc | None:
        return self._docs.get(self._shown) if self._shown is not None else None

    @property
    def streaming(self) -> bool:
        """The live view (not the markdown) is on screen."""
        return self._mode is True

    @property
    def cycles(self) -> list[int]:
        return list(self._docs)

    def shown_text(self) -> str:
        doc = self._shown_doc
        return doc.text if doc is not None else ""

    # ------------------------------------------------------------------ updates

    def _doc(self, cycle: int) -> _Doc:
        doc = self._docs.get(cycle)
        if doc is None:
            doc = self._docs[cycle] = _Doc(cycle)
            self._forget()
        return doc

    def _forget(self) -> None:
        """Keep ``KEEP`` cycles: drop the oldest, but never the live or the shown one."""
        while len(self._docs) > KEEP:
            for cycle in self._docs:
                if cycle not in (self._live, self._shown):
                    del self._docs[cycle]
                    break
            else:
                return

    async def start(self, cycle: int, analyst: str, at: datetime) -> None:
        doc = self._doc(cycle)
        doc.analyst = analyst
        doc.started_at = at
        doc.started_mono = time.monotonic()
        follow = self._shown is None or self._shown == self._live
        self._live = cycle
        if follow:
            self._select(cycle)
        self._retitle()

    async def append(self, cycle: int, channel: str, text: str) -> None:
        if cycle not in self._docs:
            await self.start(cycle, "", self._now or datetime.now().astimezone())
        self._doc(cycle).add(channel, text)
        if cycle == self._shown:
            self._dirty = True

    async def finish(self, event: AnalysisFinished) -> None:
        doc = self._doc(event.cycle)
        doc.finish(event)  # takes the event's analyst when it names one
        if event.cycle == self._shown:
            self._select(event.cycle)  # the whole document, as markdown, once
        self._retitle()

    async def show(self, cycle: int) -> None:
        """Display one cycle: streaming (live, unfinished) or as markdown."""
        if cycle in self._docs:
            self._select(cycle)
            await self.flush()

    def _select(self, cycle: int) -> None:
        """Make ``cycle`` the shown one; drawn by the next ``flush()``."""
        self._shown = cycle
        self._dirty = True
        self._retitle()

    async def flush(self) -> None:
        """Draw what changed since the last flush, once: the screen calls it after each
        bridge frame, so a frame that finishes one cycle and starts the next (or brings
        a hundred deltas) costs one repaint, not one per event."""
        if not self._dirty:
            return
        self._dirty = False
        doc = self._shown_doc
        if doc is None:
            return
        streaming = not doc.finished
        if streaming is not self._mode:
            self._mode = streaming
            self.live_view.display = streaming
            self.scroll.display = not streaming
            if streaming:
                self.call_after_refresh(self._paint_live)  # once the view has its size
        if streaming:
            self._rendered = None
            self._paint_live_soon()
        elif self._rendered != (doc.cycle, doc.size):
            self._rendered = (doc.cycle, doc.size)
            markdown = await self._markdown_view()
            markdown.follow = True
            await markdown.update(doc.text)
            self.scroll.scroll_end(animate=False, immediate=True)

    def _paint_live_soon(self) -> None:
        """Repaint the live tail at most every ``LIVE_INTERVAL_S``, on a bridge frame (so
        it adds no screen refresh of its own); a timer catches up with the last text
        when no further frame comes."""
        if time.monotonic() - self._painted_at >= LIVE_INTERVAL_S:
            self._paint_live()
            return
        self._dirty = True  # the next frame's flush() paints it
        if self._paint_timer is None:
            self._paint_timer = self.set_timer(2 * LIVE_INTERVAL_S, self._paint_live)

    def on_resize(self) -> None:
        if self.streaming:
            self._paint_live()

    def _paint_live(self) -> None:
        """Show the tail of the live document that fits, in place (no layout pass)."""
        if self._paint_timer is not None:
            self._paint_timer.stop()
            self._paint_timer = None
        self._painted_at = time.monotonic()
        doc = self._shown_doc
        view = self.live_view
        width, height = view.content_region.width, view.content_region.height
        if doc is None or width <= 0 or height <= 0:
            return
        text = doc.tail(width * height * 2)
        lines = text.wrap(self.app.console, width, overflow="fold")
        view.show_lines(list(lines)[-height:])

    async def add_history(self, doc: _Doc) -> None:
        """A cycle older than those in memory (from the database): keep it, show it."""
        self._docs[doc.cycle] = doc
        ordered = sorted(self._docs.items())
        self._docs.clear()
        self._docs.update(ordered)
        await self.show(doc.cycle)
        self._forget()

    async def step(self, delta: int) -> bool:
        """Show the previous (-1) or next (+1) cycle; False when there is none in memory."""
        if self._shown is None or not self._docs:
            return False
        cycles = list(self._docs)
        i = cycles.index(self._shown) if self._shown in cycles else len(cycles) - 1
        j = i + delta
        if not 0 <= j < len(cycles):
            return False
        await self.show(cycles[j])
        return True

    @property
    def oldest_cycle(self) -> int | None:
        return next(iter(self._docs), None)

    def tick(self, now: datetime) -> None:
        self._now = now
        doc = self._shown_doc
        if doc is not None and not doc.finished:
            self._retitle()

    def _retitle(self) -> None:
        doc = self._shown_doc
        if doc is None:
            self.border_title = "Reasoning"
            self.border_subtitle = ""
            return
        bits = [f"Reasoning · cycle {doc.cycle}"]
        if doc.elapsed_s is not None:
            bits.append(f"{doc.elapsed_s:.1f} s")
        elif doc.started_mono is not None:
            bits.append(f"{time.monotonic() - doc.started_mono:.0f} s")
        if doc.usage:
            bits.append(doc.usage)
        if doc.error:
            bits.append("failed")
        self.border_title = " · ".join(bits)
        sub: list[str] = []
        if self._live is not None and self._shown != self._live:
            sub.append(f"history · live is cycle {self._live} · ]")
        if doc.analyst:
            sub.append(doc.analyst)
        if doc.load_ms:
            sub.append(f"load {doc.load_ms:.0f} ms")
        self.border_subtitle = " · ".join(sub)
