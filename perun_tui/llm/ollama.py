"""The Ollama analyst: one streamed, schema-constrained chat call per cycle.

Talks to Ollama through the official ``ollama.AsyncClient`` (always with a timeout: the
client's default is none). Each cycle sends the whole universe in one compact prompt
(:mod:`perun_tui.llm.prompt`) with the reply schema (:mod:`perun_tui.llm.schema`) as
``format``, streams thinking and content to ``on_delta`` in batches, and validates the
reply.

Validation and repair — never a silent HOLD:

1. Invalid JSON, a schema violation, a reply cut off (``done_reason == "length"``), an
   impossible action (buy where ``can_buy`` is false, sell where ``can_sell`` is false),
   a symbol named twice, or a symbol outside the universe → ONE repair re-ask: the
   assistant's reply is appended with a user message stating exactly what was wrong and
   the allowed values.
2. If the repaired reply still has any of these problems, the result carries ``error``
   ("model reply invalid after 1 repair: confidence 1.7 for NVDA is outside 0..1") and
   no signals — with one exception: signals for symbols outside the universe are dropped
   with a stated reason (``result.dropped``) and the valid rest is kept. The issue asks
   for both "re-ask on unknown symbols" and "drop them with a reason"; re-asking first
   and dropping only what survives the repair satisfies both without throwing away
   valid ideas for a stray ticker.

What the result holds: ``prompt`` is the transcript sent (system, user, and on a repair
the first reply and the repair message); ``raw_reply`` is the final reply exactly as
received; ``reasoning`` is the thinking text of every attempt; ``usage`` sums the
attempts; ``attempts`` is 1 or 2. On a repair a one-line notice is streamed on the
``content`` channel so the reasoning panel shows why a second answer follows.

Errors from the server or the network never leave :meth:`OllamaAnalyst.analyze`: they
become ``result.error`` with what happened and what to do. ``asyncio.CancelledError``
(pause, halt, quit) propagates, and the HTTP stream is closed on the way out.

Timeouts: ``llm.timeout_s`` is httpx's per-operation timeout (connect, each read), so it
bounds silence, not the length of a reply that keeps streaming; ``num_predict`` bounds
that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import ollama

from perun_tui.config import LLMSettings
from perun_tui.llm.base import (
    AnalysisContext,
    AnalysisResult,
    AnalystHealth,
    DeltaCallback,
    ProposedSignal,
    Usage,
)
from perun_tui.llm.prompt import (
    Prompt,
    PromptError,
    PromptTemplates,
    build_prompt,
    build_repair,
    load_templates,
    universe,
)
from perun_tui.llm.schema import ParsedReply, parse_reply, reply_schema

log = logging.getLogger(__name__)

class IncompleteStream(Exception):
    """The reply stream ended without Ollama's final ``done`` line."""


NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    ollama.ResponseError,
    ConnectionError,
    httpx.HTTPError,
    IncompleteStream,
)
CHECK_TIMEOUT_S = 5.0  # the availability check before each cycle
FLUSH_CHARS = 64
FLUSH_INTERVAL_S = 0.05
MAX_PROBLEMS_SHOWN = 5


