"""OllamaAnalyst with the real ``ollama.AsyncClient`` against the loopback FakeOllama."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import ollama
import pytest

from perun_tui.config import LLMSettings
from perun_tui.llm.base import AnalysisContext, Analyst
from perun_tui.llm.ollama import DeltaBatcher, OllamaAnalyst, PullProgress, doctor_checks
from perun_tui.llm.schema import reply_schema
from perun_tui.models import Action
from tests.fakes.contexts import make_context
from tests.fakes.ollama_server import (
    Disconnect,
    FakeOllama,
    Hang,
    HttpError,
    Reply,
    StreamError,
    buy_document,
    hold_document,
)

MODEL = "qwen3:8b"
THINKING = (
    "AAPL is above its slow average with volume 1.3x; NVDA is oversold but in cooldown. "
    "MSFT and SPY are flat. I will propose one buy in AAPL and otherwise hold."
)


def doc(*signals: dict[str, Any], view: str = "Mixed tape; selective.") -> str:
    return json.dumps({"market_view": view, "signals": list(signals)})


def sig(symbol: str, action: str = "buy", confidence: Any = 0.8, **extra: Any) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "action": action,
        "confidence": confidence,
        "rationale": f"{symbol} looks {action}-worthy on trend and volume.",
        **extra,
    }


class Deltas:
    """An ``on_delta`` that records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, channel: str, text: str) -> None:
        self.calls.append((channel, text))

    def text(self, channel: str) -> str:
        return "".join(t for c, t in self.calls if c == channel)


@pytest.fixture
def srv() -> Iterator[FakeOllama]:
    with FakeOllama(models=[MODEL]) as server:
        yield server


def settings_for(url: str, **overrides: Any) -> LLMSettings:
    values: dict[str, Any] = {
        "model": MODEL,
        "host": url,
        "timeout_s": 5,
        "seed": 11,
        "num_ctx": 8192,
        "num_predict": 1024,
        "keep_alive": "7m",
    }
    values.update(overrides)
    return LLMSettings(**values)


@pytest.fixture
async def analyst(srv: FakeOllama) -> AsyncIterator[OllamaAnalyst]:
    a = OllamaAnalyst(settings_for(srv.url))
    yield a
    await a.close()


@pytest.fixture
def ctx() -> AnalysisContext:
    return make_context(4)  # AAPL (held, sellable), MSFT, NVDA (cooldown note), SPY


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- happy path


async def test_implements_the_analyst_protocol(analyst: OllamaAnalyst) -> None:
    assert isinstance(analyst, Analyst)
    assert analyst.name == MODEL


async def test_valid_streamed_reply_with_thinking(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext
) -> None:
    content = doc(
        sig("aapl ", "BUY", "0.81", target_price="320.5", stop_loss=295),
        sig("MSFT", "hold", 0.4),
        view="Quiet tape; AAPL leads.",
    )
    srv.script(Reply(content=content, thinking=THINKING, chunk_chars=3))
    deltas = Deltas()

    result = await analyst.analyze(ctx, deltas)

    assert result.error is None, result.error
    assert result.market_view == "Quiet tape; AAPL leads."
    assert [(s.symbol, s.action, s.confidence) for s in result.signals] == [
        ("AAPL", Action.BUY, 0.81),
        ("MSFT", Action.HOLD, 0.4),
    ]
    assert result.signals[0].target_price == 320.5 and result.signals[0].stop_loss == 295
    assert result.attempts == 1 and result.dropped == []
    # the whole stream reached on_delta, thinking first, in batches rather than per token
    assert deltas.text("thinking") == THINKING == result.reasoning
    assert deltas.text("content") == content == result.raw_reply
    chunks = len(THINKING) // 3 + len(content) // 3
    assert len(deltas.calls) < chunks / 5
    assert [c for c, _ in deltas.calls] == sorted(
        (c for c, _ in deltas.calls), key=lambda c: c != "thinking"
    )
    # usage from the final chunk
    usage = result.usage
    assert usage is not None
    assert usage.prompt_tokens > 100 and usage.completion_tokens > 10
    assert usage.load_ms == pytest.approx(48.0)
    assert usage.total_ms > usage.load_ms
    assert usage.tokens_per_s == pytest.approx(1e9 / 22_000_000)
    # prompt stored as the transcript that was sent
    assert result.prompt.startswith("[system]\n") and "[user]\n" in result.prompt
    assert len(srv.chat_bodies) == 1


