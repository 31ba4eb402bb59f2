"""Help: every key the terminal answers to, generated from the bindings themselves."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

KeyRow = tuple[str, str, str]
"""(key as shown, what it does, when it is available)"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close", id="help-close")
    ]

    def __init__(self, rows: list[KeyRow], intro: str) -> None:
        super().__init__()
        self._rows = rows
        self._intro = intro

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            yield Label("Perun · keys", id="help-title")
            with VerticalScroll(id="help-body"):
                yield Static(Text(self._intro), id="help-intro")
                yield Static(self._table(), id="help-keys")
            with Horizontal(id="dialog-buttons"):
                yield Button("Close", id="close", variant="default")

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    def _table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_column(style="dim")
        for key, what, when in self._rows:
            table.add_row(key, what, when)
        return table

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)
