"""Which analyst answers, said plainly: the Ollama analyst through the real client against
the loopback server, the fallback when it is down, and the headless run of issue 4's
'done means' as a user would type it."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from perun_tui.bus import EventBus
from perun_tui.config import Settings, load_settings
from perun_tui.events import AnalystStatus, LogEvent
from perun_tui.llm.ollama import OllamaAnalyst
from perun_tui.llm.rules import RulesAnalyst
from perun_tui.services.ai import AnalysisService
from tests.fakes.ollama_server import FakeOllama, Reply, buy_document
from tests.sim import SIM_START

MODEL = "qwen3:8b"


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models=[MODEL], default_reply=Reply(content=buy_document("NVDA"))) as srv:
        yield srv


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def settings_for(tmp_path: Path, host: str, fallback: str = "rules") -> Settings:
    env = {
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_LLM__HOST": host,
        "PERUN_LLM__FALLBACK": fallback,
        "PERUN_LLM__TIMEOUT_S": "5",
    }
    return load_settings(env=env, cwd=tmp_path, use_dotenv=False)


def service(settings: Settings, bus: EventBus) -> AnalysisService:
    fallback = RulesAnalyst() if settings.llm.fallback == "rules" else None
    return AnalysisService(settings, bus, OllamaAnalyst(settings.llm), fallback)


async def test_choice_follows_the_server_and_is_said_once_per_change(
    tmp_path: Path, ollama: FakeOllama
) -> None:
    bus = EventBus()
    sub = bus.subscribe(coalesce=False)
    svc = service(settings_for(tmp_path, ollama.url), bus)
    try:
        up = await svc.choose()
        assert (up.label, up.detail) == (MODEL, "") and up.analyst is svc.primary
        await svc.choose()  # unchanged: nothing new said
        ollama.models = []  # the model disappears: fall back to rules, say so once
        down = await svc.choose()
        await svc.choose()
        assert down.label == "rules (fallback)" and down.analyst is svc.fallback
        assert "model qwen3:8b not found" in down.detail
        ollama.models = [MODEL]  # back again
        again = await svc.choose()
        assert again.analyst is svc.primary
    finally:
        await svc.close()
    events = sub.drain()
    statuses = [e for e in events if isinstance(e, AnalystStatus)]
    assert [(s.available, s.missing_model) for s in statuses] == [
        (True, ""), (False, MODEL), (True, "")
    ]
    logs = [e.message for e in events if isinstance(e, LogEvent)]
    assert sum("not found" in m for m in logs) == 1
    assert any(m == f"{MODEL} is available again" for m in logs)


async def test_without_a_fallback_there_is_no_analysis_and_it_says_why(
    tmp_path: Path, ollama: FakeOllama
) -> None:
    ollama.models = []
    svc = service(settings_for(tmp_path, ollama.url, fallback="none"), EventBus())
    try:
        choice = await svc.choose()
        result, _ = await svc.analyze(choice, None, lambda channel, text: None)  # type: ignore[arg-type]
    finally:
        await svc.close()
    assert choice.analyst is None and choice.label == "none"
    assert result.signals == [] and result.error is not None
    assert 'llm.fallback = "none"' in result.error


async def test_pulling_the_missing_model_brings_the_llm_back(
    tmp_path: Path, ollama: FakeOllama
) -> None:
    ollama.models = []
    svc = service(settings_for(tmp_path, ollama.url), EventBus())
    steps: list[tuple[str, float | None]] = []
    try:
        assert (await svc.choose()).analyst is svc.fallback
        outcome = await svc.pull(lambda status, fraction: steps.append((status, fraction)))
        assert outcome == f"{MODEL} is ready"
        assert (await svc.choose()).analyst is svc.primary
    finally:
        await svc.close()
    assert steps[-1][0] == "success"
    assert any(fraction is not None for _, fraction in steps)  # a progress bar can be fed


def headless(tmp_path: Path, host: str, *extra: str) -> subprocess.CompletedProcess[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_SIM__START": SIM_START,
        "PERUN_LLM__PROVIDER": "ollama",
        "OLLAMA_HOST": host,
        "PERUN_LLM__TIMEOUT_S": "5",
    }
    env.update(dict(e.split("=", 1) for e in extra))
    cmd = [sys.executable, "-m", "perun_tui.cli", "run", "--headless", "--cycles", "2",
           "--every", "1s"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=env)


def test_done_means_headless_buy_from_the_llm(tmp_path: Path, ollama: FakeOllama) -> None:
    proc = headless(tmp_path, ollama.url)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "signal BUY NVDA" in out and "broke out above resistance" in out
    assert "rules" not in out.split("analysis 1 by", 1)[1].split("\n", 1)[0]
    # the usage is shown with the analysis: tokens in and out, load time, speed
    assert re.search(rf"analysis 1 by {MODEL}: .*\d+ in / \d+ out · load \d+ ms · \d+ tok/s", out)
    db = sqlite3.connect(tmp_path / "data" / "perun-sim.db")
    rows = db.execute("SELECT analyst, prompt, raw_reply, usage FROM analyses").fetchall()
    assert len(rows) == 2
    for analyst, prompt, raw_reply, usage in rows:
        assert analyst == MODEL
        assert "NVDA|" in prompt and "[system]" in prompt
        assert json.loads(raw_reply)["signals"][0]["symbol"] == "NVDA"
        assert json.loads(usage)["prompt_tokens"] > 0
    assert len(ollama.chat_bodies) == 2  # one call per cycle


def test_done_means_server_down_says_so_and_falls_back(tmp_path: Path) -> None:
    with FakeOllama(models=[MODEL]) as srv:
        host = srv.url  # a port that was just closed: nothing listens there now
    rules = headless(tmp_path / "rules", host)
    assert rules.returncode == 0, rules.stderr
    assert f"Ollama not reachable at {host}" in rules.stdout
    assert "analysis 1 by rules (fallback)" in rules.stdout
    none = headless(tmp_path / "none", host, "PERUN_LLM__FALLBACK=none")
    assert none.returncode == 0, none.stderr
    assert "analysis 1 FAILED" in none.stdout and "signal " not in none.stdout


def doctor(tmp_path: Path, host: str) -> subprocess.CompletedProcess[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PERUN_", "OLLAMA_"))},
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_LLM__PROVIDER": "ollama",
        "OLLAMA_HOST": host,
        "PERUN_LLM__TIMEOUT_S": "5",
        "COLUMNS": "250",
    }
    return subprocess.run([sys.executable, "-m", "perun_tui.cli", "doctor"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)


def doctor_row(out: str, check: str) -> str:
    return next(line for line in out.splitlines() if line.strip("│ ").startswith(check))


def test_perun_doctor_checks_ollama_and_exits_non_zero_on_a_problem(
    tmp_path: Path, ollama: FakeOllama
) -> None:
    """Issue 4's `perun doctor`: the server's version, the model, its capabilities and a
    round trip with its latency, one line each with OK / problem / what to do; the exit
    code says whether anything is wrong."""
    ok = doctor(tmp_path / "ok", ollama.url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"version {ollama.version}" in doctor_row(ok.stdout, "ollama server")
    assert "OK" in doctor_row(ok.stdout, "model") and f"{MODEL} present" in ok.stdout
    assert "thinking" in doctor_row(ok.stdout, "capabilities")
    assert re.search(r"OK .* \d+ ms \(model load \d+ ms\)", doctor_row(ok.stdout, "round trip"))

    ollama.models = []
    missing = doctor(tmp_path / "missing", ollama.url)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    row = doctor_row(missing.stdout, "model")
    assert "problem" in row and f"ollama pull {MODEL}" in row

    down_host = closed_port_url()
    down = doctor(tmp_path / "down", down_host)
    assert down.returncode == 1, down.stdout + down.stderr
    row = doctor_row(down.stdout, "ollama server")
    assert "problem" in row and f"Ollama not reachable at {down_host}" in row
    assert "ollama serve" in row
    assert "Traceback" not in down.stdout + down.stderr