async def test_the_request_carries_schema_options_and_every_symbol_once(
    srv: FakeOllama, analyst: OllamaAnalyst
) -> None:
    ctx = make_context(20)
    result = await analyst.analyze(ctx, Deltas())
    assert result.error is None

    (body,) = srv.chat_bodies
    assert body["format"] == reply_schema()
    assert body["stream"] is True
    assert body["model"] == MODEL
    assert body["think"] is True
    assert body["keep_alive"] == "7m"
    assert body["options"] == {"temperature": 0.2, "seed": 11, "num_ctx": 8192, "num_predict": 1024}
    system, user = body["messages"]
    assert (system["role"], user["role"]) == ("system", "user")
    rows = [line.split("|", 1)[0] for line in user["content"].splitlines() if "|" in line]
    assert rows[0] == "sym"
    assert sorted(rows[1:]) == sorted(ctx.symbols)  # every symbol exactly once
    assert result.prompt == f"[system]\n{system['content']}\n[user]\n{user['content']}"


async def test_capabilities_are_asked_once(srv: FakeOllama, analyst: OllamaAnalyst) -> None:
    assert (await analyst.check()).ok
    await analyst.analyze(make_context(2), Deltas())
    await analyst.analyze(make_context(2), Deltas())
    assert (await analyst.check()).ok
    assert len(srv.requests_to("/api/show")) == 1
    assert len(srv.requests_to("/api/tags")) == 2
    assert len(srv.chat_bodies) == 2


@pytest.mark.parametrize(
    ("capabilities", "think", "sent"),
    [
        (["completion", "thinking"], True, True),
        (["completion", "thinking"], False, False),
        (["completion"], True, None),
        (["completion"], False, None),
    ],
)
async def test_think_is_sent_only_when_the_model_can_think(
    srv: FakeOllama, capabilities: list[str], think: bool, sent: bool | None
) -> None:
    srv.capabilities = capabilities
    analyst = OllamaAnalyst(settings_for(srv.url, think=think))
    try:
        health = await analyst.check()
        result = await analyst.analyze(make_context(2), Deltas())
    finally:
        await analyst.close()
    assert health.ok
    assert result.error is None, result.error
    body = srv.chat_bodies[0]
    if sent is None:
        assert "think" not in body
        assert "no thinking" in health.detail
    else:
        assert body["think"] is sent


async def test_seed_is_left_out_when_not_configured(srv: FakeOllama) -> None:
    analyst = OllamaAnalyst(settings_for(srv.url, seed=None))
    try:
        await analyst.analyze(make_context(2), Deltas())
    finally:
        await analyst.close()
    assert "seed" not in srv.chat_bodies[0]["options"]


# --------------------------------------------------------------------------- repair


async def test_invalid_json_then_valid_is_repaired(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext
) -> None:
    broken = '{"market_view": "ok", "signals": [{"symbol": "AAPL", "action": "buy",'
    srv.script(Reply(content=broken, thinking="first try"), Reply(content=buy_document("AAPL")))
    deltas = Deltas()

    result = await analyst.analyze(ctx, deltas)

    assert result.error is None, result.error
    assert result.attempts == 2
    assert [(s.symbol, s.action) for s in result.signals] == [("AAPL", Action.BUY)]
    first, second = srv.chat_bodies
    assert len(first["messages"]) == 2
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    assert second["messages"][:2] == first["messages"]
    assert second["messages"][2]["content"] == broken
    repair = second["messages"][3]["content"]
    assert "not valid JSON" in repair
    assert "one of AAPL, MSFT, NVDA, SPY" in repair
    assert "sell allowed for AAPL" in repair
    assert second["format"] == first["format"] == reply_schema()
    # stored: the final reply, the full transcript, the reasoning of both attempts
    assert result.raw_reply == buy_document("AAPL")
    assert f"[assistant]\n{broken}" in result.prompt and repair in result.prompt
    assert result.reasoning.startswith("first try")
    assert "asking once more" in deltas.text("content")
    assert result.usage is not None and result.usage.prompt_tokens > 0


