"""Notifications against loopback receivers: an HTTP server (stdlib) and an SMTP server
(aiosmtpd), both on 127.0.0.1. Nothing reaches the internet."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from perun_tui.bus import EventBus
from perun_tui.config import Settings, load_settings
from perun_tui.events import (
    CycleFinished,
    FillReceived,
    Level,
    LogEvent,
    Notification,
    OrderChanged,
)
from perun_tui.headless import run_headless
from perun_tui.models import (
    Account,
    Fill,
    Order,
    OrderStatus,
    OrderUpdate,
    Position,
    Quote,
    Side,
)
from perun_tui.runtime import build_runtime
from perun_tui.services.memory import EXCHANGE_TZ, Memory
from perun_tui.services.notification import (
    Category,
    NotificationService,
    ScreenAlerts,
    build_notification_service,
    category_of,
)
from perun_tui.services.notifiers.email import EmailNotifier
from perun_tui.services.notifiers.webhook import WebhookNotifier, detect_style
from perun_tui.services.optimization import DailySummary
from tests.sim import SIM_START

# --------------------------------------------------------------------------- receivers


class Receiver:
    """A loopback HTTP server recording every JSON body POSTed to it."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.status = status
        self.delay_s = delay_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                outer.bodies.append(body)
                outer.paths.append(self.path)
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"  # nothing listens there any more


