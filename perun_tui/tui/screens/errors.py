"""Error details: the recent errors, newest first, as plain (escaped) text.

Toasts say what failed in a few words; this modal says where, when and what to do. It
never shows a traceback: those can carry locals, and locals can carry secrets.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from perun_tui.tui.format import et_time
from perun_tui.tui.messages import ErrorRecord
from perun_tui.tui.widgets.tones import tone


class ErrorsModal(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,e", "close", "Close", id="errors-close")
    ]

    def __init__(self, errors: list[ErrorRecord]) -> None:
        super().__init__()
        self._errors = errors

    def compose(self) -> ComposeResult:
        n = len(self._errors)
        with Vertical(id="errors-dialog"):
            yield Label(f"Errors ({n})" if n else "Errors", id="errors-title")
            with VerticalScroll(id="errors-body"):
                yield Static(self._render_errors(), id="errors-text")
            with Horizontal(id="dialog-buttons"):
                yield Button("Close", id="close", variant="default")

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    def _render_errors(self) -> Text:
        if not self._errors:
            return Text("No errors so far.", style="dim")
        out = Text()
        err = tone(self, "error")
        for i, record in enumerate(reversed(self._errors)):
            if i:
                out.append("\n\n")
            out.append(f"{et_time(record.at, True)} ET  ", style="dim")
            out.append(record.where, style=f"bold {err}".strip())
            out.append("\n")
            out.append(record.message)
            if record.detail:
                out.append("\n")
                out.append(record.detail, style="dim")
        return out

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)