async def test_invalid_twice_is_an_explicit_error_without_signals(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext
) -> None:
    srv.script(Reply(content="I think you should buy AAPL."), Reply(content="{not json"))

    result = await analyst.analyze(ctx, Deltas())

    assert result.signals == []
    assert result.error is not None
    assert result.error.startswith("model reply invalid after 1 repair: ")
    assert "not valid JSON" in result.error
    assert result.attempts == 2 and len(srv.chat_bodies) == 2
    assert result.raw_reply == "{not json"
    assert result.market_view == ""


async def test_a_truncated_reply_is_re_asked_then_reported(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext
) -> None:
    long_doc = doc(sig("AAPL"), sig("NVDA", confidence=0.7))
    srv.script(Reply.truncated(long_doc), Reply.truncated(long_doc, keep=0.9))

    result = await analyst.analyze(ctx, Deltas())

    assert result.signals == []
    assert result.error is not None
    assert "after 1 repair" in result.error and "cut off" in result.error
    assert "num_predict=1024" in result.error
    repair = srv.chat_bodies[1]["messages"][3]["content"]
    assert "cut off" in repair and "Keep it short" in repair


async def test_a_truncated_reply_repaired(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext
) -> None:
    # valid JSON, but the server says it stopped at the token limit: not trusted
    srv.script(Reply(content=hold_document(), done_reason="length"), Reply(content=hold_document()))
    result = await analyst.analyze(ctx, Deltas())
    assert result.error is None and result.attempts == 2 and result.signals == []


async def test_unknown_symbol_is_re_asked_then_dropped_with_a_reason(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext
) -> None:
    reply = doc(sig("AAPL"), sig("TSLA", confidence=0.9))
    srv.script(Reply(content=reply), Reply(content=reply))

    result = await analyst.analyze(ctx, Deltas())

    assert result.error is None
    assert [s.symbol for s in result.signals] == ["AAPL"]
    assert len(result.dropped) == 1 and result.dropped[0].startswith("TSLA: not in the universe")
    repair = srv.chat_bodies[1]["messages"][3]["content"]
    assert "TSLA is not one of the symbols in the table" in repair


async def test_unknown_symbol_fixed_by_the_repair(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext
) -> None:
    srv.script(Reply(content=doc(sig("TSLA"))), Reply(content=doc(sig("NVDA"))))
    result = await analyst.analyze(ctx, Deltas())
    assert result.error is None and result.dropped == []
    assert [s.symbol for s in result.signals] == ["NVDA"]


@pytest.mark.parametrize("confidence", [1.7, 80, -0.1, "85%"])
async def test_out_of_range_confidence_is_not_guessed(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext, confidence: Any
) -> None:
    bad = doc(sig("AAPL", confidence=0.7), sig("NVDA", confidence=confidence))
    srv.script(Reply(content=bad), Reply(content=bad))

    result = await analyst.analyze(ctx, Deltas())

    assert result.signals == []
    assert result.error is not None
    shown = json.dumps(confidence) if isinstance(confidence, str) else f"{confidence:g}"
    if isinstance(confidence, str):
        assert result.error == (
            f"model reply invalid after 1 repair: confidence {shown} for NVDA is not a number"
        )
    else:
        assert result.error == (
            f"model reply invalid after 1 repair: confidence {shown} for NVDA is outside 0..1"
        )
    assert "for NVDA is" in srv.chat_bodies[1]["messages"][3]["content"]


async def test_impossible_actions_are_re_asked(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext
) -> None:
    # MSFT is not held: a sell is impossible; the repaired reply sells AAPL instead
    srv.script(
        Reply(content=doc(sig("MSFT", "sell"))),
        Reply(content=doc(sig("AAPL", "sell", 0.66))),
    )
    result = await analyst.analyze(ctx, Deltas())
    assert result.error is None
    assert [(s.symbol, s.action) for s in result.signals] == [("AAPL", Action.SELL)]
    repair = srv.chat_bodies[1]["messages"][3]["content"]
    assert "sell MSFT is not allowed" in repair and "sell allowed for AAPL" in repair


