"""Confirmation modals. The safe choice is always first and focused."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class ConfirmModal(ModalScreen[bool]):
    """Ask before doing something consequential. ``escape`` or "Cancel" → False."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="confirm-cancel")
    ]

    def __init__(
        self, title: str, body: str, confirm_label: str, *, danger: bool = True
    ) -> None:
        super().__init__(classes="confirm")
        self._title = title
        self._body = body
        self._confirm_label = confirm_label
        self._danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self._title, id="dialog-title")
            yield Static(self._body, id="dialog-body", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="default")
                yield Button(
                    self._confirm_label,
                    id="confirm",
                    variant="error" if self._danger else "primary",
                )

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.dismiss(True)


class TypedConfirmModal(ModalScreen[bool]):
    """Confirmation that needs a word typed (going live types ``LIVE``)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="typed-cancel")
    ]

    def __init__(self, title: str, body: str, word: str, confirm_label: str) -> None:
        super().__init__(classes="confirm")
        self._title = title
        self._body = body
        self._word = word
        self._confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self._title, id="dialog-title")
            yield Static(self._body, id="dialog-body", markup=False)
            yield Input(placeholder=f"type {self._word} to continue", id="word")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="default")
                yield Button(self._confirm_label, id="confirm", variant="error", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#word", Input).focus()

    @on(Input.Changed, "#word")
    def _typed(self, event: Input.Changed) -> None:
        self.query_one("#confirm", Button).disabled = event.value.strip() != self._word

    @on(Input.Submitted, "#word")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self._word:
            self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        if self.query_one("#word", Input).value.strip() == self._word:
            self.dismiss(True)
