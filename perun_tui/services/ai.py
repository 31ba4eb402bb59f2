"""Which analyst answers this cycle, and saying so plainly.

The preferred analyst (Ollama) is checked cheaply before each cycle. When it is not
available, ``llm.fallback`` decides: the rules analyst — labelled as such everywhere —
or no analysis at all. The LLM is never pretended to have answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from perun_tui.bus import EventBus
from perun_tui.config import Settings
from perun_tui.events import AnalystStatus, Level, LogEvent
from perun_tui.llm.base import AnalysisContext, AnalysisResult, Analyst, DeltaCallback


@dataclass
class AnalystChoice:
    analyst: Analyst | None
    label: str  # shown in the header: "qwen3:8b", "rules (Ollama down)", "none"
    detail: str


class AnalysisService:
    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        primary: Analyst,
        fallback: Analyst | None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.primary = primary
        self.fallback = fallback
        self._last_status: AnalystStatus | None = None

    async def choose(self) -> AnalystChoice:
        health = await self.primary.check()
        if health.ok:
            choice = AnalystChoice(self.primary, health.name, "")
            if self._last_status is not None and not self._last_status.available:
                self._log(Level.INFO, f"{health.name} is available again")
        elif self.fallback is not None:
            choice = AnalystChoice(
                self.fallback, "rules (fallback)", f"{health.detail}; using the rules analyst"
            )
        else:
            choice = AnalystChoice(
                None,
                "none",
                f'{health.detail}; llm.fallback = "none": no analysis until it is back',
            )
        status = AnalystStatus(
            name=choice.label,
            available=health.ok,
            detail=choice.detail,
            missing_model=health.name if health.missing_model else "",
        )
        if status != self._last_status:  # said once per change, not every cycle
            if choice.detail:
                self._log(Level.WARNING, choice.detail)
            self._last_status = status
            self.bus.publish(status)
        return choice

    async def pull(self, on_progress: Callable[[str, float | None], None]) -> str:
        """Pull the preferred analyst's model (Ollama only), then check it again."""
        pull = getattr(self.primary, "pull", None)
        if pull is None:
            return f"{self.primary.name} has no model to pull"
        health = await pull(lambda step: on_progress(step.status, step.fraction))
        await self.choose()
        return f"{health.name} is ready" if health.ok else health.detail

    def _log(self, level: Level, message: str) -> None:
        self.bus.publish(LogEvent(level=level, message=message, source="analyst"))

    async def analyze(
        self, choice: AnalystChoice, context: AnalysisContext, on_delta: DeltaCallback
    ) -> tuple[AnalysisResult, float]:
        if choice.analyst is None:
            return AnalysisResult(analyst="none", error=choice.detail), 0.0
        started = time.perf_counter()
        result = await choice.analyst.analyze(context, on_delta)
        return result, time.perf_counter() - started

    async def close(self) -> None:
        await self.primary.close()
        if self.fallback is not None and self.fallback is not self.primary:
            await self.fallback.close()
