"""Canary: distinctive Alpaca keys, many cycles full of errors, then look for the keys
everywhere Perun writes — zero hits allowed.

The loopback Alpaca server here is deliberately worse than Alpaca: its error bodies echo
the caller's key id and secret back (a misconfigured proxy or gateway can do that), so
every path from a broker error to the user — log lines, stderr, the headless output, the
database (errors, order and signal reasons), `perun doctor`, the screen — is exercised
with the secret in the message. Places searched: stdout and stderr of every run, every
file under the storage directory (the database with its WAL and shared-memory files),
the working directory, and SVG screenshots of the terminal UI (main screen and the
errors modal).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from perun_tui.config import load_settings
from perun_tui.events import DaemonState
from tests.fakes import alpaca_server
from tests.fakes.alpaca_server import FakeAlpaca
from tests.fakes.ollama_server import FakeOllama
from tests.faults.harness import SYMBOLS, Child, base_env
from tests.faults.inject import Injector
from tests.faults.trader import Trader

KEY_ID = "PKCANARY7QX2M9ZT4WLB"
SECRET = "cnrySeCrEt9f3Kq7Lx2Vb8Nw4Hj6Tp1Rs5Dz0Yc"
# the whole values and long pieces of them (a partial leak is a leak)
NEEDLES = (KEY_ID, SECRET, KEY_ID[2:14], SECRET[4:20], SECRET[-16:])
FAULTS = (
    ("/v2/account", "500"),
    ("/v2/account", "401"),
    ("/v2/positions", "403"),
    ("/v2/orders", "500"),
    ("/v2/orders:by_client_order_id", "500"),
    ("/v2/clock", "504"),
    ("/v2/stocks/*", "500"),
    ("/v2/stocks/*", "401"),
    ("/v2/stocks/*", "422"),
)
SUBMIT_FAULTS = ("500", "403", "500_after_create", "504_after_create", "429")


def leaks(blob: bytes | str, where: str) -> list[str]:
    data = blob.encode("utf-8", "replace") if isinstance(blob, str) else blob
    return [f"{where}: {needle[:6]}…" for needle in NEEDLES if needle.encode() in data]


@pytest.fixture
def echoing_alpaca(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAlpaca]:
    echo = f"key {KEY_ID} with secret {SECRET} refused"
    for status, (code, message) in list(alpaca_server._JSON_ERRORS.items()):
        monkeypatch.setitem(alpaca_server._JSON_ERRORS, status, (code, f"{message}: {echo}"))
    for status, html in list(alpaca_server._HTML_BODIES.items()):
        monkeypatch.setitem(
            alpaca_server._HTML_BODIES, status, html.replace("</h1>", f" {echo}</h1>")
        )
    rng = random.Random(7)
    prices = {s: round(rng.uniform(50, 500), 2) for s in SYMBOLS}
    with FakeAlpaca(KEY_ID, SECRET, prices=prices, fill_delay=0.1) as srv:
        yield srv


@pytest.fixture
def trader() -> Iterator[FakeOllama]:
    with FakeOllama(default_reply=Trader(11, trade_prob=0.8)) as srv:
        yield srv


class FaultRain:
    """Keeps injecting broker faults (each one echoing the keys) while a run goes on —
    the fault harness's named faults (``tests/faults/inject.py``), several a second."""

    def __init__(self, fake: FakeAlpaca, seed: int) -> None:
        self.injector = Injector(fake)
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.15):
            path, kind = self.rng.choice(FAULTS)
            self.injector.inject(f"path:{path}:{kind}", count=self.rng.randint(1, 3), method="*")
            if self.rng.random() < 0.4:
                self.injector.inject(f"submit:{self.rng.choice(SUBMIT_FAULTS)}")
            if self.rng.random() < 0.1:
                self.injector.inject("stream:drop")  # the re-read after reconnecting fails

    def __enter__(self) -> FaultRain:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(2)
        self.injector.clear()


def paper_env(tmp_path: Path, fake: FakeAlpaca, ollama_url: str) -> dict[str, str]:
    env = base_env(tmp_path, ollama_url)
    env.update(
        {
            "PERUN_TRADING__MODE": "paper",
            "PERUN_APPROVAL__MODE": "auto",
            "PERUN_ALPACA__TRADING_URL": fake.trading_url,
            "PERUN_ALPACA__DATA_URL": fake.data_url,
            "PERUN_ALPACA__STREAM_URL": fake.stream_url,
            "PERUN_ALPACA__MAX_REQUESTS_PER_MINUTE": "10000",
            "PERUN_ALPACA__REQUEST_TIMEOUT_S": "2",
            "APCA_API_KEY_ID": KEY_ID,
            "APCA_API_SECRET_KEY": SECRET,
        }
    )
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    return env


def run_with_faults(
    fake: FakeAlpaca, args: list[str], env: dict[str, str], cwd: Path, seconds: float, seed: int
) -> Child:
    """Run headless; once it trades (a start-up failure is another test), inject faults."""
    child = Child(args, env, cwd)
    started = child.wait_for(
        lambda lines: any("CycleStarted" in ln.raw or " started at " in ln.raw for ln in lines),
        30,
    )
    assert started, child.output()[-2000:] + "\n".join(child.stderr[-20:])
    with FaultRain(fake, seed=seed):
        time.sleep(seconds)
    child.send(signal.SIGTERM)
    child.finish(30)
    return child


