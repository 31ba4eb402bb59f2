"""The fake Ollama server, exercised with the real ``ollama.AsyncClient``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from tests.fakes.ollama_server import (
    Disconnect,
    FakeOllama,
    Hang,
    HttpError,
    Reply,
    StreamError,
    buy_document,
)

SCHEMA = {
    "type": "object",
    "properties": {"market_view": {"type": "string"}, "signals": {"type": "array"}},
    "required": ["market_view", "signals"],
}
MESSAGES = [
    {"role": "system", "content": "You are a careful trader."},
    {"role": "user", "content": "AAPL 190.1 191.3 192.0; MSFT 410.2 409.8"},
]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def srv() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture
async def c(srv: FakeOllama) -> AsyncIterator[ollama.AsyncClient]:
    async with ollama.AsyncClient(host=srv.url, timeout=2.0) as client:
        yield client


async def test_streamed_chat_thinking_then_content(srv: FakeOllama, c: ollama.AsyncClient) -> None:
    content = buy_document("AAPL")
    thinking = "AAPL is trending up on volume; MSFT is flat."
    srv.script(Reply(content=content, thinking=thinking, chunk_chars=7))

    parts = [
        part
        async for part in await c.chat(
            model="qwen3:8b",
            messages=MESSAGES,
            format=SCHEMA,
            stream=True,
            think=True,
            options={"temperature": 0.2, "seed": 7, "num_ctx": 8192, "num_predict": 512},
        )
    ]

    kinds = ["t" if p.message.thinking else "c" if p.message.content else "-" for p in parts]
    text = "".join(kinds)
    assert text.startswith("t") and "ct" not in text and text.endswith("c-")
    assert sum(k == "t" for k in kinds) > 1 and sum(k == "c" for k in kinds) > 1
    assert "".join(p.message.thinking or "" for p in parts) == thinking
    assert "".join(p.message.content or "" for p in parts) == content
    assert json.loads(content)["signals"][0]["symbol"] == "AAPL"
    assert all(not p.done for p in parts[:-1])
    last = parts[-1]
    assert last.done and last.done_reason == "stop"
    assert last.prompt_eval_count and last.eval_count
    assert last.total_duration and last.load_duration and last.eval_duration
    assert last.total_duration > last.eval_duration > 0


async def test_chat_without_stream_and_think_false(srv: FakeOllama, c: ollama.AsyncClient) -> None:
    srv.script(Reply(content='{"market_view": "calm", "signals": []}', thinking="hidden"))

    reply = await c.chat(
        model="qwen3:8b", messages=MESSAGES, format=SCHEMA, stream=False, think=False
    )

    assert reply.done and reply.done_reason == "stop"
    assert reply.message.role == "assistant"
    assert json.loads(reply.message.content or "") == {"market_view": "calm", "signals": []}
    assert reply.message.thinking is None  # think=False: no thinking is sent
    assert reply.eval_count and reply.prompt_eval_count


async def test_default_reply_and_callable_default(srv: FakeOllama, c: ollama.AsyncClient) -> None:
    first = await c.chat(model="qwen3:8b", messages=MESSAGES)
    assert json.loads(first.message.content or "")["signals"] == []

    def answer(request: dict[str, Any]) -> Reply:
        symbol = "MSFT" if "MSFT" in request["messages"][-1]["content"] else "AAPL"
        return Reply(content=buy_document(symbol))

    srv.default_reply = answer
    second = await c.chat(model="qwen3:8b", messages=[{"role": "user", "content": "only MSFT"}])
    assert json.loads(second.message.content or "")["signals"][0]["symbol"] == "MSFT"


async def test_truncated_reply(srv: FakeOllama, c: ollama.AsyncClient) -> None:
    srv.script(Reply.truncated(buy_document("AAPL")))
    parts = [p async for p in await c.chat("qwen3:8b", MESSAGES, stream=True)]
    assert parts[-1].done_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads("".join(p.message.content or "" for p in parts))


async def test_list_show_ps_version(srv: FakeOllama, c: ollama.AsyncClient) -> None:
    srv.models = ["qwen3:8b", "llama3.2"]

    listed = await c.list()
    assert [m.model for m in listed.models] == ["qwen3:8b", "llama3.2"]
    assert listed.models[0].details and listed.models[0].details.family == "qwen3"
    assert listed.models[0].size and listed.models[0].digest

    shown = await c.show("qwen3:8b")
    assert shown.capabilities == ["completion", "thinking", "tools"]
    assert shown.modelinfo and shown.modelinfo["qwen3.context_length"] == 40960
    assert (await c.show("llama3.2:latest")).modelinfo is not None  # ":latest" is implied

    assert (await c.ps()).models == []
    await c.chat("qwen3:8b", MESSAGES)
    assert [m.model for m in (await c.ps()).models] == ["qwen3:8b"]

    async with httpx.AsyncClient(base_url=srv.url, timeout=2) as http:
        assert (await http.get("/api/version")).json() == {"version": srv.version}


async def test_missing_model_is_404(srv: FakeOllama, c: ollama.AsyncClient) -> None:
    srv.script(Reply(content="not consumed"))
    with pytest.raises(ollama.ResponseError) as chat_error:
        await c.chat("mistral:7b", MESSAGES)
    assert chat_error.value.status_code == 404
    assert chat_error.value.error == "model 'mistral:7b' not found"

    with pytest.raises(ollama.ResponseError) as stream_error:
        async for _ in await c.chat("mistral:7b", MESSAGES, stream=True):
            pass
    assert stream_error.value.status_code == 404

    with pytest.raises(ollama.ResponseError) as show_error:
        await c.show("mistral:7b")
    assert show_error.value.status_code == 404
    assert srv.pending() == 1


async def test_thinking_on_a_model_without_it_is_400(
    srv: FakeOllama, c: ollama.AsyncClient
) -> None:
    srv.capabilities = ["completion"]
    with pytest.raises(ollama.ResponseError) as error:
        await c.chat("qwen3:8b", MESSAGES, think=True)
    assert error.value.status_code == 400


@pytest.mark.parametrize("stream", [False, True])
async def test_http_500(srv: FakeOllama, c: ollama.AsyncClient, stream: bool) -> None:
    srv.script(HttpError(500, "llama runner process has terminated"))
    with pytest.raises(ollama.ResponseError) as error:
        if stream:
            async for _ in await c.chat("qwen3:8b", MESSAGES, stream=True):
                pass
        else:
            await c.chat("qwen3:8b", MESSAGES)
    assert error.value.status_code == 500
    assert error.value.error == "llama runner process has terminated"
    # The queue is consumed: the next request gets the default reply.
    assert (await c.chat("qwen3:8b", MESSAGES)).done


async def test_error_line_mid_stream(srv: FakeOllama, c: ollama.AsyncClient) -> None:
    srv.script(StreamError("out of memory", after_chunks=3))
    received = []
    with pytest.raises(ollama.ResponseError) as error:
        async for part in await c.chat("qwen3:8b", MESSAGES, stream=True):
            received.append(part)
    assert len(received) == 3
    assert error.value.status_code == -1
    assert error.value.error == "out of memory"


@pytest.mark.parametrize("stream", [False, True])
async def test_hang_times_out_and_does_not_block_stop(stream: bool) -> None:
    server = FakeOllama().start()
    try:
        # Streaming: headers and two lines arrive, then nothing.
        server.script(Hang(after_chunks=2) if stream else Hang())
        started = time.monotonic()
        async with ollama.AsyncClient(host=server.url, timeout=0.5) as c:
            received = []
            with pytest.raises(httpx.TimeoutException):
                if stream:
                    async for part in await c.chat("qwen3:8b", MESSAGES, stream=True):
                        received.append(part)
                else:
                    await c.chat("qwen3:8b", MESSAGES)
            assert len(received) == (2 if stream else 0)
        assert time.monotonic() - started < 1.0
    finally:
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.2


async def test_hang_is_released_by_stop() -> None:
    server = FakeOllama().start()
    server.script(Hang())
    async with ollama.AsyncClient(host=server.url, timeout=5) as c:
        task = asyncio.create_task(c.chat("qwen3:8b", MESSAGES))
        assert await asyncio.to_thread(server.wait_for_requests, 1, path="/api/chat")
        started = time.monotonic()
        await asyncio.to_thread(server.stop)
        assert time.monotonic() - started < 1.2
        with pytest.raises(httpx.HTTPError):
            await task


async def test_disconnect_mid_stream(srv: FakeOllama, c: ollama.AsyncClient) -> None:
    srv.script(Disconnect(after_chunks=2), Disconnect(after_chunks=0))
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        async for part in await c.chat("qwen3:8b", MESSAGES, stream=True):
            received.append(part)
    assert len(received) == 2
    with pytest.raises(httpx.RemoteProtocolError):
        await c.chat("qwen3:8b", MESSAGES)


async def test_pull_streams_progress_then_model_is_listed(
    srv: FakeOllama, c: ollama.AsyncClient
) -> None:
    assert "llama3.2:3b" not in [m.model for m in (await c.list()).models]

    statuses = []
    completed = []
    async for progress in await c.pull("llama3.2:3b", stream=True):
        statuses.append(progress.status)
        if progress.total:
            completed.append(progress.completed)
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert completed == sorted(completed) and completed[-1] > completed[0]
    assert "llama3.2:3b" in [m.model for m in (await c.list()).models]
    assert (await c.show("llama3.2:3b")).capabilities


async def test_pull_unknown_and_scripted_faults(srv: FakeOllama, c: ollama.AsyncClient) -> None:
    srv.pullable = ["qwen3:14b"]
    with pytest.raises(ollama.ResponseError) as error:
        async for _ in await c.pull("nonsense:1b", stream=True):
            pass
    assert error.value.status_code == -1
    assert "file does not exist" in error.value.error
    assert (await c.pull("qwen3:14b")).status == "success"

    srv.script(HttpError(503, "server busy"), path="/api/tags")
    with pytest.raises(ollama.ResponseError) as tags_error:
        await c.list()
    assert tags_error.value.status_code == 503
    assert len((await c.list()).models) == 2
    with pytest.raises(TypeError):
        srv.script(Reply(), path="/api/tags")


async def test_requests_are_recorded(srv: FakeOllama, c: ollama.AsyncClient) -> None:
    await c.chat(
        "qwen3:8b",
        MESSAGES,
        format=SCHEMA,
        think=True,
        options={"temperature": 0.2, "num_predict": 256},
        keep_alive="10m",
    )
    await c.list()

    method, path, body = srv.requests[0]
    assert (method, path) == ("POST", "/api/chat")
    assert body["format"] == SCHEMA
    assert body["think"] is True
    assert body["stream"] is False
    assert body["tools"] == []
    assert body["options"] == {"temperature": 0.2, "num_predict": 256}
    assert body["keep_alive"] == "10m"
    assert body["messages"] == MESSAGES
    assert srv.requests[1] == ("GET", "/api/tags", None)
    assert srv.chat_bodies == [body]


def test_cli_serves_until_killed() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.ollama_server", "--port", "0", "--buy", "NVDA"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        with ollama.Client(host=url, timeout=2) as sync_client:
            reply = sync_client.chat("qwen3:8b", MESSAGES)
        document = json.loads(reply.message.content or "")
        assert document["signals"] == [
            {
                "symbol": "NVDA",
                "action": "buy",
                "confidence": 0.9,
                "rationale": document["signals"][0]["rationale"],
            }
        ]
        assert document["market_view"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=3) == 0
        assert proc.stdout is not None
        proc.stdout.close()
