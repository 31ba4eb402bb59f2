"""AlpacaBroker with the real alpaca-py clients against the loopback FakeAlpaca.

What matters most here is that orders are never doubled: the SDK's own retries are off
(the fake sees exactly one POST per attempt), every failure is classified, and an unknown
outcome is resolved by client order id — ending with exactly one order per id at the fake.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from perun_tui.brokers.alpaca import (
    AlpacaBroker,
    alpaca_status,
    check_urls,
    history_start,
)
from perun_tui.brokers.alpaca.history import merge_bars, timeframe_plan
from perun_tui.brokers.alpaca.stream import _StreamLedger
from perun_tui.brokers.base import (
    Broker,
    BrokerRejected,
    BrokerRetryable,
    BrokerUnknownOutcome,
    OrderRefused,
    UnknownSymbol,
)
from perun_tui.brokers.ratelimit import TokenBucket
from perun_tui.config import ConfigError, Settings
from perun_tui.models import (
    Bar,
    Fill,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Side,
)
from tests.fakes.alpaca_server import FakeAlpaca

KEY, SECRET = "PKTEST", "s3cret"
PRICES = {"AAPL": 231.4, "MSFT": 415.2, "NVDA": 124.8, "SPY": 561.3}
NY_OPEN_MONDAY = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # Mon 10:00 ET, a regular session


def settings_for(srv: FakeAlpaca | None, *, mode: str = "paper", **alpaca: Any) -> Settings:
    base: dict[str, Any] = {"key_id": KEY, "secret_key": SECRET, "request_timeout_s": 3}
    if srv is not None:
        base.update(
            trading_url=srv.trading_url, data_url=srv.data_url, stream_url=srv.stream_url
        )
    base.setdefault("max_requests_per_minute", 10_000)
    base.update(alpaca)
    trading: dict[str, Any] = {"mode": mode, "symbols": list(PRICES)}
    if mode == "live":
        trading["live_confirm"] = True
    return Settings.model_validate({"trading": trading, "alpaca": base})


@pytest.fixture
def srv() -> Iterator[FakeAlpaca]:
    with FakeAlpaca(KEY, SECRET, prices=PRICES) as fake:
        yield fake


@pytest.fixture
async def broker(srv: FakeAlpaca) -> AsyncIterator[AlpacaBroker]:
    b = AlpacaBroker(settings_for(srv), stream=False)
    await b.start()
    yield b
    await b.close()


@pytest.fixture
async def streaming(srv: FakeAlpaca) -> AsyncIterator[AlpacaBroker]:
    b = AlpacaBroker(settings_for(srv), reconnect_backoff_s=(0.05, 0.2))
    await b.start()
    assert await asyncio.to_thread(srv.wait_listening, 1, 5.0)
    await wait_for(lambda: b.stats.stream_resyncs >= 1)
    yield b
    await b.close()


async def wait_for(cond: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class Collector:
    """Reads ``order_updates()`` in the background."""

    def __init__(self, broker: AlpacaBroker) -> None:
        self.updates: list[OrderUpdate] = []
        self._task = asyncio.create_task(self._run(broker))

    async def _run(self, broker: AlpacaBroker) -> None:
        async for update in broker.order_updates():
            self.updates.append(update)

    def for_order(self, cid: str) -> list[OrderUpdate]:
        return [u for u in self.updates if u.order.client_order_id == cid]

    def fills(self, cid: str) -> list[Fill]:
        return [u.fill for u in self.for_order(cid) if u.fill is not None]

    async def stop(self) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


def buy(cid: str, qty: float = 5, symbol: str = "AAPL", **kw: Any) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=symbol, side=Side.BUY, qty=qty, **kw)


def posts(srv: FakeAlpaca) -> int:
    return len(srv.requests("POST", "/v2/orders"))


# --------------------------------------------------------------------------- start, config


def test_is_a_broker(srv: FakeAlpaca) -> None:
    b = AlpacaBroker(settings_for(srv))
    assert isinstance(b, Broker)
    assert b.name == "alpaca-paper"
    assert AlpacaBroker(settings_for(srv, mode="live")).name == "alpaca-live"


def test_sim_mode_is_refused(srv: FakeAlpaca) -> None:
    with pytest.raises(ValueError, match="paper"):
        AlpacaBroker(settings_for(srv, mode="sim"))


def test_live_and_paper_hosts_are_never_mixed() -> None:
    with pytest.raises(ConfigError, match=r"LIVE endpoint.*paper"):
        AlpacaBroker(settings_for(None, trading_url="https://api.alpaca.markets"))
    with pytest.raises(ConfigError, match=r"PAPER endpoint.*live"):
        AlpacaBroker(
            settings_for(None, mode="live", trading_url="https://paper-api.alpaca.markets/v2")
        )
    with pytest.raises(ConfigError, match="stream_url"):
        AlpacaBroker(settings_for(None, stream_url="wss://api.alpaca.markets/stream"))
    with pytest.raises(ConfigError, match="ws or wss"):
        check_urls("paper", "", "https://example.com/stream")
    # Alpaca's own hosts for the right mode, and other hosts, are fine
    check_urls("paper", "https://paper-api.alpaca.markets", "wss://paper-api.alpaca.markets/stream")
    check_urls("live", "https://api.alpaca.markets", "wss://api.alpaca.markets/stream")


def test_sdk_clients_get_the_right_urls_and_mode() -> None:
    paper = AlpacaBroker(settings_for(None))
    assert paper.trading_client._base_url == "https://paper-api.alpaca.markets"
    assert paper.trading_client._sandbox is True
    live = AlpacaBroker(settings_for(None, mode="live"))
    assert live.trading_client._base_url == "https://api.alpaca.markets"
    assert live.trading_client._sandbox is False
    # a URL given with /v2 is accepted: the SDK appends /v2 itself
    custom = AlpacaBroker(settings_for(None, trading_url="http://127.0.0.1:9/v2"))
    assert custom.trading_client._base_url == "http://127.0.0.1:9"
    for client in (paper.trading_client, paper.data_client):
        assert client._retry == 0 and client._retry_codes == []


async def test_missing_keys_stop_start_with_a_clear_message(srv: FakeAlpaca) -> None:
    b = AlpacaBroker(settings_for(srv, key_id="", secret_key=""))
    with pytest.raises(ConfigError, match="APCA_API_KEY_ID and APCA_API_SECRET_KEY"):
        await b.start()
    assert srv.requests() == []


async def test_rejected_keys_stop_start(srv: FakeAlpaca) -> None:
    b = AlpacaBroker(settings_for(srv, secret_key="wrong-secret-value"), stream=False)
    with pytest.raises(ConfigError, match="rejected the API keys for paper mode") as info:
        await b.start()
    assert "wrong-secret-value" not in str(info.value)
    await b.close()


async def test_connection_refused_is_retryable() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    b = AlpacaBroker(settings_for(None, trading_url=f"http://127.0.0.1:{port}"), stream=False)
    with pytest.raises(BrokerRetryable, match=r"cannot connect.*nothing was sent"):
        await b.account()
    # a submit that could not connect was never sent: retryable, not unknown
    with pytest.raises(BrokerRetryable):
        await b.submit(buy("refused-1"))
    await b.close()


# --------------------------------------------------------------------------- account, data


async def test_account_positions_clock(srv: FakeAlpaca, broker: AlpacaBroker) -> None:
    srv.set_position("AAPL", 10, 200.0)
    acct = await broker.account()
    assert acct.cash == 100_000
    assert acct.buying_power == 100_000
    assert acct.last_equity == 100_000
    assert acct.equity == pytest.approx(100_000 + 10 * 231.4)
    assert acct.status == "ACTIVE"
    [pos] = await broker.positions()
    assert (pos.symbol, pos.qty, pos.avg_price, pos.market_price) == ("AAPL", 10, 200, 231.4)
    srv.set_position("MSFT", -3, 400.0)
    short = {p.symbol: p for p in await broker.positions()}["MSFT"]
    assert short.qty == -3
    clock = await broker.clock()
    assert clock.is_open is True
    assert clock.ts.tzinfo is not None and clock.next_open > clock.ts


async def test_clock_disagreement_is_noted_and_the_broker_trusted(
    srv: FakeAlpaca, broker: AlpacaBroker
) -> None:
    srv.frozen_now = NY_OPEN_MONDAY
    srv.is_open = True
    clock = await broker.clock()
    assert clock.is_open and broker.clock_disagreement() is None
    srv.frozen_now = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)  # Thanksgiving
    clock = await broker.clock()
    assert clock.is_open is True  # what Alpaca says wins
    note = broker.clock_disagreement()
    assert note is not None
    assert "Alpaca says the market is open" in note and "trusting Alpaca" in note


async def test_latest_is_one_batched_request(srv: FakeAlpaca, broker: AlpacaBroker) -> None:
    quotes = await broker.latest([*PRICES, "ZZZZ"])
    assert set(quotes) == set(PRICES)  # unknown symbols are absent
    assert len(srv.requests("GET", "/v2/stocks/*")) == 1
    [req] = srv.requests("GET", "/v2/stocks/snapshots")
    assert req.query["feed"] == "iex"
    q = quotes["AAPL"]
    assert 0 < q.bid < q.ask and q.last == 231.4 and q.volume > 0
    assert q.ts.tzinfo is not None


async def test_latest_request_count_does_not_grow_with_symbols(srv: FakeAlpaca) -> None:
    symbols = [f"S{i:03d}" for i in range(50)]
    for i, s in enumerate(symbols):
        srv.set_price(s, 20 + i)
    b = AlpacaBroker(settings_for(srv), stream=False)
    quotes = await b.latest(symbols)
    assert len(quotes) == 50
    history = await b.history(symbols, 15, 60)
    assert len(history) == 50 and all(len(v) == 60 for v in history.values())
    assert len(srv.requests("GET", "/v2/stocks/*")) == 2
    await b.close()


async def test_the_configured_feed_is_asked_for(srv: FakeAlpaca) -> None:
    """alpaca.feed = "sip" reaches both market-data requests (iex is the default)."""
    b = AlpacaBroker(settings_for(srv, feed="sip"), stream=False)
    try:
        assert await b.latest(["AAPL"]) and await b.history(["AAPL"], 15, 10)
    finally:
        await b.close()
    [snapshots] = srv.requests("GET", "/v2/stocks/snapshots")
    [bars] = srv.requests("GET", "/v2/stocks/bars")
    assert snapshots.query["feed"] == bars.query["feed"] == "sip"


async def test_history_batched_oldest_first(srv: FakeAlpaca, broker: AlpacaBroker) -> None:
    bars = await broker.history(list(PRICES), 15, 60)
    assert set(bars) == set(PRICES)
    [req] = srv.requests("GET", "/v2/stocks/bars")
    assert req.query["timeframe"] == "15Min" and req.query["feed"] == "iex"
    for series in bars.values():
        assert len(series) == 60
        stamps = [b.ts for b in series]
        assert stamps == sorted(stamps)
        assert stamps[-1] - stamps[0] >= timedelta(minutes=15 * 59)


async def test_history_follows_pagination(srv: FakeAlpaca, broker: AlpacaBroker) -> None:
    srv.bars_page_size = 50
    before = broker.stats.http_requests
    bars = await broker.history(["AAPL", "MSFT"], 5, 40)  # ≥ 2 × 49 bars asked for
    pages = len(srv.requests("GET", "/v2/stocks/bars"))
    assert pages >= 2
    assert broker.stats.http_requests - before == pages
    assert broker.stats.calls["history"] == 1
    assert all(len(v) == 40 for v in bars.values())


async def test_history_builds_unusual_timeframes(srv: FakeAlpaca, broker: AlpacaBroker) -> None:
    bars = await broker.history(["AAPL"], 90, 10)
    [req] = srv.requests("GET", "/v2/stocks/bars")
    assert req.query["timeframe"] == "45Min"
    series = bars["AAPL"]
    assert len(series) == 10
    gaps = {(b.ts - a.ts) for a, b in itertools.pairwise(series)}
    assert timedelta(minutes=90) in gaps


# --------------------------------------------------------------------------- orders


async def test_submit_and_fill_through_the_stream(
    srv: FakeAlpaca, streaming: AlpacaBroker
) -> None:
    updates = Collector(streaming)
    order = await streaming.submit(buy("perun-paper-full-1", 5, signal_id="sig-1"))
    assert order.status is OrderStatus.NEW
    assert order.broker_order_id and order.signal_id == "sig-1"
    await wait_for(lambda: any(u.event == "fill" for u in updates.for_order(order.client_order_id)))
    [fill] = updates.fills(order.client_order_id)
    ask = srv.quote("AAPL")[1]
    assert (fill.qty, fill.price, fill.side) == (5, ask, Side.BUY)
    execution_ids = {e.get("execution_id") for e in srv.events}
    assert fill.fill_id in execution_ids
    final = updates.for_order(order.client_order_id)[-1].order
    assert final.status is OrderStatus.FILLED and final.filled_qty == 5
    assert {p.symbol: p.qty for p in await streaming.positions()} == {"AAPL": 5}
    found = await streaming.order_by_client_id(order.client_order_id)
    assert found is not None and found.status is OrderStatus.FILLED
    assert found.filled_avg_price == ask
    await updates.stop()


async def test_partial_fills_and_cancel(srv: FakeAlpaca, streaming: AlpacaBroker) -> None:
    srv.fill_delay = None
    srv.partial_fills = True
    updates = Collector(streaming)
    order = await streaming.submit(buy("pc-1", 10))
    srv.fill_pending(one_step=True)
    await wait_for(lambda: len(updates.fills("pc-1")) == 1)
    [open_order] = await streaming.open_orders()
    assert open_order.status is OrderStatus.PARTIALLY_FILLED and open_order.filled_qty == 5
    assert order.broker_order_id is not None
    await streaming.cancel(order.broker_order_id)
    await wait_for(lambda: updates.for_order("pc-1")[-1].event == "canceled")
    assert updates.for_order("pc-1")[-1].order.status is OrderStatus.CANCELED
    with pytest.raises(BrokerRejected) as info:  # already canceled: final
        await streaming.cancel(order.broker_order_id)
    assert info.value.status == 422
    await updates.stop()


async def test_limit_order_price_is_rounded(srv: FakeAlpaca, broker: AlpacaBroker) -> None:
    order = await broker.submit(
        buy("lim-1", 2, type=OrderType.LIMIT, limit_price=100.123456)
    )
    assert order.type is OrderType.LIMIT and order.limit_price == 100.12
    assert srv.requests("POST", "/v2/orders")[0].json["limit_price"] == 100.12
    assert order.status is OrderStatus.NEW  # not marketable: stays open
    # below $1 the tick is 1/100 of a cent: four decimals survive
    cheap = await broker.submit(buy("lim-2", 2, type=OrderType.LIMIT, limit_price=0.123456))
    assert cheap.limit_price == 0.1235
    assert srv.requests("POST", "/v2/orders")[1].json["limit_price"] == 0.1235


async def test_fractional_and_notional_rules(srv: FakeAlpaca, broker: AlpacaBroker) -> None:
    with pytest.raises(OrderRefused, match="market orders with time_in_force day") as info:
        await broker.submit(buy("frac-lim", 1.5, type=OrderType.LIMIT, limit_price=230))
    assert "refused by Perun, not sent to Alpaca" in info.value.message
    assert not isinstance(info.value, BrokerRejected)  # never labelled a broker rejection
    with pytest.raises(OrderRefused, match="exactly one of qty or notional"):
        await broker.submit(
            OrderRequest(client_order_id="both", symbol="AAPL", side=Side.BUY, qty=1,
                         notional=100)
        )
    assert posts(srv) == 0  # refused locally, nothing sent
    frac = await broker.submit(buy("frac-mkt", 0.5))
    notional = await broker.submit(
        OrderRequest(client_order_id="notional-1", symbol="AAPL", side=Side.BUY,
                     notional=250.0)
    )
    assert frac.qty == 0.5 and notional.notional == 250.0
    assert srv.requests("POST", "/v2/orders")[1].json["notional"] == 250.0


async def test_duplicate_client_order_id_is_422_and_resolves_to_the_existing_order(
    srv: FakeAlpaca, broker: AlpacaBroker
) -> None:
    first = await broker.submit(buy("dup-1", 3))
    with pytest.raises(BrokerRejected) as info:
        await broker.submit(buy("dup-1", 3))
    assert info.value.status == 422
    assert "client_order_id must be unique" in info.value.message
    found = await broker.order_by_client_id("dup-1")
    assert found is not None and found.broker_order_id == first.broker_order_id
    assert len(srv.orders_by_client_id()["dup-1"]) == 1


async def test_insufficient_buying_power_is_a_final_rejection(
    srv: FakeAlpaca, broker: AlpacaBroker
) -> None:
    with pytest.raises(BrokerRejected) as info:
        await broker.submit(buy("big-1", 10_000))
    assert info.value.status == 403
    assert info.value.message == "insufficient buying power"
    assert not isinstance(info.value, BrokerRetryable | BrokerUnknownOutcome)
    assert srv.orders_by_client_id() == {}
    assert await broker.order_by_client_id("big-1") is None


async def test_unknown_symbol(srv: FakeAlpaca, broker: AlpacaBroker) -> None:
    with pytest.raises(UnknownSymbol, match="ZZZZ"):
        await broker.submit(buy("unk-1", 1, symbol="ZZZZ"))


# --------------------------------------------------------------------------- faults


async def test_429_is_retryable_and_the_sdk_does_not_retry(
    srv: FakeAlpaca, broker: AlpacaBroker
) -> None:
    srv.faults.add("/v2/account", "429")
    with pytest.raises(BrokerRetryable) as info:
        await broker.account()
    assert info.value.status == 429 and info.value.retry_after_s > 0
    assert len(srv.requests("GET", "/v2/account")) == 2  # start() + this one: no SDK retry
    srv.faults.submit = ["429"]
    with pytest.raises(BrokerRetryable):
        await broker.submit(buy("rl-1"))
    assert srv.submit_attempts["rl-1"] == 1  # the SDK would have slept 3 s and sent it again
    assert srv.orders_by_client_id() == {}


async def test_429_with_reset_holds_every_caller_until_the_reset(
    srv: FakeAlpaca, broker: AlpacaBroker
) -> None:
    clock = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # the limiter's waits, on a clock of our own
        slept.append(seconds)
        clock[0] += seconds

    broker.limiter = TokenBucket(10_000, monotonic=lambda: clock[0], sleep=sleep)
    srv.rate_limit_per_min = 1
    await broker.clock()  # the fake's window now holds one request: the next is over
    before = time.time()
    with pytest.raises(BrokerRetryable) as info:
        await broker.clock()
    after = time.time()
    assert info.value.status == 429
    reset = float(srv.requests("GET", "/v2/clock")[-1].reply_headers["X-RateLimit-Reset"])
    wait = info.value.retry_after_s
    assert reset - after <= wait <= reset - before  # X-RateLimit-Reset less the time then
    srv.rate_limit_per_min = None
    assert slept == []
    await broker.clock()  # the next caller waits exactly that long before sending
    assert slept == [pytest.approx(wait)]
    assert broker.stats.rate_limited_s == pytest.approx(wait)


@pytest.mark.parametrize("kind", ["504", "500", "502", "503"])
async def test_5xx_on_submit_is_unknown_and_sent_once(
    srv: FakeAlpaca, broker: AlpacaBroker, kind: str
) -> None:
    srv.faults.submit = [kind]
    with pytest.raises(BrokerUnknownOutcome):
        await broker.submit(buy(f"x{kind}"))
    assert srv.submit_attempts[f"x{kind}"] == 1  # SDK retries (429/504) are off
    assert await broker.order_by_client_id(f"x{kind}") is None


async def test_504_after_create_is_unknown_and_lookup_finds_exactly_one(
    srv: FakeAlpaca, broker: AlpacaBroker
) -> None:
    srv.faults.submit = ["504_after_create"]
    with pytest.raises(BrokerUnknownOutcome, match="HTTP 504 Gateway Time-out"):
        await broker.submit(buy("u504"))
    assert srv.submit_attempts["u504"] == 1
    found = await broker.order_by_client_id("u504")
    assert found is not None and found.status is OrderStatus.FILLED
    assert len(srv.orders_by_client_id()["u504"]) == 1


async def test_server_that_never_answers_hits_the_deadline(srv: FakeAlpaca) -> None:
    b = AlpacaBroker(settings_for(srv, request_timeout_s=0.4), stream=False)
    srv.faults.submit = ["hang_after_create"]
    with pytest.raises(BrokerUnknownOutcome, match=r"no answer from Alpaca within 0\.4s"):
        await b.submit(buy("hang-1"))
    found = await b.order_by_client_id("hang-1")
    assert found is not None
    assert len(srv.orders_by_client_id()["hang-1"]) == 1
    # a read that never answers is retryable (safe to repeat)
    srv.faults.add("/v2/account", "hang")
    with pytest.raises(BrokerRetryable, match="no answer"):
        await b.account()
    await b.close()


@pytest.mark.parametrize(
    ("kind", "created"), [("drop_after_create", True), ("drop_before_create", False)]
)
async def test_dropped_connection_on_submit_is_unknown(
    srv: FakeAlpaca, broker: AlpacaBroker, kind: str, created: bool
) -> None:
    srv.faults.submit = [kind]
    with pytest.raises(BrokerUnknownOutcome, match="dropped"):
        await broker.submit(buy(kind))
    found = await broker.order_by_client_id(kind)
    assert (found is not None) is created
    assert len(srv.orders_by_client_id().get(kind, [])) == int(created)


async def test_garbage_replies(srv: FakeAlpaca, broker: AlpacaBroker) -> None:
    srv.faults.submit = ["garbage"]
    with pytest.raises(BrokerUnknownOutcome, match="could not be read"):
        await broker.submit(buy("garb-1"))
    srv.faults.add("/v2/positions", "garbage")
    with pytest.raises(BrokerRetryable):
        await broker.positions()
    srv.faults.add("/v2/stocks/snapshots", "502")
    with pytest.raises(BrokerRetryable, match="HTTP 502 Bad Gateway"):
        await broker.latest(["AAPL"])
    srv.faults.add("/v2/orders:by_client_order_id", "500")
    with pytest.raises(BrokerRetryable, match="internal server error"):
        await broker.order_by_client_id("garb-1")


async def test_rate_limiter_spaces_requests(srv: FakeAlpaca) -> None:
    b = AlpacaBroker(settings_for(srv, max_requests_per_minute=600), stream=False)
    assert b.limiter.capacity == 20  # a burst of 20, then 10 a second
    clock = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    b.limiter = TokenBucket(600, monotonic=lambda: clock[0], sleep=sleep)
    for _ in range(25):
        await b.clock()
    assert len(srv.requests("GET", "/v2/clock")) == 25
    assert len(slept) == 5 and sum(slept) == pytest.approx(0.5)  # 5 over the burst at 10/s
    assert b.stats.rate_limited_s == pytest.approx(0.5)
    await b.close()


# --------------------------------------------------------------------------- the stream


async def test_stream_dropped_mid_fill_is_reconciled_after_reconnect(
    srv: FakeAlpaca, streaming: AlpacaBroker
) -> None:
    srv.fill_delay = None
    srv.partial_fills = True
    updates = Collector(streaming)
    await streaming.submit(buy("gap-1", 10))
    srv.fill_pending(one_step=True)  # 5 of 10, seen on the stream
    await wait_for(lambda: len(updates.fills("gap-1")) == 1)

    srv.stream_reject_auth = True  # keep the client out while the rest fills
    srv.drop_streams()
    await wait_for(lambda: srv.listening_count() == 0)
    srv.set_price("AAPL", 232.0)
    srv.fill_pending()  # the other 5 fill while nobody listens
    assert srv.get_order("gap-1")["status"] == "filled"  # type: ignore[index]
    resyncs = streaming.stats.stream_resyncs
    srv.stream_reject_auth = False
    await wait_for(lambda: streaming.stats.stream_resyncs > resyncs, within=10)

    fills = updates.fills("gap-1")
    assert sum(f.qty for f in fills) == 10  # the missed fill reported once, not lost
    gap = fills[-1]
    assert gap.qty == 5 and gap.price == srv.quote("AAPL")[1]
    assert updates.for_order("gap-1")[-1].order.status is OrderStatus.FILLED
    assert streaming.stats.stream_connects >= 2
    # a second reconnect reports nothing new
    before = len(updates.updates)
    resyncs = streaming.stats.stream_resyncs
    srv.drop_streams()
    await wait_for(lambda: streaming.stats.stream_resyncs > resyncs, within=10)
    assert len(updates.updates) == before
    await updates.stop()


async def test_stream_reconnect_reports_orders_changed_while_away(
    srv: FakeAlpaca, streaming: AlpacaBroker
) -> None:
    srv.fill_delay = None
    updates = Collector(streaming)
    order = await streaming.submit(buy("away-1", 2, type=OrderType.LIMIT, limit_price=100))
    await wait_for(lambda: len(updates.for_order("away-1")) >= 1)
    srv.stream_reject_auth = True
    srv.drop_streams()
    await wait_for(lambda: srv.listening_count() == 0)
    assert order.broker_order_id is not None
    srv.expire_day_orders()
    resyncs = streaming.stats.stream_resyncs
    srv.stream_reject_auth = False
    await wait_for(lambda: streaming.stats.stream_resyncs > resyncs, within=10)
    last = updates.for_order("away-1")[-1]
    assert last.event == "expired" and last.order.status is OrderStatus.EXPIRED
    await updates.stop()


async def test_close_ends_the_update_iterator(srv: FakeAlpaca) -> None:
    b = AlpacaBroker(settings_for(srv), reconnect_backoff_s=(0.05, 0.2))
    await b.start()
    assert await asyncio.to_thread(srv.wait_listening, 1, 5.0)

    async def drain() -> int:
        return len([u async for u in b.order_updates()])

    task = asyncio.create_task(drain())
    await asyncio.sleep(0.05)
    await b.close()
    assert await asyncio.wait_for(task, 3) == 0
    await b.close()  # twice is fine
    await wait_for(lambda: srv.listening_count() == 0)


# --------------------------------------------------------------------------- doctor


async def test_doctor_checks_all_ok(srv: FakeAlpaca) -> None:
    srv.frozen_now = NY_OPEN_MONDAY
    b = AlpacaBroker(settings_for(srv), stream=False, now=lambda: NY_OPEN_MONDAY)
    checks = await b.doctor_checks()
    names = [name for name, _, _ in checks]
    assert names == [
        "alpaca keys", "alpaca account", "alpaca clock", "alpaca calendar", "alpaca data",
        "alpaca stream",
    ]
    assert all(ok for _, ok, _ in checks), checks
    text = " ".join(detail for _, _, detail in checks)
    assert SECRET not in text and KEY not in text
    assert "buying power 100,000.00" in text
    await b.close()


async def test_doctor_checks_report_problems(srv: FakeAlpaca) -> None:
    none = await AlpacaBroker(settings_for(srv, key_id="", secret_key="")).doctor_checks()
    assert none == [("alpaca keys", False, none[0][2])]
    assert "APCA_API_KEY_ID" in none[0][2]
    bad = AlpacaBroker(settings_for(srv, secret_key="not-the-secret"), stream=False)
    checks = await bad.doctor_checks()
    assert checks[1][0] == "alpaca account" and checks[1][1] is False
    assert "rejected the API keys for paper mode" in checks[1][2]
    assert "not-the-secret" not in " ".join(c[2] for c in checks)
    await bad.close()


# --------------------------------------------------------------------------- end to end


async def test_execution_service_places_exactly_one_order_per_client_id(
    srv: FakeAlpaca, tmp_path: Path
) -> None:
    """ExecutionService + AlpacaBroker + faults on submit: one order per client order id."""
    from perun_tui.bus import EventBus
    from perun_tui.models import Action, Signal, SignalStatus, signal_id_for
    from perun_tui.services.execution import ExecutionService
    from perun_tui.services.memory import Memory
    from perun_tui.services.risk import RiskPolicy

    settings = settings_for(srv, request_timeout_s=0.5)
    settings.approval.mode = "auto"
    b = AlpacaBroker(settings, reconnect_backoff_s=(0.05, 0.2))
    memory = await Memory.open(tmp_path / "perun-paper.db")
    consumer: asyncio.Task[None] | None = None

    async def nap(seconds: float) -> None:
        await asyncio.sleep(0)

    try:
        await b.start()
        execution = ExecutionService(
            settings=settings, broker=b, memory=memory, bus=EventBus(),
            policy=RiskPolicy(settings.risk), now=lambda: datetime.now(UTC), sleep=nap,
        )
        await execution.reconcile()
        consumer = asyncio.create_task(_apply_updates(b, execution))
        faults = [
            "504_after_create", "drop_after_create", "hang_after_create",
            "drop_before_create", "500_after_create", "429", "504", "ok",
        ]
        srv.faults.submit = list(faults)
        ids = []
        for i in range(len(faults)):
            symbol = list(PRICES)[i % len(PRICES)]
            signal = Signal(
                id=signal_id_for(i + 1, symbol, Action.BUY), cycle=i + 1, symbol=symbol,
                action=Action.BUY, confidence=0.9, rationale="test", analyst="rules",
                created_at=datetime.now(UTC), price=PRICES[symbol], qty=1,
            )
            await execution.propose(signal, approved_by_risk=True, reason="ok")
            ids.append(signal.id)
        assert srv.faults.submit == []  # every fault was hit

        by_cid = srv.orders_by_client_id()
        assert len(by_cid) == len(ids)
        assert all(len(orders) == 1 for orders in by_cid.values()), srv.submit_attempts

        async def all_filled() -> bool:
            stored = [await memory.get_signal(i) for i in ids]
            return all(s is not None and s.status is SignalStatus.FILLED for s in stored)

        deadline = time.monotonic() + 10
        while not await all_filled():
            assert time.monotonic() < deadline, [await memory.get_signal(i) for i in ids]
            await asyncio.sleep(0.05)
        for cid in by_cid:
            order = await memory.get_order(cid)
            assert order is not None and order.status is OrderStatus.FILLED
            assert order.filled_qty == 1
            # once resolved, the error that made the outcome unknown is not the reason
            assert "may or may not" not in order.reason, order.reason
        resolved = [
            o for o in await memory.orders() if o.reason.startswith("confirmed at the broker after")
        ]
        assert len(resolved) >= 4, [o.reason for o in await memory.orders()]
    finally:
        if consumer is not None:
            consumer.cancel()
        await b.close()
        await memory.close()


async def test_restart_with_an_order_filled_while_down_is_applied_once(
    srv: FakeAlpaca, tmp_path: Path
) -> None:
    """Perun places an order and stops; it fills; a new Perun reconciles it exactly once."""
    from perun_tui.bus import EventBus
    from perun_tui.models import Action, Signal, SignalStatus, signal_id_for
    from perun_tui.services.execution import ExecutionService
    from perun_tui.services.memory import Memory
    from perun_tui.services.risk import RiskPolicy

    settings = settings_for(srv)
    settings.approval.mode = "auto"
    db = tmp_path / "perun-paper.db"
    srv.fill_delay = None  # nothing fills until the test says so

    async def run(signal: Signal | None) -> tuple[Any, list[OrderUpdate]]:
        b = AlpacaBroker(settings, reconnect_backoff_s=(0.05, 0.2))
        memory = await Memory.open(db)
        seen: list[OrderUpdate] = []
        consumer: asyncio.Task[None] | None = None
        try:
            await b.start()
            execution = ExecutionService(
                settings=settings, broker=b, memory=memory, bus=EventBus(),
                policy=RiskPolicy(settings.risk), now=lambda: datetime.now(UTC),
            )
            await execution.reconcile()

            async def apply() -> None:
                async for update in b.order_updates():
                    seen.append(update)
                    await execution.on_update(update)

            consumer = asyncio.create_task(apply())
            if signal is not None:
                await execution.propose(signal, approved_by_risk=True, reason="ok")
            await wait_for(lambda: b.stats.stream_resyncs >= 1)
            await asyncio.sleep(0.2)  # let stream events land
            stored = await memory.get_signal(signal_id)
            return stored, seen
        finally:
            if consumer is not None:
                consumer.cancel()
            await b.close()
            await memory.close()

    signal_id = signal_id_for(1, "AAPL", Action.BUY)
    signal = Signal(
        id=signal_id, cycle=1, symbol="AAPL", action=Action.BUY, confidence=0.9,
        rationale="test", analyst="rules", created_at=datetime.now(UTC), price=231.4, qty=3,
    )
    stored, _ = await run(signal)
    assert stored is not None and stored.status is SignalStatus.SUBMITTED
    assert srv.fill_pending() == 1  # fills while Perun is down
    stored, seen = await run(None)
    assert stored is not None and stored.status is SignalStatus.FILLED
    assert seen == []  # nothing for the stream to add: reconcile applied it
    memory = await Memory.open(db)
    try:
        transitions = [t.new for t in await memory.transitions(signal_id)]
        assert transitions.count(SignalStatus.FILLED) == 1
        [order] = await memory.orders()
        assert order.status is OrderStatus.FILLED and order.filled_qty == 3
        # the fill that happened while Perun was down is recorded once, at the broker's price
        [fill] = await memory.fills()
        assert (fill.client_order_id, fill.symbol, fill.side) == (
            order.client_order_id, "AAPL", Side.BUY,
        )
        assert fill.qty == 3 and fill.price == order.filled_avg_price == srv.quote("AAPL")[1]
    finally:
        await memory.close()
    assert len(srv.orders_by_client_id()) == 1


async def _apply_updates(broker: AlpacaBroker, execution: Any) -> None:
    async for update in broker.order_updates():
        await execution.on_update(update)


# --------------------------------------------------------------------------- pure parts


def test_status_mapping() -> None:
    assert alpaca_status("accepted", 0, 5) is OrderStatus.NEW
    assert alpaca_status("pending_new", 0, 5) is OrderStatus.NEW
    assert alpaca_status("new", 0, 5) is OrderStatus.NEW
    assert alpaca_status("partially_filled", 2, 5) is OrderStatus.PARTIALLY_FILLED
    assert alpaca_status("filled", 5, 5) is OrderStatus.FILLED
    assert alpaca_status("canceled", 0, 5) is OrderStatus.CANCELED
    assert alpaca_status("expired", 0, 5) is OrderStatus.EXPIRED
    assert alpaca_status("rejected", 0, 5) is OrderStatus.REJECTED
    assert alpaca_status("replaced", 0, 5) is OrderStatus.CANCELED
    assert alpaca_status("done_for_day", 2, 5) is OrderStatus.PARTIALLY_FILLED
    assert alpaca_status("done_for_day", 0, 5) is OrderStatus.NEW
    assert alpaca_status("pending_cancel", 1, 5) is OrderStatus.PARTIALLY_FILLED
    assert alpaca_status("calculated", 5, 5) is OrderStatus.FILLED


def test_timeframes() -> None:
    assert timeframe_plan(15) == (15, "Min", 1)
    assert timeframe_plan(60) == (1, "Hour", 1)
    assert timeframe_plan(120) == (2, "Hour", 1)
    assert timeframe_plan(90) == (45, "Min", 2)
    assert timeframe_plan(390) == (39, "Min", 10)
    assert timeframe_plan(1440) == (1, "Day", 1)
    with pytest.raises(ValueError):
        timeframe_plan(500)


def test_history_start_is_tight() -> None:
    def weekdays(d: date) -> bool:
        return d.weekday() < 5

    # Monday 10:00 ET, 60 (×1.2) 15-minute bars: Monday's 2, Friday's and Thursday's 26
    # each, the rest from Wednesday afternoon
    start = history_start(NY_OPEN_MONDAY, 15, 60, weekdays)
    assert start == datetime(2026, 2, 25, 16, 15, tzinfo=UTC)
    # daily bars: about 1.2 × n weekdays back
    start = history_start(NY_OPEN_MONDAY, 1440, 20, weekdays)
    assert NY_OPEN_MONDAY - timedelta(days=40) < start < NY_OPEN_MONDAY - timedelta(days=28)
    # a holiday is skipped when the calendar knows it
    no_friday = history_start(
        NY_OPEN_MONDAY, 15, 20, lambda d: weekdays(d) and d != date(2026, 2, 27)
    )
    assert no_friday.date() == date(2026, 2, 26)


def testmerge_bars() -> None:
    t0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)  # 09:30 ET
    bars = [
        Bar(symbol="A", ts=t0 + timedelta(minutes=45 * i), open=10 + i, high=11 + i,
            low=9 + i, close=10.5 + i, volume=100)
        for i in range(4)
    ]
    merged = merge_bars(bars, 90)
    assert len(merged) == 2
    assert merged[0].open == 10 and merged[0].close == 11.5 and merged[0].high == 12
    assert merged[0].volume == 200 and merged[1].ts == t0 + timedelta(minutes=90)


def _order(cid: str, status: OrderStatus, filled: float, avg: float | None) -> Order:
    return Order(client_order_id=cid, symbol="AAPL", side=Side.BUY, qty=10, status=status,
                 broker_order_id="b-" + cid, filled_qty=filled, filled_avg_price=avg)


def test_ledger_reports_gap_fills_once() -> None:
    ledger = _StreamLedger()
    ledger.track(_order("a", OrderStatus.NEW, 0, None))
    fill = Fill(fill_id="e1", client_order_id="a", symbol="AAPL", side=Side.BUY, qty=4,
                price=10, ts=datetime.now(UTC))
    first = OrderUpdate(event="partial_fill",
                        order=_order("a", OrderStatus.PARTIALLY_FILLED, 4, 10), fill=fill)
    assert ledger.from_stream(first).fill == fill
    # REST after a reconnect: 6 more filled at an average that puts them at 12
    rest = ledger.from_rest(_order("a", OrderStatus.FILLED, 10, 11.2), baseline=False)
    assert rest is not None and rest.event == "fill" and rest.fill is not None
    assert rest.fill.qty == 6 and rest.fill.price == pytest.approx(12)
    # the same REST view again: nothing new; an older one: ignored
    assert ledger.from_rest(_order("a", OrderStatus.FILLED, 10, 11.2), baseline=False) is None
    assert ledger.from_rest(_order("a", OrderStatus.NEW, 0, None), baseline=False) is None
    # a late stream event for a fill the REST re-read covered loses its fill
    late = OrderUpdate(event="fill", order=_order("a", OrderStatus.FILLED, 10, 11.2),
                       fill=fill.model_copy(update={"fill_id": "e2", "qty": 6}))
    assert ledger.from_stream(late).fill is None
    assert ledger.pending() == []
    # an order first seen on the first connection: state, not past fills
    base = ledger.from_rest(_order("b", OrderStatus.PARTIALLY_FILLED, 3, 9), baseline=True)
    assert base is not None and base.fill is None and base.event == "restated"


async def test_token_bucket() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(60, burst=2, monotonic=lambda: now[0], sleep=sleep)
    assert await bucket.acquire() == 0 and await bucket.acquire() == 0
    assert await bucket.acquire() == pytest.approx(1.0)  # 1 token a second
    bucket.pause(5)
    assert bucket.delay() == pytest.approx(5)
    await bucket.acquire()
    assert now[0] == pytest.approx(6.0)
    bucket.debit(3)
    assert bucket.delay() == pytest.approx(3.0, abs=0.01)
    with pytest.raises(ValueError):
        TokenBucket(0)


# --------------------------------------------------------------------------- start-up checks


class Notices:
    """A notice sink that keeps what the broker said."""

    def __init__(self, broker: AlpacaBroker) -> None:
        self.seen: list[tuple[int, str]] = []
        broker.set_notice_sink(lambda level, message: self.seen.append((level, message)))

    def about(self, prefix: str) -> list[tuple[int, str]]:
        return [(level, m) for level, m in self.seen if m.startswith(prefix)]


async def test_clock_disagreement_is_announced_when_it_appears_or_changes(
    srv: FakeAlpaca, broker: AlpacaBroker
) -> None:
    notices = Notices(broker)
    srv.frozen_now = NY_OPEN_MONDAY
    await broker.clock()
    assert notices.about("market clock") == []  # they agree: nothing to say
    srv.frozen_now = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)  # Thanksgiving, "open"
    for _ in range(3):
        await broker.clock()
    [(level, message)] = notices.about("market clock")  # once, not every cycle
    assert level == logging.WARNING
    assert "Alpaca says the market is open" in message and "trusting Alpaca" in message
    srv.is_open = False  # now they differ about the next open instead
    srv.calendar_overrides[date(2026, 11, 27)] = ("09:30", "16:00")
    await broker.clock()
    assert len(notices.about("market clock")) == 2
    assert "next close" in notices.about("market clock")[-1][1]
    srv.frozen_now = NY_OPEN_MONDAY
    srv.is_open = True
    await broker.clock()
    assert notices.about("market clock")[-1] == (
        logging.INFO, "market clock: Alpaca and the local NYSE calendar agree"
    )


async def test_calendar_is_compared_at_start(srv: FakeAlpaca) -> None:
    friday = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    srv.frozen_now = friday
    b = AlpacaBroker(settings_for(srv), stream=False, now=lambda: friday)
    notices = Notices(b)
    await b.start()
    [req] = srv.requests("GET", "/v2/calendar")
    assert req.query["start"] == "2026-11-20"
    assert b.calendar_notes == [] and notices.seen == []  # Thanksgiving and the early close agree
    sessions = await b.calendar(date(2026, 11, 25), date(2026, 11, 30))
    assert sessions == [
        (date(2026, 11, 25), datetime(2026, 11, 25, 14, 30, tzinfo=UTC),
         datetime(2026, 11, 25, 21, 0, tzinfo=UTC)),
        (date(2026, 11, 27), datetime(2026, 11, 27, 14, 30, tzinfo=UTC),
         datetime(2026, 11, 27, 18, 0, tzinfo=UTC)),
        (date(2026, 11, 30), datetime(2026, 11, 30, 14, 30, tzinfo=UTC),
         datetime(2026, 11, 30, 21, 0, tzinfo=UTC)),
    ]
    # an Alpaca that trades on Thanksgiving and closes late the day after
    srv.calendar_overrides[date(2026, 11, 26)] = ("09:30", "16:00")
    srv.calendar_overrides[date(2026, 11, 27)] = ("09:30", "16:00")
    notes = await b.check_calendar()
    assert notes == [
        "Thu 2026-11-26: Alpaca has a session (09:30–16:00 ET), the local NYSE calendar a "
        "holiday",
        "Fri 2026-11-27: Alpaca closes 16:00 ET, the local NYSE calendar 13:00 ET",
    ]
    [(level, message)] = notices.seen
    assert level == logging.WARNING and message.startswith("market calendar: ")
    assert message.endswith("trusting Alpaca")
    checks = {name: (ok, detail) for name, ok, detail in await b.doctor_checks()}
    assert checks["alpaca calendar"][0] is False
    assert "Thu 2026-11-26" in checks["alpaca calendar"][1]
    await b.close()


async def test_stream_outage_is_announced_once_and_its_end(
    srv: FakeAlpaca, streaming: AlpacaBroker
) -> None:
    notices = Notices(streaming)
    assert streaming.stream_state == "connected"
    srv.stream_reject_auth = True  # every reconnect attempt fails while this holds
    connects = srv.stream_connects
    srv.drop_streams()
    await wait_for(lambda: srv.stream_connects >= connects + 3, within=10)
    assert streaming.stream_state in ("unauthorized", "reconnecting")
    down = notices.about("order-update stream")
    assert len(down) == 1 and down[0][0] == logging.WARNING  # once per outage
    assert "is not connected" in down[0][1] and "REST" in down[0][1]
    checks = {name: (ok, detail) for name, ok, detail in await streaming.doctor_checks()}
    ok, detail = checks["alpaca stream"]
    assert not ok
    assert re.match(r"order updates (unauthorized|reconnecting|disconnected) at ", detail)
    resyncs = streaming.stats.stream_resyncs
    srv.stream_reject_auth = False
    await wait_for(lambda: streaming.stats.stream_resyncs > resyncs, within=10)
    back = notices.about("order-update stream")[1:]
    assert [level for level, _ in back] == [logging.INFO]
    assert "connected again" in back[0][1]
    checks = {name: (ok, detail) for name, ok, detail in await streaming.doctor_checks()}
    assert checks["alpaca stream"][0] is True


async def test_doctor_probes_the_stream(srv: FakeAlpaca) -> None:
    b = AlpacaBroker(settings_for(srv), stream=False)
    srv.stream_reject_auth = True
    checks = {name: (ok, detail) for name, ok, detail in await b.doctor_checks()}
    ok, detail = checks["alpaca stream"]
    assert not ok and "refused the keys on the stream" in detail
    assert "fills are only seen when Perun looks orders up over REST" in detail
    await b.close()


async def test_notices_before_a_sink_are_kept(srv: FakeAlpaca) -> None:
    srv.account_overrides["status"] = "ACCOUNT_UPDATED"
    b = AlpacaBroker(settings_for(srv), stream=False)
    await b.start()
    notices = Notices(b)  # set after start: what start found is delivered now
    assert any("account status is ACCOUNT_UPDATED" in m for _, m in notices.seen)
    await b.close()


async def test_positions_are_compared_with_what_perun_expected(
    srv: FakeAlpaca, broker: AlpacaBroker, tmp_path: Path
) -> None:
    from perun_tui.bus import EventBus
    from perun_tui.events import Level, LogEvent
    from perun_tui.models import Account, Position
    from perun_tui.services.memory import Memory
    from perun_tui.services.reconcile_positions import check_positions

    bus = EventBus()
    sub = bus.subscribe(LogEvent, coalesce=False)
    memory = await Memory.open(tmp_path / "perun-paper.db")
    try:
        assert await check_positions(broker, memory, bus) == []  # first run: nothing known
        at = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
        await memory.save_snapshot(
            1, at, Account(cash=1, equity=1, buying_power=1),
            [Position(symbol="AAPL", qty=40, avg_price=200, market_price=231),
             Position(symbol="MSFT", qty=5, avg_price=400, market_price=415)],
            {},
        )
        # after the snapshot Perun bought 2 MSFT: it expects 7
        await memory.save_fill(Fill(fill_id="e-1", client_order_id="perun-paper-x",
                                    symbol="MSFT", side=Side.BUY, qty=2, price=415,
                                    ts=at + timedelta(minutes=3)))
        srv.set_position("AAPL", 42, 200)  # two more than Perun knows of
        srv.set_position("MSFT", 7, 400)
        srv.set_position("NVDA", 3, 120)  # bought elsewhere
        differences = await check_positions(broker, memory, bus)
        assert [d.describe() for d in differences] == [
            "AAPL: broker 42, Perun expected 40 — trusting the broker",
            "NVDA: broker 3, Perun expected 0 — trusting the broker",
        ]
        logged = [e for e in sub.drain() if e.level is Level.WARNING]
        assert [e.message for e in logged] == [d.describe() for d in differences]
        srv.set_position("AAPL", 40, 200)
        srv.set_position("NVDA", 0)
        assert await check_positions(broker, memory, bus) == []
    finally:
        await memory.close()


# --------------------------------------------------------------------------- external orders


async def test_orders_placed_outside_perun_are_external(
    srv: FakeAlpaca, broker: AlpacaBroker
) -> None:
    from perun_tui.events import OrderChanged
    from perun_tui.models import client_order_id_for

    srv.fill_delay = None  # both stay open
    ours = await broker.submit(buy(client_order_id_for("s1-AAPL-buy-abc", "paper"), 2))
    assert ours.external is False
    tc = broker.trading_client
    from alpaca.trading.requests import MarketOrderRequest

    await asyncio.to_thread(
        tc.submit_order,
        MarketOrderRequest(symbol="MSFT", qty=1, side="buy", time_in_force="day",
                           client_order_id="typed-in-the-dashboard"),
    )
    orders = {o.client_order_id: o for o in await broker.open_orders()}
    assert orders[ours.client_order_id].external is False
    theirs = orders["typed-in-the-dashboard"]
    assert theirs.external is True
    assert OrderChanged(order=theirs).describe().startswith("external order BUY MSFT 1 new")
    assert OrderChanged(order=ours).describe().startswith("order BUY AAPL 2 new")


async def test_broker_notices_reach_the_log(srv: FakeAlpaca, broker: AlpacaBroker) -> None:
    from perun_tui.bus import EventBus
    from perun_tui.events import Level, LogEvent
    from perun_tui.services.reconcile_positions import forward_broker_notices

    bus = EventBus()
    sub = bus.subscribe(LogEvent, coalesce=False)
    forward_broker_notices(broker, bus)
    srv.frozen_now = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)  # Thanksgiving, "open"
    await broker.clock()
    await broker.clock()
    logged = [e for e in sub.drain() if e.message.startswith("market clock")]
    assert [(e.level, e.source) for e in logged] == [(Level.WARNING, "broker")]


# --------------------------------------------------------------------------- order sizing


async def _execution(settings: Settings, broker: AlpacaBroker, tmp_path: Path) -> Any:
    from perun_tui.bus import EventBus
    from perun_tui.services.execution import ExecutionService
    from perun_tui.services.memory import Memory
    from perun_tui.services.risk import RiskPolicy

    memory = await Memory.open(tmp_path / "perun-paper.db")
    execution = ExecutionService(
        settings=settings, broker=broker, memory=memory, bus=EventBus(),
        policy=RiskPolicy(settings.risk), now=lambda: datetime.now(UTC),
    )
    await execution.reconcile()
    return execution


def _signal(symbol: str, qty: float, **kw: Any) -> Any:
    from perun_tui.models import Action, Signal, signal_id_for

    return Signal(
        id=signal_id_for(1, symbol, Action.BUY), cycle=1, symbol=symbol, action=Action.BUY,
        confidence=0.9, rationale="test", analyst="rules", created_at=datetime.now(UTC),
        price=PRICES[symbol], qty=qty, **kw,
    )


async def test_notional_orders_buy_for_a_dollar_amount(srv: FakeAlpaca, tmp_path: Path) -> None:
    from perun_tui.models import SignalStatus

    settings = settings_for(srv)
    settings.trading.fractional = True
    settings.trading.order_size = "notional"
    settings.approval.mode = "auto"
    b = AlpacaBroker(settings, stream=False)
    await b.start()
    execution = await _execution(settings, b, tmp_path)
    try:
        signal = _signal("AAPL", 2.5, notional=578.5)
        await execution.propose(signal, approved_by_risk=True, reason="ok")
        [post] = srv.requests("POST", "/v2/orders")
        assert post.json["notional"] == 578.5 and "qty" not in post.json
        order = await execution.memory.get_order(signal.client_order_id)
        assert order is not None and order.notional == 578.5 and order.qty is None
        assert signal.status in (SignalStatus.SUBMITTED, SignalStatus.FILLED)
        [at_broker] = srv.orders_by_client_id()[signal.client_order_id]
        assert float(at_broker["filled_qty"]) == pytest.approx(578.5 / srv.quote("AAPL")[1])
    finally:
        await b.close()
        await execution.memory.close()


async def test_a_local_refusal_is_not_called_a_broker_rejection(
    srv: FakeAlpaca, tmp_path: Path
) -> None:
    from perun_tui.models import SignalStatus

    settings = settings_for(srv)
    settings.approval.mode = "auto"
    settings.trading.order_type = "limit"  # the config refuses this with fractional; a
    settings.trading.fractional = True  # section-level change slips past, the broker does not
    b = AlpacaBroker(settings, stream=False)
    await b.start()
    execution = await _execution(settings, b, tmp_path)
    try:
        signal = _signal("AAPL", 1.5)
        await execution.propose(signal, approved_by_risk=True, reason="ok")
        assert srv.requests("POST", "/v2/orders") == []
        order = await execution.memory.get_order(signal.client_order_id)
        assert order is not None and order.status is OrderStatus.FAILED
        assert "refused by Perun, not sent to Alpaca" in order.reason
        assert "broker rejected" not in order.reason
        assert signal.status is SignalStatus.FAILED
    finally:
        await b.close()
        await execution.memory.close()


async def test_a_limit_order_takes_its_price_band_from_the_fresh_quote(
    srv: FakeAlpaca, tmp_path: Path
) -> None:
    """Issue 5: limit orders with a price band from the quote, time_in_force day. Approved
    by hand, the signal is re-checked against Alpaca's latest trade (one snapshot request)
    and the limit is that price plus trading.limit_band_pct — not the proposal's price."""
    from perun_tui.models import SignalStatus

    settings = settings_for(srv)
    settings.approval.mode = "manual"
    settings.trading.order_type = "limit"
    settings.trading.limit_band_pct = 0.5
    b = AlpacaBroker(settings, stream=False)
    await b.start()
    execution = await _execution(settings, b, tmp_path)
    try:
        signal = _signal("AAPL", 3)
        await execution.propose(signal, approved_by_risk=True, reason="ok")
        assert signal.status is SignalStatus.PENDING
        assert srv.requests("POST", "/v2/orders") == []
        moved = round(PRICES["AAPL"] * 1.004, 2)  # within approval.max_drift_pct (1 %)
        srv.set_price("AAPL", moved)
        await execution.approve(signal.id)
        [post] = srv.requests("POST", "/v2/orders")
        assert post.json["type"] == "limit" and post.json["time_in_force"] == "day"
        assert post.json["side"] == "buy" and float(post.json["qty"]) == 3
        assert post.json["limit_price"] == round(moved * 1.005, 2)
        assert post.json["client_order_id"] == signal.client_order_id
        order = await execution.memory.get_order(signal.client_order_id)
        assert order is not None and order.type is OrderType.LIMIT
        assert order.limit_price == round(moved * 1.005, 2)
        assert signal.status in (SignalStatus.SUBMITTED, SignalStatus.FILLED)
        # above the market, so marketable: filled at the broker, at no more than the limit
        [at_broker] = srv.orders_by_client_id()[signal.client_order_id]
        assert at_broker["status"] == "filled"
        assert float(at_broker["filled_avg_price"]) <= round(moved * 1.005, 2)
    finally:
        await b.close()
        await execution.memory.close()