def storage_leaks(root: Path) -> list[str]:
    found: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            found += leaks(path.read_bytes(), str(path.relative_to(root)))
    return found


@pytest.mark.timeout(180)
def test_keys_never_leave_the_process(
    tmp_path: Path, echoing_alpaca: FakeAlpaca, trader: FakeOllama
) -> None:
    fake = echoing_alpaca
    env = paper_env(tmp_path, fake, trader.url)
    found: list[str] = []
    outputs: list[str] = []

    # 1. readable lines and JSON lines, with faults coming all the time
    for i, args in enumerate((
        ["run", "--headless", "--every", "100ms"],
        ["run", "--headless", "--json", "--every", "100ms"],
    )):
        child = run_with_faults(fake, args, env, tmp_path, 5, seed=i)
        outputs.append(child.output())
        found += leaks(child.output(), f"stdout {args[-3:]}")
        found += leaks("\n".join(child.stderr), f"stderr {args[-3:]}")

    # 2. keys refused at start-up: the message names the key only masked
    fake.faults.add("/v2/account", "401", count=None)
    refused = subprocess.run(
        [sys.executable, "-m", "perun_tui.cli", "run", "--headless", "--cycles", "1"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60,
    )
    fake.faults.clear()
    assert refused.returncode != 0
    found += leaks(refused.stdout + refused.stderr, "refused start")

    # 3. `perun doctor`, healthy and failing
    for label, fault in (("doctor ok", None), ("doctor failing", "500")):
        if fault:
            fake.faults.add("*", fault, count=None, method="*")
        doctor = subprocess.run(
            [sys.executable, "-m", "perun_tui.cli", "doctor"],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60,
        )
        fake.faults.clear()
        found += leaks(doctor.stdout + doctor.stderr, label)
        if fault is None:
            assert "PK…LB" in doctor.stdout, doctor.stdout  # shown, masked

    # 4. what was written to disk
    found += storage_leaks(tmp_path)

    assert not found, "secrets leaked:\n" + "\n".join(found)
    # the canary only means something if errors really flowed through every path
    text = "\n".join(outputs)
    assert text.count("[REDACTED]") >= 3, text[-3000:]
    events = [json.loads(x) for x in outputs[1].splitlines() if x.startswith("{")]
    troubles = [
        e for e in events
        if e["event"] == "ErrorRaised" or e.get("level") in ("warning", "error")
    ]
    assert any("[REDACTED]" in json.dumps(e) for e in troubles), "the JSON run saw no errors"
    assert fake.requests("POST", "/v2/orders"), "no order was ever attempted"


@pytest.mark.timeout(120)
async def test_keys_never_on_screen(
    tmp_path: Path, echoing_alpaca: FakeAlpaca, trader: FakeOllama
) -> None:
    pytest.importorskip("textual")
    from perun_tui.tui.app import PerunApp, real_runtime
    from perun_tui.tui.screens.errors import ErrorsModal

    env = paper_env(tmp_path, echoing_alpaca, trader.url)
    settings = load_settings(env=env, cwd=tmp_path, use_dotenv=False)
    app = PerunApp(settings, runtime_factory=real_runtime(every_s=0.2))
    found: list[str] = []
    shots = tmp_path / "shots"
    shots.mkdir()
    async with app.run_test(size=(120, 40)) as pilot:

        def masked() -> bool:  # an error that quoted the keys reached the screen
            return any("[REDACTED]" in f"{e.message} {e.detail}" for e in app.main.errors)

        deadline = time.monotonic() + 30
        while app.main.status.state not in (DaemonState.WAITING, DaemonState.CYCLING):
            assert time.monotonic() < deadline, "the daemon did not start"
            await pilot.pause(0.05)
        with FaultRain(echoing_alpaca, seed=3):
            deadline = time.monotonic() + 40
            while not masked() and time.monotonic() < deadline:
                await pilot.pause(0.1)
            assert masked(), [e.message for e in app.main.errors]
            await pilot.pause(0.5)
            (shots / "main.svg").write_text(app.export_screenshot(title="Perun"))
            await pilot.press("e")
            deadline = time.monotonic() + 10
            while not isinstance(app.screen, ErrorsModal) and time.monotonic() < deadline:
                await pilot.pause(0.05)
            assert isinstance(app.screen, ErrorsModal)
            await pilot.pause(0.2)
            (shots / "errors.svg").write_text(app.export_screenshot(title="Perun errors"))
        await pilot.press("escape")
        await pilot.press("q")
        deadline = time.monotonic() + 15
        while not app._exit and time.monotonic() < deadline:
            await pilot.pause(0.05)
    for shot in shots.iterdir():
        found += leaks(shot.read_bytes(), shot.name)
    assert b"REDACTED" in (shots / "errors.svg").read_bytes()
    records = "\n".join(f"{e.where} {e.message} {e.detail}" for e in app.main.errors)
    found += leaks(records, "error records")
    found += storage_leaks(tmp_path / "data")
    assert not found, "secrets leaked:\n" + "\n".join(found)