async def test_an_impossible_buy_twice_is_an_error(srv: FakeOllama, analyst: OllamaAnalyst) -> None:
    ctx = make_context(3)
    ctx.limits["NVDA"] = ctx.limits["NVDA"].model_copy(update={"can_buy": False})
    srv.script(Reply(content=doc(sig("NVDA"))), Reply(content=doc(sig("NVDA"))))
    result = await analyst.analyze(ctx, Deltas())
    assert result.signals == []
    assert result.error == (
        "model reply invalid after 1 repair: buy NVDA is not allowed (cooldown 35 min): "
        "can_buy is false"
    )


# --------------------------------------------------------------------------- faults


async def test_error_line_mid_stream(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext
) -> None:
    srv.script(StreamError("out of memory", after_chunks=3))
    deltas = Deltas()
    result = await analyst.analyze(ctx, deltas)
    assert result.signals == []
    assert result.error is not None
    assert result.error.startswith("Ollama stopped mid-reply: out of memory")
    assert len(srv.chat_bodies) == 1  # a server failure is not a reason to re-ask
    assert deltas.calls  # what arrived before the error was shown


async def test_http_500(srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext) -> None:
    srv.script(HttpError(500, "llama runner process has terminated"))
    result = await analyst.analyze(ctx, Deltas())
    assert result.signals == []
    assert result.error == (
        f"Ollama at {srv.url} answered HTTP 500: llama runner process has terminated — "
        "check the Ollama server log"
    )
    # the next cycle works again
    assert (await analyst.analyze(ctx, Deltas())).error is None


async def test_repair_request_failing(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext
) -> None:
    srv.script(Reply(content="nope"), HttpError(503, "server busy"))
    result = await analyst.analyze(ctx, Deltas())
    assert result.signals == []
    assert result.error is not None
    assert result.error.startswith("model reply invalid, and the repair request failed: ")
    assert "HTTP 503: server busy" in result.error
    assert result.attempts == 2


async def test_disconnect_mid_stream(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext
) -> None:
    srv.script(Disconnect(after_chunks=2))
    result = await analyst.analyze(ctx, Deltas())
    assert result.error is not None and "dropped mid-reply" in result.error
    assert result.signals == []


async def test_server_down(ctx: AnalysisContext) -> None:
    url = closed_port_url()
    analyst = OllamaAnalyst(settings_for(url))
    try:
        health = await analyst.check()
        result = await analyst.analyze(ctx, Deltas())
    finally:
        await analyst.close()
    expected = f"Ollama not reachable at {url} — start it with `ollama serve` or set llm.host"
    assert not health.ok and not health.missing_model
    assert health.detail == expected
    assert result.error == expected and result.signals == []


async def test_server_comes_back(ctx: AnalysisContext) -> None:
    srv = FakeOllama(models=[MODEL]).start()
    url = srv.url
    srv.stop()
    analyst = OllamaAnalyst(settings_for(url))
    try:
        assert not (await analyst.check()).ok
        with FakeOllama(models=[MODEL], port=int(url.rsplit(":", 1)[1])) as back:
            assert (await analyst.check()).ok
            assert (await analyst.analyze(ctx, Deltas())).error is None
            assert back.chat_bodies
    finally:
        await analyst.close()


@pytest.mark.parametrize("after_chunks", [0, 2])
async def test_a_server_that_never_answers_times_out(
    srv: FakeOllama, ctx: AnalysisContext, after_chunks: int
) -> None:
    srv.script(Hang(after_chunks=after_chunks))
    analyst = OllamaAnalyst(settings_for(srv.url, timeout_s=0.4))
    try:
        result = await analyst.analyze(ctx, Deltas())
    finally:
        await analyst.close()
    assert result.signals == []
    assert result.error is not None
    assert result.error.startswith(f"Ollama at {srv.url} did not answer within 0.4 s")


async def test_model_missing(srv: FakeOllama, ctx: AnalysisContext) -> None:
    srv.models = ["llama3.2:3b"]
    analyst = OllamaAnalyst(settings_for(srv.url))
    try:
        health = await analyst.check()
        result = await analyst.analyze(ctx, Deltas())
    finally:
        await analyst.close()
    expected = "model qwen3:8b not found — pull it with `ollama pull qwen3:8b`"
    assert not health.ok and health.missing_model and health.detail == expected
    assert result.error == expected and result.signals == []
    assert srv.chat_bodies == []  # /api/show already said so