def normalize_model(name: str) -> str:
    """``qwen3`` → ``qwen3:latest``, as Ollama resolves names."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


# --------------------------------------------------------------------------- streaming


class DeltaBatcher:
    """Coalesces streamed tokens so the UI gets a few updates per second, not one per token.

    Text is flushed when the buffer reaches ``min_chars``, when ``interval_s`` has passed
    since the last flush (checked as tokens arrive, so a slow stream flushes every token),
    when the channel changes, and at the end.
    """

    def __init__(
        self,
        on_delta: DeltaCallback,
        *,
        min_chars: int = FLUSH_CHARS,
        interval_s: float = FLUSH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_delta = on_delta
        self._min_chars = min_chars
        self._interval_s = interval_s
        self._clock = clock
        self._channel = ""
        self._parts: list[str] = []
        self._size = 0
        self._last = clock()
        self.flushes = 0

    def add(self, channel: str, text: str) -> None:
        if not text:
            return
        if channel != self._channel:
            self.flush()
            self._channel = channel
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self._min_chars or self._clock() - self._last >= self._interval_s:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            text = "".join(self._parts)
            self._parts.clear()
            self._size = 0
            self.flushes += 1
            self._on_delta(self._channel, text)
        self._last = self._clock()


@dataclass
class _Answer:
    content: str = ""
    thinking: str = ""
    done_reason: str | None = None
    final: ollama.ChatResponse | None = None


async def _aclose(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def usage_from(parts: Sequence[ollama.ChatResponse]) -> Usage | None:
    """Sum the counts of the final chunks of each attempt; durations ns → ms."""
    finals = [p for p in parts if p is not None]
    if not finals:
        return None
    prompt_tokens = sum(p.prompt_eval_count or 0 for p in finals)
    completion = sum(p.eval_count or 0 for p in finals)
    eval_ns = sum(p.eval_duration or 0 for p in finals)
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        load_ms=sum(p.load_duration or 0 for p in finals) / 1e6,
        total_ms=sum(p.total_duration or 0 for p in finals) / 1e6,
        tokens_per_s=completion / (eval_ns / 1e9) if eval_ns > 0 else 0.0,
    )


# --------------------------------------------------------------------------- pull


@dataclass(frozen=True)
class PullProgress:
    """One step of ``ollama pull``: a status line and, while downloading, byte counts."""

    status: str
    completed: int | None = None
    total: int | None = None

    @property
    def fraction(self) -> float | None:
        if self.total and self.completed is not None:
            return min(1.0, self.completed / self.total)
        return None


ProgressCallback = Callable[[PullProgress], None]


# --------------------------------------------------------------------------- analyst


@dataclass
class _Run:
    """What one analyze() call accumulates across its attempts."""

    attempts: int = 0
    transcript: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finals: list[ollama.ChatResponse] = field(default_factory=list)
    raw_reply: str = ""


class OllamaAnalyst:
    """The Analyst protocol over a local Ollama server."""

    def __init__(self, settings: LLMSettings, *, client: ollama.AsyncClient | None = None) -> None:
        self.settings = settings
        self.name = settings.model
        self.host = settings.host
        self._client = client or ollama.AsyncClient(
            host=settings.host,
            timeout=settings.timeout_s,
            # plain http (the local default) has no TLS: skip loading the certificate
            # store, 25 ms of start-up; an https host is verified as usual
            **({"verify": False} if settings.host.startswith("http://") else {}),
        )
        self._capabilities: dict[str, tuple[str, ...]] = {}
        self._schema = reply_schema()
        self.templates: PromptTemplates | None = None
        self.template_error: str | None = None
        try:
            self.templates = load_templates(settings.prompt_path)
        except PromptError as exc:
            self.template_error = str(exc)

    # -- messages the user can act on

    @property
    def unreachable(self) -> str:
        return (
            f"Ollama not reachable at {self.host} — start it with `ollama serve` "
            "or set llm.host"
        )

    @property
    def missing(self) -> str:
        return f"model {self.name} not found — pull it with `ollama pull {self.name}`"

    def describe_error(self, exc: BaseException) -> str:
        """A network or server failure as: what happened, and what to do."""
        if isinstance(exc, IncompleteStream):
            return (
                f"the reply stream from Ollama at {self.host} ended before it was complete "
                "— check the Ollama server log"
            )
        if isinstance(exc, ollama.ResponseError):
            if exc.status_code == 404 and "not found" in str(exc.error):
                return self.missing
            if exc.status_code == -1:
                return (
                    f"Ollama stopped mid-reply: {exc.error} — check the Ollama server log; "
                    "the next cycle tries again"
                )
            return (
                f"Ollama at {self.host} answered HTTP {exc.status_code}: {exc.error} — "
                "check the Ollama server log"
            )
        if isinstance(exc, httpx.TimeoutException):
            return (
                f"Ollama at {self.host} did not answer within {self.settings.timeout_s:g} s "
                "(llm.timeout_s) — the model may still be loading or the machine is "
                "overloaded; raise llm.timeout_s or use a smaller model"
            )
        if isinstance(exc, ConnectionError | httpx.ConnectError):
            return self.unreachable
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            return (
                f"the connection to Ollama at {self.host} dropped mid-reply "
                f"({type(exc).__name__}) — check that Ollama is still running"
            )
        return f"talking to Ollama at {self.host} failed: {type(exc).__name__}: {exc}"

    # -- availability

    async def capabilities(self) -> tuple[str, ...]:
        """The model's capabilities from ``/api/show``, asked once per model and cached."""
        key = normalize_model(self.name)
        cached = self._capabilities.get(key)
        if cached is None:
            shown = await self._client.show(self.name)
            cached = tuple(shown.capabilities or ())
            self._capabilities[key] = cached
        return cached

    async def _think_flag(self) -> bool | None:
        """``llm.think`` where the model can think; otherwise not sent at all."""
        return self.settings.think if "thinking" in await self.capabilities() else None

    @property
    def check_timeout_s(self) -> float:
        """A status check is cheap: a server that takes longer is as good as down, and
        waiting the full ``llm.timeout_s`` would hold up every cycle."""
        return min(CHECK_TIMEOUT_S, self.settings.timeout_s)

    async def check(self) -> AnalystHealth:
        """Cheap: ``/api/tags``, plus ``/api/show`` the first time a model is seen."""
        if self.template_error is not None:
            return AnalystHealth(ok=False, name=self.name, detail=self.template_error)
        try:
            async with asyncio.timeout(self.check_timeout_s):
                return await self._check()
        except TimeoutError:
            return AnalystHealth(
                ok=False,
                name=self.name,
                detail=(
                    f"Ollama at {self.host} did not answer a status check within "
                    f"{self.check_timeout_s:g} s — is it overloaded or stuck? "
                    "Check `ollama ps` and the server log"
                ),
            )

    async def _check(self) -> AnalystHealth:
        try:
            listed = await self._client.list()
        except NETWORK_ERRORS as exc:
            return AnalystHealth(ok=False, name=self.name, detail=self.describe_error(exc))
        present = {normalize_model(m.model or "") for m in listed.models}
        if normalize_model(self.name) not in present:
            self._capabilities.pop(normalize_model(self.name), None)
            return AnalystHealth(ok=False, name=self.name, detail=self.missing, missing_model=True)
        try:
            caps = await self.capabilities()
        except NETWORK_ERRORS as exc:
            detail = self.describe_error(exc)
            return AnalystHealth(
                ok=False, name=self.name, detail=detail, missing_model=detail == self.missing
            )
        if caps and "completion" not in caps:
            return AnalystHealth(
                ok=False,
                name=self.name,
                detail=(
                    f"model {self.name} cannot chat (capabilities: {', '.join(caps)}) — "
                    "set llm.model to a chat model"
                ),
            )
        if "thinking" not in caps:
            mode = "no thinking"
        else:
            mode = "thinking" if self.settings.think else "thinking off"
        return AnalystHealth(ok=True, name=self.name, detail=f"{self.name} at {self.host} ({mode})")

    async def pull(self, on_progress: ProgressCallback | None = None) -> AnalystHealth:
        """Pull the configured model, reporting progress (≤ 10 updates/s plus every new
        status); returns the health afterwards. Cancellation stops the download."""
        last_status = ""
        last_at = 0.0
        try:
            stream = await self._client.pull(self.name, stream=True)
            try:
                async for step in stream:
                    progress = PullProgress(step.status or "", step.completed, step.total)
                    now = time.monotonic()
                    if on_progress is not None and (
                        progress.status != last_status or now - last_at >= 0.1
                    ):
                        last_status, last_at = progress.status, now
                        on_progress(progress)
            finally:
                await _aclose(stream)
        except NETWORK_ERRORS as exc:
            return AnalystHealth(
                ok=False, name=self.name, detail=f"pulling {self.name} failed: {self._short(exc)}"
            )
        self._capabilities.pop(normalize_model(self.name), None)
        return await self.check()

    def _short(self, exc: BaseException) -> str:
        if isinstance(exc, ollama.ResponseError):
            return str(exc.error)
        return self.describe_error(exc)

    # -- analysis

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "temperature": self.settings.temperature,
            "num_ctx": self.settings.num_ctx,
            "num_predict": self.settings.num_predict,
        }
        if self.settings.seed is not None:
            options["seed"] = self.settings.seed
        return options

    async def _ask(
        self, messages: list[dict[str, str]], think: bool | None, batcher: DeltaBatcher
    ) -> _Answer:
        answer = _Answer()
        content: list[str] = []
        thinking: list[str] = []
        stream = await self._client.chat(
            model=self.name,
            messages=messages,
            stream=True,
            format=self._schema,
            think=think,
            options=self._options(),
            keep_alive=self.settings.keep_alive,
        )
        try:
            async for part in stream:
                message = part.message
                if message.thinking:
                    thinking.append(message.thinking)
                    batcher.add("thinking", message.thinking)
                if message.content:
                    content.append(message.content)
                    batcher.add("content", message.content)
                if part.done:
                    answer.final = part
                    answer.done_reason = part.done_reason
        finally:
            # Cancellation and errors arrive here too: close the HTTP response now
            # rather than when the generator is garbage-collected.
            await _aclose(stream)
        batcher.flush()
        if answer.final is None:
            raise IncompleteStream
        answer.content = "".join(content)
        answer.thinking = "".join(thinking)
        return answer

    def _parse(self, context: AnalysisContext, answer: _Answer) -> ParsedReply:
        return parse_reply(
            answer.content,
            universe=universe(context),
            limits=context.limits,
            done_reason=answer.done_reason,
            num_predict=self.settings.num_predict,
        )

    async def analyze(self, context: AnalysisContext, on_delta: DeltaCallback) -> AnalysisResult:
        """One cycle's analysis of the whole universe. Never raises except on cancellation."""
        if self.templates is None:
            return AnalysisResult(analyst=self.name, error=self.template_error)
        prompt = build_prompt(context, self.templates)
        if prompt.tokens_est >= self.settings.num_ctx:
            return AnalysisResult(
                analyst=self.name,
                prompt=prompt.text,
                error=(
                    f"the prompt (≈{prompt.tokens_est} tokens for {len(universe(context))} "
                    f"symbols) does not fit llm.num_ctx = {self.settings.num_ctx} — raise "
                    "llm.num_ctx or trade fewer symbols"
                ),
            )
        if prompt.tokens_est + self.settings.num_predict > self.settings.num_ctx:
            log.warning(
                "prompt ≈%d tokens + num_predict %d exceed num_ctx %d: Ollama may truncate",
                prompt.tokens_est,
                self.settings.num_predict,
                self.settings.num_ctx,
            )
        run = _Run(transcript=[prompt.text])
        batcher = DeltaBatcher(on_delta)
        deadline = self.settings.deadline_s
        try:
            async with asyncio.timeout(deadline):
                return await self._converse(context, prompt, run, batcher)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            batcher.flush()
            detail = (
                f"the analysis took longer than llm.deadline_s = {deadline:g} s "
                f"({run.attempts} request(s) to {self.name}) and was stopped — raise "
                "llm.deadline_s, lower llm.num_predict, or use a smaller model"
            )
            log.warning("analysis failed: %s", detail)
            return self._result(run, error=detail)
        except NETWORK_ERRORS as exc:
            batcher.flush()
            detail = self.describe_error(exc)
            if detail == self.missing:  # pulled or removed later: ask /api/show again
                self._capabilities.pop(normalize_model(self.name), None)
            log.warning("analysis failed: %s", detail)
            return self._result(run, error=self._during_repair(run, detail))
        except Exception as exc:  # a bug must not take the cycle down silently either
            log.exception("the Ollama analyst failed unexpectedly")
            return self._result(
                run, error=f"internal error in the Ollama analyst: {type(exc).__name__}: {exc}"
            )

    @staticmethod
    def _during_repair(run: _Run, detail: str) -> str:
        if run.attempts > 1:
            return f"model reply invalid, and the repair request failed: {detail}"
        return detail

    async def _converse(
        self, context: AnalysisContext, prompt: Prompt, run: _Run, batcher: DeltaBatcher
    ) -> AnalysisResult:
        assert self.templates is not None
        think = await self._think_flag()
        messages = prompt.messages()
        run.attempts = 1
        answer = await self._ask(messages, think, batcher)
        self._record(run, answer)
        parsed = self._parse(context, answer)
        if parsed.ok:
            return self._result(run, parsed=parsed)

        problems = parsed.problems + [
            f"{u.split(':', 1)[0]} is not one of the symbols in the table" for u in parsed.unknown
        ]
        repair = build_repair(
            context, self.templates, problems, truncated=answer.done_reason == "length"
        )
        messages += [
            {"role": "assistant", "content": answer.content},
            {"role": "user", "content": repair},
        ]
        run.transcript += [f"[assistant]\n{answer.content}", f"[user]\n{repair}"]
        log.info("model reply invalid, asking once more: %s", "; ".join(problems))
        batcher.add("content", f"\n\n[reply invalid: {_summary(problems)} — asking once more]\n\n")
        batcher.flush()

        run.attempts = 2
        answer = await self._ask(messages, think, batcher)
        self._record(run, answer)
        parsed = self._parse(context, answer)
        if parsed.reply is None or parsed.problems:
            return self._result(
                run, error=f"model reply invalid after 1 repair: {_summary(parsed.problems)}"
            )
        dropped = [f"{u} (dropped after 1 repair)" for u in parsed.unknown]
        return self._result(run, parsed=parsed, dropped=dropped)

    @staticmethod
    def _record(run: _Run, answer: _Answer) -> None:
        if answer.final is not None:
            run.finals.append(answer.final)
        run.reasoning.append(answer.thinking)
        run.raw_reply = answer.content

    def _result(
        self,
        run: _Run,
        *,
        parsed: ParsedReply | None = None,
        error: str | None = None,
        dropped: Sequence[str] = (),
    ) -> AnalysisResult:
        signals: list[ProposedSignal] = []
        market_view = ""
        if parsed is not None and parsed.reply is not None and error is None:
            signals = parsed.signals
            market_view = parsed.reply.market_view.strip()
        reasoning = "\n\n--- repair ---\n\n".join(r for r in run.reasoning if r)
        return AnalysisResult(
            analyst=self.name,
            signals=signals,
            market_view=market_view,
            prompt="\n".join(run.transcript),
            raw_reply=run.raw_reply,
            reasoning=reasoning,
            usage=usage_from(run.finals),
            error=error,
            dropped=list(dropped),
            attempts=max(1, run.attempts),
        )

    # -- perun doctor

    async def doctor_checks(self) -> list[tuple[str, bool, str]]:
        """``(check, ok, detail)`` rows for ``perun doctor``: server version, model present,
        capabilities, one tiny round trip with its latency, prompt templates."""
        rows: list[tuple[str, bool, str]] = []
        if self.template_error is not None:
            rows.append(("prompt templates", False, self.template_error))
        elif self.templates is not None:
            rows.append(("prompt templates", True, self.templates.source))
        try:
            async with httpx.AsyncClient(
                base_url=self.host, timeout=min(self.settings.timeout_s, 10.0)
            ) as http:
                reply = await http.get("/api/version")
                reply.raise_for_status()
                version = str(reply.json().get("version", "?"))
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            detail = (
                self.unreachable
                if isinstance(exc, httpx.TransportError)
                else f"{self.host} does not look like Ollama ({type(exc).__name__}: {exc}) "
                "— check llm.host"
            )
            rows.append(("ollama server", False, detail))
            return rows
        rows.append(("ollama server", True, f"version {version} at {self.host}"))

        health = await self.check() if self.template_error is None else None
        if health is not None and not health.ok:
            rows.append(("model", False, health.detail))
            return rows
        try:
            caps = await self.capabilities()
        except NETWORK_ERRORS as exc:
            rows.append(("model", False, self.describe_error(exc)))
            return rows
        rows.append(("model", True, f"{self.name} present"))
        thinking = "thinking" in caps
        if self.settings.think and not thinking:
            cap_detail = f"{', '.join(caps) or 'none listed'}; llm.think is ignored (no thinking)"
        else:
            cap_detail = ", ".join(caps) or "none listed"
        rows.append(("capabilities", "completion" in caps or not caps, cap_detail))
        rows.append(await self._round_trip(thinking))
        return rows

    async def _round_trip(self, thinking: bool) -> tuple[str, bool, str]:
        started = time.perf_counter()
        try:
            reply = await self._client.chat(
                model=self.name,
                messages=[{"role": "user", "content": 'Answer with the JSON {"ok": true}.'}],
                stream=False,
                format={
                    "type": "object",
                    "properties": {"ok": {"type": "boolean"}},
                    "required": ["ok"],
                },
                think=False if thinking else None,
                options={"temperature": 0, "num_predict": 128},
                keep_alive=self.settings.keep_alive,
            )
        except NETWORK_ERRORS as exc:
            return ("round trip", False, self.describe_error(exc))
        elapsed_ms = (time.perf_counter() - started) * 1000
        load_ms = (reply.load_duration or 0) / 1e6
        timing = f"{elapsed_ms:.0f} ms (model load {load_ms:.0f} ms)"
        try:
            ok = isinstance(json.loads(reply.message.content or ""), dict)
        except json.JSONDecodeError:
            ok = False
        if not ok:
            return (
                "round trip",
                False,
                f"answered in {timing} but not with JSON (done_reason={reply.done_reason}) — "
                "structured output needs Ollama ≥ 0.5 and a model that follows `format`",
            )
        return ("round trip", True, timing)

    async def close(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]


def _summary(problems: Sequence[str]) -> str:
    shown = list(problems[:MAX_PROBLEMS_SHOWN])
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


async def doctor_checks(settings: LLMSettings) -> list[tuple[str, bool, str]]:
    """The Ollama rows of ``perun doctor`` for ``settings`` (a short-lived analyst)."""
    analyst = OllamaAnalyst(settings)
    try:
        return await analyst.doctor_checks()
    finally:
        with contextlib.suppress(Exception):
            await analyst.close()