async def wait_for(predicate: Any, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def note(title: str, message: str, *tags: str, level: Level = Level.INFO) -> Notification:
    return Notification(title=title, message=message, level=level, tags=tags)


# --------------------------------------------------------------------------- webhook shapes


@pytest.mark.parametrize(
    ("style", "check"),
    [
        ("generic", lambda b: b["title"] == "Filled" and b["category"] == "fills"
         and b["source"] == "perun" and b["message"] == "BUY AAPL 10 @ 100.00"),
        ("slack", lambda b: set(b) == {"text"} and b["text"].startswith("*Perun (sim) · Filled*")),
        ("mattermost", lambda b: b["text"].startswith("**Perun (sim) · Filled**")
         and b["username"] == "Perun"),
        ("discord", lambda b: b["content"].startswith("**Perun (sim) · Filled**")
         and b["allowed_mentions"] == {"parse": []}),
    ],
)
async def test_webhook_payload_shapes(receiver: Receiver, style: str, check: Any) -> None:
    hook = WebhookNotifier(receiver.url, style=style)
    try:
        await hook.send(note("Filled", "BUY AAPL 10 @ 100.00", "fill"))
    finally:
        await hook.aclose()
    assert len(receiver.bodies) == 1 and check(receiver.bodies[0])


def test_style_detection() -> None:
    assert detect_style("https://hooks.slack.com/services/T/B/x") == "slack"
    assert detect_style("https://discord.com/api/webhooks/1/abc") == "discord"
    assert detect_style("https://chat.example.com/hooks/abc123") == "mattermost"
    assert detect_style("https://example.com/perun") == "generic"


def test_categories_from_daemon_tags() -> None:
    assert category_of(note("Filled", "x", "fill")) is Category.FILLS
    assert category_of(note("Halted", "x", "halt")) is Category.HALTS
    assert category_of(note("Analysis failed", "x", "analysis")) is Category.ANALYSIS_FAILURES
    assert category_of(note("x", "y")) is Category.OTHER


# --------------------------------------------------------------------------- the service


async def test_notify_never_waits_for_a_slow_receiver() -> None:
    slow = Receiver(delay_s=1.0)
    hook = WebhookNotifier(slow.url, timeout_s=0.3)
    service = NotificationService([hook], rate_limit_per_minute=100)
    try:
        await service.notify("Filled", "BUY A 1 @ 1.00", Level.INFO, "fill")
        # sent inline, the 0.3 s timeout would already have been hit and counted
        assert service.stats()[hook.name]["failures"] == 0
        await wait_for(lambda: service.stats()[hook.name]["failures"] == 1)
    finally:
        await service.aclose(timeout_s=1)
        slow.close()


async def test_filters_and_dedup(receiver: Receiver) -> None:
    hook = WebhookNotifier(receiver.url, events=["halts", "fills"])
    service = NotificationService([hook], rate_limit_per_minute=100, dedup_window_s=60)
    await service.notify("Filled", "BUY A 1 @ 1.00", Level.INFO, "fill")
    await service.notify("Filled", "BUY A 1 @ 1.00", Level.INFO, "fill")  # duplicate
    await service.notify("Signals awaiting approval", "2 new", Level.INFO, "pending")
    await service.notify("Halted", "kill switch", Level.ERROR, "halt")
    await service.aclose()
    assert [b["title"] for b in receiver.bodies] == ["Filled", "Halted"]


async def test_rate_limit_holds_the_excess_for_one_digest(receiver: Receiver) -> None:
    now = [1000.0]
    hook = WebhookNotifier(receiver.url)
    service = NotificationService(
        [hook], rate_limit_per_minute=3, dedup_window_s=0, clock=lambda: now[0]
    )
    for i in range(7):
        await service.notify("Order rejected", f"BUY A {i}", Level.WARNING, "rejection")
    await wait_for(lambda: len(receiver.bodies) == 3)
    await asyncio.sleep(0.2)
    assert len(receiver.bodies) == 3  # the window is full: the rest is held
    now[0] += 61  # the window moves on
    await wait_for(lambda: len(receiver.bodies) == 4)
    digest = receiver.bodies[3]
    assert digest["title"] == "4 notifications (rate limited)"
    assert digest["message"].count("BUY A") == 4
    await service.aclose()


async def test_close_sends_what_the_rate_limit_holds_as_one_digest(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    hook = WebhookNotifier(receiver.url)
    service = NotificationService(
        [hook], rate_limit_per_minute=2, dedup_window_s=0, clock=lambda: 1000.0
    )
    for i in range(5):
        await service.notify("Order rejected", f"SELL B {i}", Level.WARNING, "rejection")
    await wait_for(lambda: len(receiver.bodies) == 2)
    with caplog.at_level(logging.INFO, logger="perun.notify"):
        await service.aclose()  # the clock never moves: only closing can send the rest
    assert [b["title"] for b in receiver.bodies] == [
        "Order rejected", "Order rejected", "3 notifications (rate limited)"
    ]
    assert [f"SELL B {i}" in receiver.bodies[2]["message"] for i in range(5)] == [
        False, False, True, True, True
    ]
    assert any("sending 3 notification(s) held by the rate limit" in r.getMessage()
               for r in caplog.records)
    assert service.stats()[hook.name]["held"] == 0


async def test_fills_and_daily_summaries_are_never_rate_limited(receiver: Receiver) -> None:
    hook = WebhookNotifier(receiver.url)
    service = NotificationService(
        [hook], rate_limit_per_minute=2, dedup_window_s=60, clock=lambda: 1000.0
    )
    for i in range(6):  # six partial fills of the same size at the same price
        await service.notify("Filled", "BUY A 1 @ 10.00", Level.INFO, "fill", key=f"fill:f{i}")
    await service.notify("Filled", "BUY A 1 @ 10.00", Level.INFO, "fill", key="fill:f5")  # again
    await service.notify("Daily summary 2026-11-24", "equity", Level.INFO, "summary")
    await service.notify("Daily summary 2026-11-25", "equity", Level.INFO, "summary")
    await service.notify("Halted", "kill switch", Level.ERROR, "halt")
    await service.notify("Halted", "loss limit", Level.ERROR, "halt")
    await service.notify("Halted", "kill switch again", Level.ERROR, "halt")  # over the limit
    await wait_for(lambda: len(receiver.bodies) == 10)
    await service.aclose()
    titles = [b["title"] for b in receiver.bodies]
    assert titles.count("Filled") == 6  # one per fill id; the repeated fill f5 is dropped
    assert titles.count("Daily summary 2026-11-24") == 1
    assert titles.count("Daily summary 2026-11-25") == 1
    assert len(receiver.bodies) == 11 and titles.count("Halted") == 3
    assert receiver.bodies[-1]["message"] == "kill switch again"  # held, sent on close


def test_screen_alerts_filter_toasts_and_the_bell(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, PERUN_NOTIFY__TOAST_EVENTS="halts,fills", PERUN_NOTIFY__BELL_EVENTS="halts"
    )
    alerts = ScreenAlerts.from_settings(settings)
    fill, halt = note("Filled", "x", "fill"), note("Halted", "x", "halt")
    pending, untagged = note("Signals awaiting approval", "x", "pending"), note("x", "y")
    assert [alerts.toast(n) for n in (fill, halt, pending, untagged)] == [True, True, False, True]
    assert [alerts.bell(n) for n in (fill, halt, pending, untagged)] == [False, True, False, False]
    quiet = ScreenAlerts.from_settings(settings_for(tmp_path, PERUN_NOTIFY__BELL="false"))
    assert not quiet.bell(halt) and quiet.toast(pending)
    defaults = ScreenAlerts.from_settings(settings_for(tmp_path))
    assert defaults.bell(pending) and not defaults.bell(fill) and defaults.toast(fill)


async def test_failure_logged_once_then_recovery(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    bus = EventBus()
    logs = bus.subscribe(LogEvent)
    receiver.status = 500
    hook = WebhookNotifier(receiver.url)
    service = NotificationService([hook], rate_limit_per_minute=100, bus=bus)
    with caplog.at_level(logging.INFO, logger="perun.notify"):
        for i in range(5):
            await service.notify("Filled", f"BUY A {i}", Level.INFO, "fill")
        await wait_for(lambda: service.stats()[hook.name]["failures"] == 5)
        receiver.status = 200
        await service.notify("Filled", "BUY A 99", Level.INFO, "fill")
        await wait_for(lambda: service.stats()[hook.name]["delivered"] == 1)
    await service.aclose()
    failed = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(failed) == 1 and "HTTP 500" in failed[0].getMessage()
    assert "/hook" not in failed[0].getMessage()  # the URL path may hold a token
    messages = [e.message for e in logs.drain()]
    assert sum("failed:" in m for m in messages) == 1
    assert sum("works again" in m for m in messages) == 1


async def test_order_rejections_are_watched(receiver: Receiver) -> None:
    bus = EventBus()
    hook = WebhookNotifier(receiver.url, events=["rejections"])
    service = NotificationService([hook], rate_limit_per_minute=100)
    service.watch(bus)
    order = Order(client_order_id="c1", symbol="AAPL", side=Side.BUY, qty=5,
                  status=OrderStatus.REJECTED, reason="insufficient buying power")
    bus.publish(OrderChanged(order=order))
    bus.publish(OrderChanged(order=order.model_copy(update={"status": OrderStatus.FILLED})))
    await wait_for(lambda: len(receiver.bodies) == 1)
    await service.aclose()
    body = receiver.bodies[0]
    assert body["title"] == "Order rejected" and body["category"] == "rejections"
    assert body["message"] == "BUY AAPL 5: insufficient buying power"


async def test_fills_no_stream_event_brought_are_watched(receiver: Receiver) -> None:
    """Gap and restated fills are told from the bus; a fill the stream reported is not
    (the daemon tells those as the stream brings them: never twice)."""
    bus = EventBus()
    service = NotificationService([WebhookNotifier(receiver.url, events=["fills"])])
    service.watch(bus)
    at = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    for fill_id, qty in (("gap:b1:10", 6), ("rest:b2:3", 3), ("b3-exec-1", 2)):
        bus.publish(FillReceived(fill=Fill(fill_id=fill_id, client_order_id="c", symbol="AAPL",
                                           side=Side.SELL, qty=qty, price=101.5, ts=at)))
    await service.aclose()
    assert [(b["title"], b["message"]) for b in receiver.bodies] == [
        ("Filled", "SELL AAPL 6 @ 101.50"), ("Filled", "SELL AAPL 3 @ 101.50")
    ]


# --------------------------------------------------------------------------- the daemon


def settings_for(tmp_path: Path, **env: str) -> Settings:
    base = {
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_SIM__START": SIM_START,
        "PERUN_LLM__PROVIDER": "rules",
        "PERUN_RISK__COOLDOWN_MINUTES": "0",
        "PERUN_APPROVAL__MODE": "auto",
        "PERUN_NOTIFY__RATE_LIMIT_PER_MINUTE": "1000",
    }
    base.update(env)
    return load_settings(env=base, cwd=tmp_path, use_dotenv=False)


async def run_with_notifications(
    settings: Settings, cycles: int
) -> tuple[list[Any], NotificationService]:
    """The runtime with its notification wiring (added here until runtime.py builds it)."""
    runtime = await build_runtime(settings, every_s=0.01, max_cycles=cycles, quote_interval_s=0.05)
    service: NotificationService | None = getattr(runtime, "notifications", None)
    summary: DailySummary | None = getattr(runtime, "summary", None)
    if service is None or summary is None:
        service = build_notification_service(settings, runtime.bus)
        runtime.daemon.notifications = service
        summary = DailySummary(runtime.memory, service, enabled=settings.notify.daily_summary)
        summary.attach(runtime.bus)
    sub: Any = runtime.bus.subscribe(coalesce=False)
    try:
        await asyncio.wait_for(runtime.daemon.run(), 60)
        await summary.wait()
        await service.aclose()
    finally:
        await runtime.close()
    return sub.drain(), service


async def test_one_webhook_message_per_fill_and_one_daily_summary(
    tmp_path: Path, receiver: Receiver
) -> None:
    settings = settings_for(tmp_path, PERUN_NOTIFY__WEBHOOK_URL=receiver.url)
    events, _ = await run_with_notifications(settings, 30)  # 26 cycles a session: crosses one
    async with await Memory.open(settings.database_path()) as memory:
        fills = await memory.fills()
    assert fills
    by_category: dict[str, list[dict[str, Any]]] = {}
    for body in receiver.bodies:
        by_category.setdefault(body["category"], []).append(body)
    assert len(by_category["fills"]) == len(fills)
    expected = {f"{f.side.value.upper()} {f.symbol} {f.qty:g} @ {f.price:.2f}" for f in fills}
    assert {b["message"] for b in by_category["fills"]} == expected
    (summary,) = by_category["daily_summary"]
    first_day = fills[0].ts.astimezone(EXCHANGE_TZ).date()
    assert summary["title"] == f"Daily summary {first_day.isoformat()}"
    assert "equity" in summary["message"] and "fill(s)" in summary["message"]
    assert "pending" not in by_category  # not in the default webhook events
    assert sum(isinstance(e, CycleFinished) for e in events) == 30


async def test_the_200_cycle_run_sends_every_fill_and_every_closed_session(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The issue's run shape (`PERUN_APPROVAL__MODE=auto perun run --headless --cycles 200`)
    with the default rate limit (20 a minute): more fills than that still arrive one each."""
    env = {
        "PERUN_STORAGE__PATH": str(tmp_path / "data"),
        "PERUN_SIM__START": SIM_START,
        "PERUN_LLM__PROVIDER": "rules",
        "PERUN_APPROVAL__MODE": "auto",
        "PERUN_NOTIFY__WEBHOOK_URL": receiver.url,
    }
    settings = load_settings(env=env, cwd=tmp_path, use_dotenv=False)
    assert settings.notify.rate_limit_per_minute == 20
    out = io.StringIO()
    code = await asyncio.wait_for(
        run_headless(settings, cycles=200, every_s=0.005, as_json=True, out=out), 120
    )
    assert code == 0
    async with await Memory.open(settings.database_path()) as memory:
        fills = await memory.fills()
        days = list(dict.fromkeys(
            at.astimezone(EXCHANGE_TZ).date() for at, _ in await memory.equity_curve()
        ))
    assert len(fills) > 20 and len(days) > 5  # more than the rate limit allows in a minute
    by_category: dict[str, list[dict[str, Any]]] = {}
    for body in receiver.bodies:
        by_category.setdefault(body["category"], []).append(body)
    assert len(by_category["fills"]) == len(fills)
    assert sorted(b["message"] for b in by_category["fills"]) == sorted(
        f"{f.side.value.upper()} {f.symbol} {f.qty:g} @ {f.price:.2f}" for f in fills
    )
    # every session but the last one, which was still open when the run stopped
    assert [b["title"] for b in by_category["daily_summary"]] == [
        f"Daily summary {d.isoformat()}" for d in days[:-1]
    ]
    assert not any("rate limited" in b["title"] for b in receiver.bodies)


async def test_the_daily_summary_counts_the_sessions_own_pnl(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A position bought on Monday and half sold on Tuesday: Tuesday's summary measures its
    P&L from Tuesday's first snapshot (as `perun report` over that day does), so realized +
    unrealized is the day's equity change — not the gain since the original purchase."""
    mon = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)  # 09:30 New York
    tue = mon + timedelta(days=1)

    def snap(cash: float, qty: float, price: float) -> tuple[Account, list[Position], list[Quote]]:
        account = Account(cash=cash, equity=cash + qty * price, buying_power=cash)
        held = [Position(symbol="A", qty=qty, avg_price=100, market_price=price)] if qty else []
        return account, held, [Quote(symbol="A", ts=mon, bid=price, ask=price, last=price)]

    rows = [  # (at, cash, qty of A, price of A)
        (mon, 10_000, 0, 100),
        (mon + timedelta(minutes=15), 9_000, 10, 110),  # bought 10 @ 100
        (tue, 9_000, 10, 120),  # equity 10,200: Tuesday starts here
        (tue + timedelta(minutes=15), 9_625, 5, 118),  # sold 5 @ 125; equity 10,215
    ]
    path = tmp_path / "perun.db"
    async with await Memory.open(path) as memory:
        for cycle, (at, cash, qty, price) in enumerate(rows, 1):
            await memory.save_snapshot(cycle, at, *snap(cash, qty, price))
        await memory.save_fill(Fill(fill_id="f1", client_order_id="o1", symbol="A",
                                    side=Side.BUY, qty=10, price=100,
                                    ts=mon + timedelta(minutes=1)))
        await memory.save_fill(Fill(fill_id="f2", client_order_id="o2", symbol="A",
                                    side=Side.SELL, qty=5, price=125,
                                    ts=tue + timedelta(minutes=1)))
        service = NotificationService([WebhookNotifier(receiver.url)])
        summary = DailySummary(memory, service)
        assert await summary.send(tue.astimezone(EXCHANGE_TZ).date())
        await service.aclose()
    (body,) = receiver.bodies
    assert body["title"] == "Daily summary 2026-03-03"
    lines = body["message"].splitlines()
    assert lines[0].startswith("equity 10,215.00 (+15.00, ")
    # sold 5 @ 125 against the 120 Tuesday opened at: +25 (not +125 against the cost 100);
    # 5 left, 118 against 120: -10 (not +90); together the day's +15
    assert lines[1].endswith("1 fill(s) · realized +25.00")
    assert lines[2] == "open: A 5 (unrealized -10.00)"


async def test_fills_recorded_while_the_update_stream_is_dead_are_notified_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    """No stream event brings these fills: each cycle's REST re-read records them (as the
    gap between the order's filled quantity and its stored fills). The webhook still gets
    one message per stored fill."""
    from tests.integration.test_crash_safety import BUY_AAPL, ScriptedAnalyst, _sim_settings

    settings = _sim_settings(tmp_path, PERUN_NOTIFY__WEBHOOK_URL=receiver.url)
    runtime = await build_runtime(settings, every_s=0.01, quote_interval_s=0.05)
    runtime.daemon.analysis.primary = ScriptedAnalyst(BUY_AAPL)

    async def dead_stream() -> AsyncIterator[OrderUpdate]:
        await asyncio.Event().wait()  # connected, and never a word
        yield  # type: ignore[misc]  # pragma: no cover

    runtime.broker.order_updates = dead_stream  # type: ignore[method-assign]
    task = asyncio.create_task(runtime.daemon.run())
    memory = runtime.memory
    try:
        for _ in range(1200):  # bounded: until two orders are filled and recorded
            orders = await memory.orders()
            fills = await memory.fills()
            done = [o for o in orders if o.status is OrderStatus.FILLED]
            if len(done) >= 2 and sum(f.qty for f in fills) >= sum(o.filled_qty for o in done):
                break
            await asyncio.sleep(0.05)
        await runtime.daemon.stop()
        await asyncio.wait_for(task, 30)
        fills = await memory.fills()
        service: NotificationService = runtime.notifications
        await service.aclose()
    finally:
        if not task.done():
            await runtime.daemon.stop()
            await asyncio.wait_for(task, 30)
        await runtime.close()
    assert len(fills) >= 2 and all(f.fill_id.startswith("gap:") for f in fills)
    sent = sorted(b["message"] for b in receiver.bodies if b["category"] == "fills")
    assert sent == sorted(f"BUY AAPL {f.qty:g} @ {f.price:.2f}" for f in fills)


async def test_receiver_down_cycles_carry_on_and_the_log_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path, PERUN_NOTIFY__WEBHOOK_URL=closed_port_url())
    with caplog.at_level(logging.WARNING, logger="perun.notify"):
        events, service = await run_with_notifications(settings, 12)
    assert sum(isinstance(e, CycleFinished) for e in events) == 12
    (name,) = [n for n in service.stats() if n.startswith("webhook")]
    assert service.stats()[name]["failures"] >= 2  # it failed again and again ...
    warned = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(warned) == 1  # ... and said so once
    shown = [e for e in events if isinstance(e, LogEvent) and e.source == "notify"]
    assert len(shown) == 1 and "cannot reach 127.0.0.1" in shown[0].message


# --------------------------------------------------------------------------- email


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 signed by a throwaway CA (trustme), and the CA
    file the client is told to trust — certificate verification stays on."""
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    return server, cafile


async def test_email_over_starttls_with_login(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    server_tls, cafile = loopback_tls(tmp_path)
    logins: list[tuple[str, str]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=data.password == b"s3cret")

    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, tls_context=server_tls, require_starttls=True,
        authenticator=authenticator, auth_require_tls=True,
    )
    controller.start()
    try:
        mail = EmailNotifier(
            host="127.0.0.1", port=port, sender="perun@example.com",
            recipients=["me@example.com"], user="perun", password="s3cret",
            starttls=True, cafile=str(cafile), timeout_s=5,
        )
        await mail.send(note("Halted", "daily loss limit", "halt", level=Level.ERROR))
    finally:
        controller.stop()
    assert logins == [("perun", "s3cret")]
    ((sender, rcpts, content),) = inbox.messages
    assert sender == "perun@example.com" and rcpts == ["me@example.com"]
    text = content.decode()
    assert "Subject: [Perun sim] Halted" in text and "daily loss limit" in text


async def test_email_refuses_a_server_without_starttls_and_plain_relay_works(
    tmp_path: Path,
) -> None:
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        tls = EmailNotifier(host="127.0.0.1", port=port, sender="p@example.com",
                            recipients=["me@example.com"], timeout_s=5)
        with pytest.raises(Exception, match="does not offer STARTTLS"):
            await tls.send(note("x", "y"))
        relay = EmailNotifier(host="127.0.0.1", port=port, sender="p@example.com",
                              recipients=["me@example.com"], starttls=False, timeout_s=5)
        service = NotificationService([relay])
        await service.notify("Daily summary 2026-03-02", "equity 100,000", Level.INFO, "summary")
        await service.aclose()
    finally:
        controller.stop()
    assert len(inbox.messages) == 1
    assert "Daily summary 2026-03-02" in inbox.messages[0][2].decode()


def test_settings_build_the_configured_notifiers(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        PERUN_NOTIFY__WEBHOOK_URL="https://hooks.slack.com/services/T/B/x",
        PERUN_NOTIFY__SMTP_HOST="127.0.0.1",
        PERUN_NOTIFY__EMAIL_TO="me@example.com",
        PERUN_NOTIFY__EMAIL_EVENTS="halts,daily_summary",
        PERUN_NOTIFY__SMTP_PASSWORD="pw-never-shown",
    )
    service = build_notification_service(settings, EventBus())
    names = [n.name for n in service.notifiers]
    assert names == ["screen", "log", "webhook (slack, hooks.slack.com)", "email (127.0.0.1:587)"]
    email = service.notifiers[3]
    assert isinstance(email, EmailNotifier)
    assert email.events == frozenset({Category.HALTS, Category.DAILY_SUMMARY})
    assert "pw-never-shown" not in json.dumps(settings.redacted(), default=str)
