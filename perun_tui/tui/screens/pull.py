"""Pulling a missing Ollama model, with a progress bar (``ollama pull`` from the screen).

The download runs as a worker calling the daemon's ``pull_model(on_progress)``; each
progress step comes back as a message and moves the bar (its status text above it, the
fraction when the server reports byte counts, an indeterminate bar otherwise).
``escape`` cancels the worker, which stops the download. The modal is dismissed with
what happened, for a toast.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Label, ProgressBar, Static
from textual.worker import Worker, WorkerState

ProgressCallback = Callable[[str, float | None], None]
PullCall = Callable[[ProgressCallback], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class PullOutcome:
    """How a pull ended: ``ok`` (the model is there), ``cancelled``, or failed."""

    message: str
    ok: bool = False
    cancelled: bool = False


class PullProgress(Message):
    def __init__(self, status: str, fraction: float | None) -> None:
        super().__init__()
        self.status = status
        self.fraction = fraction


class PullModal(ModalScreen[PullOutcome]):
    """Runs the pull and shows its progress; ``escape`` cancels it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel the download", id="pull-cancel")
    ]
    TOTAL = 1000

    def __init__(self, model: str, host: str, pull: PullCall) -> None:
        super().__init__(classes="pull")
        self.model = model
        self.host = host
        self._pull = pull
        self._worker: Worker[str] | None = None
        self.steps: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Pulling {self.model}", id="dialog-title")
            yield Static(f"from {self.host}", id="dialog-body", markup=False)
            yield Label("starting…", id="pull-status", markup=False)
            yield ProgressBar(total=None, show_eta=False, id="pull-bar")
            yield Label("escape cancels the download", id="pull-hint")

    def on_mount(self) -> None:
        self._worker = self.run_worker(
            self._run(), name="pull", group="pull", exclusive=True, exit_on_error=False
        )

    async def _run(self) -> str:
        return await self._pull(self._progress)

    def _progress(self, status: str, fraction: float | None) -> None:
        """Called on the event loop, inside the download: it only posts."""
        self.post_message(PullProgress(status, fraction))

    def on_pull_progress(self, message: PullProgress) -> None:
        if not self.steps or self.steps[-1] != message.status:
            self.steps.append(message.status)
        self.query_one("#pull-status", Label).update(message.status or "…")
        bar = self.query_one("#pull-bar", ProgressBar)
        if message.fraction is None:
            bar.update(total=None)
        else:
            bar.update(total=self.TOTAL, progress=round(message.fraction * self.TOTAL))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker:
            return
        if event.state is WorkerState.SUCCESS:
            result = str(event.worker.result or "")
            ready = result.endswith("is ready")
            self.dismiss(PullOutcome(result or f"{self.model} pulled", ok=ready))
        elif event.state is WorkerState.ERROR:
            error = event.worker.error
            self.dismiss(PullOutcome(f"pulling {self.model} failed: {error}"))
        elif event.state is WorkerState.CANCELLED:
            self.dismiss(
                PullOutcome(f"pulling {self.model} was cancelled", cancelled=True)
            )

    def action_cancel(self) -> None:
        if self._worker is not None and self._worker.is_running:
            self.query_one("#pull-status", Label).update("cancelling…")
            self._worker.cancel()
        else:
            self.dismiss(PullOutcome(f"pulling {self.model} was cancelled", cancelled=True))