async def test_a_422_duplicate_client_order_id_is_looked_up_not_rejected(
    srv: FakeAlpaca, tmp_path: Path
) -> None:
    """Issue 5: a 422 "client_order_id must be unique" means the order exists. The
    execution service looks it up by client order id and tracks it — the signal is not
    failed as a rejection, and the broker still has exactly one order under that id."""
    from perun_tui.models import SignalStatus, client_order_id_for

    settings = settings_for(srv)
    settings.approval.mode = "auto"
    b = AlpacaBroker(settings, stream=False)
    await b.start()
    execution = await _execution(settings, b, tmp_path)
    try:
        signal = _signal("MSFT", 2)
        cid = client_order_id_for(signal.id, "paper")
        await b.submit(buy(cid, 2, symbol="MSFT"))  # an earlier attempt that got through
        await execution.propose(signal, approved_by_risk=True, reason="ok")
        assert srv.submit_attempts[cid] == 2  # the second POST was refused with 422 ...
        assert len(srv.orders_by_client_id()[cid]) == 1  # ... and created nothing
        order = await execution.memory.get_order(cid)
        assert order is not None and order.status is OrderStatus.FILLED, order
        assert order.filled_qty == 2 and "rejected" not in order.reason
        assert signal.status is SignalStatus.FILLED
    finally:
        await b.close()
        await execution.memory.close()


