"""The loopback Alpaca fake, exercised with the real alpaca-py clients (no network)."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import (
    StockBarsRequest,
    StockLatestBarRequest,
    StockLatestQuoteRequest,
    StockSnapshotRequest,
)
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import TradeUpdate
from alpaca.trading.requests import (
    GetCalendarRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
)
from alpaca.trading.stream import TradingStream

from tests.fakes.alpaca_server import FakeAlpaca

KEY, SECRET = "PKTEST", "s3cret"
PRICES = {"AAPL": 231.4, "MSFT": 415.2, "NVDA": 124.8}
REPO = Path(__file__).resolve().parents[2]


def _with_timeout(client: Any, seconds: float = 5.0) -> Any:
    """The SDK sets no timeout; give its requests.Session one, and turn SDK retries off."""
    session = client._session
    session.request = functools.partial(session.request, timeout=seconds)
    client._retry = 0
    client._retry_wait = 0
    return client


@pytest.fixture
def srv() -> Iterator[FakeAlpaca]:
    with FakeAlpaca(KEY, SECRET, prices=PRICES) as fake:
        yield fake


@pytest.fixture
def tc(srv: FakeAlpaca) -> TradingClient:
    client = TradingClient(KEY, SECRET, paper=True, url_override=srv.trading_url)
    return _with_timeout(client)


@pytest.fixture
def dc(srv: FakeAlpaca) -> StockHistoricalDataClient:
    return _with_timeout(StockHistoricalDataClient(KEY, SECRET, url_override=srv.data_url))


def _buy(symbol: str, qty: float, coid: str | None = None) -> MarketOrderRequest:
    return MarketOrderRequest(
        symbol=symbol,
        qty=qty,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.DAY,
        client_order_id=coid,
    )


# --------------------------------------------------------------------------- REST basics


def test_urls_and_auth(srv: FakeAlpaca) -> None:
    assert srv.trading_url.startswith("http://127.0.0.1:")
    assert srv.stream_url.startswith("ws://127.0.0.1:") and srv.stream_url.endswith("/stream")
    bad = _with_timeout(TradingClient(KEY, "wrong", paper=True, url_override=srv.trading_url))
    with pytest.raises(APIError) as err:
        bad.get_account()
    assert err.value.status_code == 401
    assert err.value.code == 40110000


def test_account_positions_clock_calendar(srv: FakeAlpaca, tc: TradingClient) -> None:
    account = tc.get_account()
    assert account.account_number == "PA1"
    assert account.status == "ACTIVE"
    assert float(account.cash or 0) == 100_000
    assert float(account.buying_power or 0) == 100_000
    assert account.currency == "USD"
    assert tc.get_all_positions() == []

    srv.set_position("MSFT", 4, avg_entry_price=400.0)
    (position,) = tc.get_all_positions()
    assert position.symbol == "MSFT"
    assert float(position.qty) == 4 and float(position.avg_entry_price) == 400
    assert float(position.market_value or 0) == pytest.approx(4 * 415.2)

    srv.frozen_now = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)  # 10:00 ET, early-close day
    clock = tc.get_clock()
    assert clock.is_open is True
    assert clock.next_close == datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
    assert clock.next_open == datetime(2026, 11, 30, 14, 30, tzinfo=UTC)
    srv.is_open = False
    assert tc.get_clock().is_open is False

    days = tc.get_calendar(GetCalendarRequest(start=date(2026, 11, 25), end=date(2026, 11, 30)))
    assert [d.date for d in days] == [date(2026, 11, 25), date(2026, 11, 27), date(2026, 11, 30)]
    assert days[1].close == datetime(2026, 11, 27, 13, 0)


def test_market_order_fills_and_position_appears(srv: FakeAlpaca, tc: TradingClient) -> None:
    order = tc.submit_order(_buy("AAPL", 10, "c-1"))
    assert order.client_order_id == "c-1"
    assert order.status == OrderStatus.ACCEPTED  # the POST reply; the fill follows
    filled = tc.get_order_by_id(order.id)
    assert filled.status == OrderStatus.FILLED
    bid, ask = srv.quote("AAPL")
    assert float(filled.filled_qty or 0) == 10
    assert float(filled.filled_avg_price or 0) == ask
    (position,) = tc.get_all_positions()
    assert position.symbol == "AAPL" and float(position.qty) == 10
    assert float(position.avg_entry_price) == ask
    account = tc.get_account()
    assert float(account.cash or 0) == pytest.approx(100_000 - 10 * ask)
    assert [e["event"] for e in srv.events] == ["new", "fill"]
    assert srv.events[-1]["position_qty"] == "10"

    # sell half at the bid; closing the rest via DELETE /v2/positions/AAPL
    tc.submit_order(
        MarketOrderRequest(symbol="AAPL", qty=5, side=OrderSide.SELL, time_in_force="day")
    )
    assert srv.positions() == {"AAPL": 5}
    close = tc.close_position("AAPL")
    assert close.side == OrderSide.SELL and float(close.qty or 0) == 5
    assert tc.get_all_positions() == []
    assert float(tc.get_account().cash or 0) == pytest.approx(100_000 - 10 * ask + 10 * bid)


def test_notional_and_partial_fills(srv: FakeAlpaca, tc: TradingClient) -> None:
    srv.partial_fills = True
    order = tc.submit_order(
        MarketOrderRequest(symbol="NVDA", notional=1000, side="buy", time_in_force="day")
    )
    done = tc.get_order_by_id(order.id)
    assert done.status == OrderStatus.FILLED
    assert float(done.filled_qty or 0) == pytest.approx(1000 / srv.quote("NVDA")[1], abs=1e-6)
    assert [e["event"] for e in srv.events] == ["new", "partial_fill", "fill"]

    srv.fill_delay = None  # manual: fill_pending() drives fills
    second = tc.submit_order(_buy("NVDA", 4))
    assert tc.get_order_by_id(second.id).status == OrderStatus.NEW
    assert srv.fill_pending(one_step=True) == 1
    partial = tc.get_order_by_id(second.id)
    assert partial.status == OrderStatus.PARTIALLY_FILLED and float(partial.filled_qty or 0) == 2
    srv.fill_pending()
    assert tc.get_order_by_id(second.id).status == OrderStatus.FILLED


def test_limit_order_fills_when_price_crosses(srv: FakeAlpaca, tc: TradingClient) -> None:
    order = tc.submit_order(
        LimitOrderRequest(symbol="MSFT", qty=2, side="buy", time_in_force="gtc", limit_price=400)
    )
    assert tc.get_order_by_id(order.id).status == OrderStatus.NEW
    assert float(tc.get_account().buying_power or 0) == pytest.approx(100_000 - 800)
    srv.set_price("MSFT", 399.0)
    filled = tc.get_order_by_id(order.id)
    assert filled.status == OrderStatus.FILLED
    assert float(filled.filled_avg_price or 0) <= 400


def test_order_validation(srv: FakeAlpaca, tc: TradingClient) -> None:
    tc.submit_order(_buy("AAPL", 1, "dup"))
    with pytest.raises(APIError) as err:
        tc.submit_order(_buy("AAPL", 1, "dup"))
    assert err.value.status_code == 422
    assert (err.value.code, err.value.message) == (40010001, "client_order_id must be unique")

    # unique forever: also after the first order was canceled
    srv.fill_delay = None
    first = tc.submit_order(_buy("AAPL", 1, "dup2"))
    tc.cancel_order_by_id(first.id)
    with pytest.raises(APIError) as err:
        tc.submit_order(_buy("AAPL", 1, "dup2"))
    assert err.value.status_code == 422

    def post(body: dict[str, Any]) -> APIError:
        with pytest.raises(APIError) as caught:
            tc.post("/orders", body)
        return caught.value

    base = {"symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "day"}
    assert post({**base, "qty": 1, "notional": 100}).status_code == 422
    assert post({**base}).status_code == 422
    assert post({**base, "qty": 1, "client_order_id": "x" * 129}).status_code == 422
    assert post({**base, "qty": 1.5, "time_in_force": "gtc"}).status_code == 422
    limit = {**base, "type": "limit", "limit_price": 200.0, "notional": 100}
    assert post(limit).status_code == 422
    assert post({**base, "qty": 1, "symbol": "NOPE"}).status_code == 422

    broke = post({**base, "qty": 1000})
    assert broke.status_code == 403
    assert (broke.code, broke.message) == (40310000, "insufficient buying power")
    short = post({**base, "side": "sell", "qty": 5, "symbol": "MSFT"})
    assert short.status_code == 403 and short.code == 40310000
    # none of the refused submissions created an order
    assert set(srv.orders_by_client_id()) == {"dup", "dup2"}


def test_get_by_client_id_list_and_cancel(srv: FakeAlpaca, tc: TradingClient) -> None:
    srv.fill_delay = None
    a = tc.submit_order(_buy("AAPL", 1, "a-1"))
    b = tc.submit_order(_buy("MSFT", 1, "b-1"))
    assert tc.get_order_by_client_id("a-1").id == a.id
    with pytest.raises(APIError) as err:
        tc.get_order_by_client_id("missing")
    assert err.value.status_code == 404
    assert srv.requests("GET", "/v2/orders:by_client_order_id")[0].query == {
        "client_order_id": "a-1"
    }

    req = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=50, symbols=["MSFT", "NVDA"])
    assert [o.id for o in tc.get_orders(req)] == [b.id]
    assert len(tc.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))) == 2

    assert tc.cancel_order_by_id(a.id) is None  # 204, empty body
    assert tc.get_order_by_id(a.id).status == OrderStatus.CANCELED
    with pytest.raises(APIError) as err:
        tc.cancel_order_by_id(a.id)
    assert err.value.status_code == 422
    closed = tc.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))
    assert [o.id for o in closed] == [a.id]
    assert [e["event"] for e in srv.events] == ["new", "new", "canceled"]


def test_reject_fault_expiry_and_timed_fills(srv: FakeAlpaca, tc: TradingClient) -> None:
    srv.faults.submit = ["reject"]
    rejected = tc.submit_order(_buy("AAPL", 1, "r-1"))
    assert tc.get_order_by_id(rejected.id).status == OrderStatus.REJECTED
    srv.fill_delay = None
    day = tc.submit_order(_buy("AAPL", 1, "e-1"))
    assert srv.expire_day_orders() == 1
    assert tc.get_order_by_id(day.id).status == OrderStatus.EXPIRED
    assert [e["event"] for e in srv.events] == ["rejected", "new", "expired"]

    srv.fill_delay = 0.05
    srv.is_open = False  # nothing fills while closed
    timed = tc.submit_order(_buy("AAPL", 1, "t-1"))
    time.sleep(0.15)
    assert tc.get_order_by_id(timed.id).status == OrderStatus.NEW
    srv.is_open = True
    deadline = time.monotonic() + 2
    while tc.get_order_by_id(timed.id).status != OrderStatus.FILLED:
        assert time.monotonic() < deadline
        time.sleep(0.02)


# --------------------------------------------------------------------------- market data


def test_bars_pagination_followed_by_sdk(srv: FakeAlpaca, dc: StockHistoricalDataClient) -> None:
    srv.frozen_now = datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
    request = StockBarsRequest(
        symbol_or_symbols=["AAPL", "MSFT", "ZZZZ"],
        timeframe=TimeFrame(5, TimeFrameUnit.Minute),
        start=datetime(2026, 11, 23, tzinfo=UTC),
        end=datetime(2026, 11, 25, 21, 0, tzinfo=UTC),
        feed="iex",
    )
    whole = dc.get_stock_bars(request)
    assert set(whole.data) == {"AAPL", "MSFT"}
    assert len(whole.data["AAPL"]) == 3 * 78  # three full sessions of 5-minute bars
    first = whole.data["AAPL"][0]
    assert first.timestamp == datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
    assert first.trade_count is not None and first.vwap is not None

    srv.bars_page_size = 100
    before = len(srv.requests("GET", "/v2/stocks/bars"))
    paged = dc.get_stock_bars(request)
    calls = srv.requests("GET", "/v2/stocks/bars")[before:]
    assert len(calls) == 5  # 468 bars, 100 per page
    assert "page_token" not in calls[0].query and calls[1].query["page_token"]
    assert calls[0].query["timeframe"] == "5Min" and calls[0].query["feed"] == "iex"
    assert paged.data == whole.data

    limited = dc.get_stock_bars(
        StockBarsRequest(
            symbol_or_symbols="AAPL",
            timeframe=TimeFrame.Day,
            start=datetime(2026, 10, 1, tzinfo=UTC),
            limit=7,
        )
    )
    assert len(limited.data["AAPL"]) == 7


def test_latest_bars_quotes_snapshots(srv: FakeAlpaca, dc: StockHistoricalDataClient) -> None:
    symbols = ["AAPL", "MSFT", "NVDA", "ZZZZ"]
    bars = dc.get_stock_latest_bar(StockLatestBarRequest(symbol_or_symbols=symbols, feed="iex"))
    assert set(bars) == {"AAPL", "MSFT", "NVDA"}
    assert bars["AAPL"].close == 231.4
    quotes = dc.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols=symbols))
    assert (quotes["MSFT"].bid_price, quotes["MSFT"].ask_price) == srv.quote("MSFT")
    assert len(srv.requests("GET", "/v2/stocks/*/latest")) == 2  # one request each
    assert srv.requests("GET", "/v2/stocks/bars/latest")[0].query["symbols"] == ",".join(symbols)
    snaps = dc.get_stock_snapshot(StockSnapshotRequest(symbol_or_symbols=["NVDA", "ZZZZ"]))
    assert set(snaps) == {"NVDA"}
    nvda = snaps["NVDA"]
    assert nvda.latest_trade and nvda.latest_trade.price == 124.8
    assert nvda.daily_bar and nvda.previous_daily_bar and nvda.minute_bar


# --------------------------------------------------------------------------- faults


def test_504_after_create_order_exists_once(srv: FakeAlpaca, tc: TradingClient) -> None:
    srv.faults.submit = ["504_after_create"]
    with pytest.raises(APIError) as err:
        tc.submit_order(_buy("AAPL", 1, "u-504"))
    assert err.value.status_code == 504
    with pytest.raises(json.JSONDecodeError):
        _ = err.value.code  # an nginx HTML body, not JSON
    (order,) = srv.orders_by_client_id()["u-504"]
    assert tc.get_order_by_client_id("u-504").id.hex == order["id"].replace("-", "")
    assert srv.submit_attempts["u-504"] == 1

    # with the SDK's own retries on, the resubmit of the same body hits the unique check
    tc._retry, tc._retry_wait = 3, 0
    srv.faults.submit = ["504_after_create"]
    with pytest.raises(APIError) as err:
        tc.submit_order(_buy("AAPL", 1, "u-504b"))
    assert err.value.status_code == 422
    assert srv.submit_attempts["u-504b"] == 2
    assert len(srv.orders_by_client_id()["u-504b"]) == 1


def test_submit_drop_and_429_faults(srv: FakeAlpaca, tc: TradingClient) -> None:
    srv.faults.submit = ["drop_after_create", "drop_before_create", "429", "500_after_create"]
    with pytest.raises(requests.exceptions.ConnectionError):
        tc.submit_order(_buy("AAPL", 1, "d-1"))
    with pytest.raises(requests.exceptions.ConnectionError):
        tc.submit_order(_buy("AAPL", 1, "d-2"))
    with pytest.raises(APIError) as err:
        tc.submit_order(_buy("AAPL", 1, "d-3"))
    assert (err.value.status_code, err.value.code) == (429, 42910000)
    with pytest.raises(APIError) as err:
        tc.submit_order(_buy("AAPL", 1, "d-4"))
    assert err.value.status_code == 500
    assert {k: len(v) for k, v in srv.orders_by_client_id().items()} == {"d-1": 1, "d-4": 1}
    assert tc.submit_order(_buy("AAPL", 1, "d-2")).client_order_id == "d-2"
    assert [r.fault for r in srv.requests("POST", "/v2/orders")] == [
        "drop_after_create",
        "drop_before_create",
        "429",
        "500_after_create",
        None,
    ]


def test_get_fault_hook_and_rate_limit(srv: FakeAlpaca, tc: TradingClient) -> None:
    srv.faults.add("/v2/account", "500", count=2)
    for _ in range(2):
        with pytest.raises(APIError) as err:
            tc.get_account()
        assert err.value.status_code == 500
    assert tc.get_account().account_number == "PA1"
    srv.faults.add("/v2/positions*", "garbage")
    with pytest.raises(requests.exceptions.JSONDecodeError):
        tc.get_all_positions()
    srv.faults.add("/v2/clock", "503", count=None)
    for _ in range(3):
        with pytest.raises(APIError):
            tc.get_clock()
    srv.faults.clear()
    assert tc.get_clock().is_open

    srv.rate_limit_per_min = 3
    for _ in range(3):
        tc.get_clock()
    with pytest.raises(APIError) as err:
        tc.get_clock()
    assert (err.value.status_code, err.value.code) == (429, 42910000)


def test_stop_releases_hanging_requests() -> None:
    fake = FakeAlpaca(KEY, SECRET, prices=PRICES).start()
    client = TradingClient(KEY, SECRET, paper=True, url_override=fake.trading_url)
    client._retry = 0
    fake.faults.submit = ["hang"]
    fake.faults.add("/v2/account", "hang")
    errors: list[BaseException] = []

    def call(fn: Any) -> None:
        try:
            fn()
        except BaseException as e:
            errors.append(e)

    threads = [
        threading.Thread(target=call, args=(client.get_account,)),
        threading.Thread(target=call, args=(lambda: client.submit_order(_buy("AAPL", 1)),)),
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 3
    while len(fake.request_log) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert all(t.is_alive() for t in threads)  # really hanging
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.0
    for t in threads:
        t.join(2)
    assert not any(t.is_alive() for t in threads)
    assert len(errors) == 2
    assert all(isinstance(e, requests.exceptions.ConnectionError) for e in errors)


# --------------------------------------------------------------------------- stream


async def _stop_stream(stream: TradingStream, task: asyncio.Task[None]) -> None:
    await stream.stop_ws()
    await stream.close()  # wakes the 5 s recv() wait in _consume
    try:
        await asyncio.wait_for(task, 3)
    except TimeoutError:
        task.cancel()
        raise


async def test_trading_stream_receives_fill(srv: FakeAlpaca, tc: TradingClient) -> None:
    updates: list[TradeUpdate] = []
    got = asyncio.Event()

    async def on_update(update: TradeUpdate) -> None:
        updates.append(update)
        if update.event == "fill":
            got.set()

    stream = TradingStream(KEY, SECRET, paper=True, url_override=srv.stream_url)
    stream._reconnect_min_backoff = 0.05
    stream.subscribe_trade_updates(on_update)
    task = asyncio.create_task(stream._run_forever())
    try:
        assert await asyncio.to_thread(srv.wait_listening, 1, 5)
        order = await asyncio.to_thread(tc.submit_order, _buy("AAPL", 3, "s-1"))
        await asyncio.wait_for(got.wait(), 5)
        assert [u.event for u in updates] == ["new", "fill"]
        fill = updates[-1]
        assert fill.order.id == order.id and fill.order.status == OrderStatus.FILLED
        assert fill.price == srv.quote("AAPL")[1] and fill.qty == 3 and fill.position_qty == 3
        assert fill.execution_id is not None

        # an abrupt drop: the SDK reconnects on its own; events while down are not replayed
        assert srv.drop_streams() == 1
        deadline = time.monotonic() + 5
        while srv.stream_connects < 2 or srv.listening_count() < 1:
            assert time.monotonic() < deadline, "stream did not reconnect"
            await asyncio.sleep(0.02)
        got.clear()
        await asyncio.to_thread(tc.submit_order, _buy("MSFT", 1, "s-2"))
        await asyncio.wait_for(got.wait(), 5)
        assert updates[-1].order.client_order_id == "s-2"
    finally:
        await _stop_stream(stream, task)
    assert srv.listening_count() == 0 or srv.stream_connects >= 2


async def test_trading_stream_unauthorized(srv: FakeAlpaca) -> None:
    stream = TradingStream(KEY, "wrong", paper=True, url_override=srv.stream_url)

    async def on_update(update: TradeUpdate) -> None:
        pass

    stream.subscribe_trade_updates(on_update)
    task = asyncio.create_task(stream._run_forever())
    try:
        deadline = time.monotonic() + 3
        while srv.stream_connects < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert srv.listening_count() == 0
    finally:
        await _stop_stream(stream, task)


# --------------------------------------------------------------------------- CLI


def test_cli_serves_until_killed() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.alpaca_server",
            "--port",
            "0",
            "--stream-port",
            "0",
            "--symbols",
            "AAPL,SPY",
            "--walk-interval",
            "0.05",
            "--fault-submit",
            "504_after_create",
            "--always-open",  # fills at any hour (the default follows the calendar)
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[0::2] == ["trading", "data", "stream"]
        assert proc.stdout.readline().startswith("market always open (now open); seed 7")
        trading_url = line[1]
        assert line[5].startswith("ws://127.0.0.1:") and line[5].endswith("/stream")
        client = _with_timeout(TradingClient(KEY, SECRET, paper=True, url_override=trading_url))
        with pytest.raises(APIError) as err:
            client.submit_order(_buy("SPY", 1, "cli-1"))
        assert err.value.status_code == 504
        assert client.get_order_by_client_id("cli-1").status == OrderStatus.FILLED
        data = _with_timeout(StockHistoricalDataClient(KEY, SECRET, url_override=trading_url))
        quotes = data.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols="SPY"))
        assert 400 < quotes["SPY"].ask_price < 800
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


def test_clock_default_now_is_recent(srv: FakeAlpaca, tc: TradingClient) -> None:
    stamp = tc.get_clock().timestamp
    assert abs(stamp - datetime.now(UTC)) < timedelta(seconds=5)


# --------------------------------------------------------------------------- market hours


def test_clock_follows_the_calendar_unless_always_open() -> None:
    fake = FakeAlpaca(KEY, SECRET, prices=PRICES, is_open=None, fill_delay=0.0)
    with fake:
        client = _with_timeout(
            TradingClient(KEY, SECRET, paper=True, url_override=fake.trading_url)
        )
        for when, expected in [
            (datetime(2026, 3, 7, 15, 0, tzinfo=UTC), False),  # Saturday
            (datetime(2026, 11, 26, 15, 0, tzinfo=UTC), False),  # Thanksgiving
            (datetime(2026, 11, 27, 18, 30, tzinfo=UTC), False),  # 13:30 ET, early close
            (datetime(2026, 11, 27, 17, 30, tzinfo=UTC), True),  # 12:30 ET, same day
            (datetime(2026, 3, 2, 14, 29, tzinfo=UTC), False),  # Monday 09:29 ET
            (datetime(2026, 3, 2, 14, 30, tzinfo=UTC), True),  # Monday 09:30 ET
        ]:
            fake.frozen_now = when
            assert client.get_clock().is_open is expected, when
            assert fake.is_open is expected

        # an order placed while closed waits, and fills once the session has opened
        fake.frozen_now = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
        order = client.submit_order(_buy("AAPL", 2, "wait-1"))
        assert client.get_order_by_id(order.id).status == OrderStatus.NEW
        fake.frozen_now = datetime(2026, 3, 9, 14, 31, tzinfo=UTC)  # Monday, open
        assert client.get_order_by_id(order.id).status == OrderStatus.FILLED

        fake.is_open = True  # always open: the clock says so on a Saturday too
        fake.frozen_now = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
        assert client.get_clock().is_open is True and fake.always_open


# --------------------------------------------------------------------------- price history


def _bars_json(
    fake: FakeAlpaca, symbols: list[str], start: datetime, timeframe: str = "15Min"
) -> dict[str, list[dict[str, Any]]]:
    query = {"symbols": ",".join(symbols), "timeframe": timeframe, "start": start.isoformat()}
    return fake._bars(query)["bars"]  # type: ignore[no-any-return]


def test_history_is_stored_seeded_and_never_reanchored() -> None:
    t0 = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)  # Wednesday 12:00 ET
    start = t0 - timedelta(days=5)

    def make(seed: int) -> FakeAlpaca:
        fake = FakeAlpaca(KEY, SECRET, seed=seed)
        fake.frozen_now = t0
        for symbol, price in PRICES.items():
            fake.set_price(symbol, price)
        return fake

    a, b, c = make(7), make(7), make(8)
    first = _bars_json(a, list(PRICES), start)
    assert first == _bars_json(b, list(PRICES), start)  # same seed, same history
    assert first["AAPL"] != _bars_json(c, ["AAPL"], start)["AAPL"]  # another seed, another
    assert first == _bars_json(a, list(PRICES), start)  # asked again: identical
    closes = [bar["c"] for bar in first["AAPL"]]
    assert closes[-1] == PRICES["AAPL"]  # the walk ends at the price the symbol began with
    assert len(set(closes)) > len(closes) // 2  # and it moves

    # later prices extend the history; they do not re-anchor the past
    a.frozen_now = t0 + timedelta(minutes=20)
    a.set_price("AAPL", 250.0)
    a.frozen_now = t0 + timedelta(minutes=40)
    after = _bars_json(a, ["AAPL"], start)["AAPL"]
    assert after[: len(first["AAPL"]) - 1] == first["AAPL"][:-1]
    assert after[-1]["c"] == 250.0 and after[-1]["h"] == 250.0
    # older bars are generated on demand, and agree with the newer ones already served
    daily = _bars_json(a, ["AAPL"], t0 - timedelta(days=60), "1Day")["AAPL"]
    assert len(daily) >= 40
    tuesday = next(bar for bar in daily if bar["t"].startswith("2026-12-01"))
    tuesday_15m = [bar for bar in after if bar["t"].startswith("2026-12-01")]
    assert tuesday["c"] == tuesday_15m[-1]["c"]
    assert tuesday["h"] == max(bar["h"] for bar in tuesday_15m)


@pytest.mark.parametrize(
    "t0",
    [
        datetime(2026, 12, 4, 15, 20, tzinfo=UTC),  # Friday 10:20 ET
        datetime(2026, 12, 2, 20, 55, tzinfo=UTC),  # Wednesday 15:55 ET
        datetime(2026, 12, 5, 17, 0, tzinfo=UTC),  # Saturday
        datetime(2026, 11, 30, 12, 0, tzinfo=UTC),  # Monday before the open
    ],
)
def test_default_history_gives_the_rules_analyst_trades(t0: datetime) -> None:
    """With the default seed and symbols, the first cycle already sees a trend to buy."""
    from perun_tui.features import compute_features
    from perun_tui.llm.rules import RulesAnalyst
    from perun_tui.models import Action, Bar, Quote

    fake = FakeAlpaca(KEY, SECRET)
    fake.frozen_now = t0
    symbols = ["AAPL", "MSFT", "NVDA", "SPY"]
    for symbol in symbols:
        fake.set_price(symbol, {**PRICES, "SPY": 561.3}[symbol])
    history = _bars_json(fake, symbols, t0 - timedelta(days=7))
    rules = RulesAnalyst()
    actions = {}
    for symbol in symbols:
        bars = [
            Bar(symbol=symbol, ts=datetime.fromisoformat(b["t"].replace("Z", "+00:00")),
                open=b["o"], high=b["h"], low=b["l"], close=b["c"], volume=b["v"])
            for b in history[symbol]
        ][-60:]
        price = fake.price(symbol) or 0.0
        quote = Quote(symbol=symbol, ts=t0, bid=price - 0.01, ask=price + 0.01, last=price)
        actions[symbol] = rules.evaluate(compute_features(symbol, bars, quote)).action
    assert Action.BUY in actions.values(), actions