async def test_model_removed_after_capabilities_were_cached(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext
) -> None:
    assert (await analyst.check()).ok
    srv.models = []
    result = await analyst.analyze(ctx, Deltas())
    assert result.error == "model qwen3:8b not found — pull it with `ollama pull qwen3:8b`"


async def test_tags_http_error_is_not_called_unreachable(
    srv: FakeOllama, analyst: OllamaAnalyst
) -> None:
    srv.script(HttpError(503, "server busy"), path="/api/tags")
    health = await analyst.check()
    assert not health.ok and "answered HTTP 503: server busy" in health.detail


async def test_a_model_that_cannot_chat(srv: FakeOllama, analyst: OllamaAnalyst) -> None:
    srv.capabilities = ["embedding"]
    health = await analyst.check()
    assert not health.ok and "cannot chat" in health.detail


async def test_cancellation_mid_stream(
    srv: FakeOllama, analyst: OllamaAnalyst, ctx: AnalysisContext
) -> None:
    srv.script(Reply(content=buy_document("AAPL"), thinking=THINKING * 5, chunk_delay=0.02))
    first_delta = asyncio.Event()
    deltas = Deltas()

    def on_delta(channel: str, text: str) -> None:
        deltas(channel, text)
        first_delta.set()

    task = asyncio.create_task(analyst.analyze(ctx, on_delta))
    await asyncio.wait_for(first_delta.wait(), 5)
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 0.5
    seen = len(deltas.calls)
    await asyncio.sleep(0.1)
    assert len(deltas.calls) == seen  # nothing more arrives once cancelled
    # the HTTP stream was closed, not left to finish in the background (the fake's
    # private connection count: the only connection was the streaming one)
    assert srv._server is not None and srv._server.open_connections() == 0
    assert deltas.text("content") == ""  # cancelled while still thinking
    # the analyst is still usable: the next cycle works
    result = await analyst.analyze(ctx, Deltas())
    assert result.error is None


# --------------------------------------------------------------------------- pull, doctor


async def test_pull_reports_progress_then_the_model_is_ready(srv: FakeOllama) -> None:
    srv.models = []
    analyst = OllamaAnalyst(settings_for(srv.url))
    progress: list[PullProgress] = []
    try:
        assert (await analyst.check()).missing_model
        health = await analyst.pull(progress.append)
    finally:
        await analyst.close()
    assert health.ok, health.detail
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    fractions = [p.fraction for p in progress if p.fraction is not None]
    assert fractions and fractions == sorted(fractions)


async def test_pull_failure_is_a_health_value(srv: FakeOllama) -> None:
    srv.models = []
    srv.pullable = ["llama3.2:3b"]
    analyst = OllamaAnalyst(settings_for(srv.url))
    try:
        health = await analyst.pull()
    finally:
        await analyst.close()
    assert not health.ok and "pulling qwen3:8b failed" in health.detail


async def test_doctor_checks_all_ok(srv: FakeOllama) -> None:
    rows = await doctor_checks(settings_for(srv.url))
    names = [name for name, _, _ in rows]
    assert names == ["prompt templates", "ollama server", "model", "capabilities", "round trip"]
    assert all(ok for _, ok, _ in rows), rows
    assert rows[1][2] == f"version {srv.version} at {srv.url}"
    assert "thinking" in rows[3][2]
    assert rows[4][2].endswith("ms (model load 48 ms)")
    round_trip = srv.chat_bodies[-1]
    assert round_trip["think"] is False and round_trip["stream"] is False


async def test_doctor_checks_problems(srv: FakeOllama) -> None:
    down = await doctor_checks(settings_for(closed_port_url()))
    assert down[-1][0] == "ollama server" and not down[-1][1]
    assert "ollama serve" in down[-1][2]

    srv.models = []
    missing = await doctor_checks(settings_for(srv.url))
    assert missing[-1] == (
        "model",
        False,
        "model qwen3:8b not found — pull it with `ollama pull qwen3:8b`",
    )

    srv.models = [MODEL]
    srv.script(Reply(content="sure! ok"))
    not_json = await doctor_checks(settings_for(srv.url))
    assert not_json[-1][0] == "round trip" and not not_json[-1][1]
    assert "not with JSON" in not_json[-1][2]