async def test_insufficient_buying_power_ends_the_order_with_alpacas_words(
    srv: FakeAlpaca, tmp_path: Path
) -> None:
    """Issue 5: a 403 is final — one attempt, the order rejected, and Alpaca's own message
    on the order, the signal and the log the user reads."""
    from perun_tui.events import Level, LogEvent
    from perun_tui.models import SignalStatus

    settings = settings_for(srv)
    settings.approval.mode = "auto"
    b = AlpacaBroker(settings, stream=False)
    await b.start()
    execution = await _execution(settings, b, tmp_path)
    logs = execution.bus.subscribe(LogEvent, coalesce=False)
    try:
        signal = _signal("AAPL", 10_000)
        await execution.propose(signal, approved_by_risk=True, reason="ok")
        assert srv.submit_attempts[signal.client_order_id] == 1  # final: not retried
        assert srv.orders_by_client_id() == {}
        order = await execution.memory.get_order(signal.client_order_id)
        assert order is not None and order.status is OrderStatus.REJECTED
        assert order.reason == "broker rejected: insufficient buying power"
        assert signal.status is SignalStatus.FAILED
        assert "insufficient buying power" in signal.reason
        errors = [e.message for e in logs.drain() if e.level is Level.ERROR]
        assert any("insufficient buying power" in m for m in errors), errors
    finally:
        await b.close()
        await execution.memory.close()