async def test_a_broken_prompt_override_is_reported_not_raised(
    srv: FakeOllama, tmp_path: Any, ctx: AnalysisContext
) -> None:
    (tmp_path / "context.md").write_text("Cycle {{cycel}}\n{{table}}\n")
    analyst = OllamaAnalyst(settings_for(srv.url, prompt_path=str(tmp_path)))
    try:
        health = await analyst.check()
        result = await analyst.analyze(ctx, Deltas())
    finally:
        await analyst.close()
    assert not health.ok and "{{cycel}}" in health.detail
    assert result.error == health.detail and srv.chat_bodies == []


async def test_a_prompt_that_cannot_fit_num_ctx(srv: FakeOllama) -> None:
    analyst = OllamaAnalyst(settings_for(srv.url, num_ctx=512))
    try:
        result = await analyst.analyze(make_context(50), Deltas())
    finally:
        await analyst.close()
    assert result.error is not None and "does not fit llm.num_ctx = 512" in result.error
    assert srv.chat_bodies == []


# --------------------------------------------------------------------------- batching


def test_delta_batcher_coalesces_by_size_time_and_channel() -> None:
    now = [0.0]
    deltas = Deltas()
    batcher = DeltaBatcher(deltas, min_chars=10, interval_s=0.05, clock=lambda: now[0])
    for piece in ["ab", "cd", "ef"]:
        batcher.add("thinking", piece)
    assert deltas.calls == []
    batcher.add("thinking", "ghijk")  # 11 chars ≥ 10
    assert deltas.calls == [("thinking", "abcdefghijk")]
    batcher.add("thinking", "x")
    now[0] += 0.06
    batcher.add("thinking", "y")  # 60 ms since the last flush
    assert deltas.calls[-1] == ("thinking", "xy")
    batcher.add("thinking", "z")
    batcher.add("content", "{")  # channel switch flushes the old channel first
    assert deltas.calls[-1] == ("thinking", "z")
    batcher.flush()
    assert deltas.calls[-1] == ("content", "{")
    batcher.flush()
    assert len(deltas.calls) == 4


async def test_a_stream_that_ends_without_done_is_an_error(ctx: AnalysisContext) -> None:
    # the fake always ends a stream with a done line (or a fault): use a mock transport
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/show":
            return httpx.Response(200, json={"model_info": None, "capabilities": ["completion"]})
        line = {"model": MODEL, "message": {"role": "assistant", "content": '{"market'}}
        return httpx.Response(200, content=(json.dumps(line) + "\n").encode())

    client = ollama.AsyncClient(
        host="http://127.0.0.1:9", timeout=1, transport=httpx.MockTransport(handler)
    )
    analyst = OllamaAnalyst(settings_for("http://127.0.0.1:9"), client=client)
    try:
        result = await analyst.analyze(ctx, Deltas())
    finally:
        await analyst.close()
    assert result.signals == []
    assert result.error is not None and "ended before it was complete" in result.error


async def test_check_against_a_server_that_never_answers(srv: FakeOllama) -> None:
    srv.script(Hang(), path="/api/tags")
    analyst = OllamaAnalyst(settings_for(srv.url, timeout_s=0.3))
    try:
        health = await analyst.check()
    finally:
        await analyst.close()
    # (the client's own 0.3 s timeout and the check's deadline race: either message is right)
    assert not health.ok and "did not answer" in health.detail and "0.3 s" in health.detail


async def test_the_status_check_has_its_own_short_deadline(srv: FakeOllama) -> None:
    """A stuck server must not hold up each cycle's check for the whole llm.timeout_s."""
    analyst = OllamaAnalyst(settings_for(srv.url, timeout_s=600))
    assert analyst.check_timeout_s < 600
    await analyst.close()


async def test_a_reply_that_trickles_forever_hits_the_analysis_deadline(
    srv: FakeOllama, ctx: AnalysisContext
) -> None:
    # every line arrives well within timeout_s, but the whole reply would take minutes
    srv.script(Reply(content=buy_document("AAPL"), chunk_chars=1, chunk_delay=0.05))
    analyst = OllamaAnalyst(settings_for(srv.url, timeout_s=5, deadline_s=0.5))
    deltas = Deltas()
    try:
        result = await analyst.analyze(ctx, deltas)
    finally:
        await analyst.close()
    assert result.signals == []
    assert result.error is not None and "llm.deadline_s = 0.5 s" in result.error
    assert deltas.text("content"), "what streamed before the deadline is still shown"
