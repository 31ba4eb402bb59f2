"""The sim exchange: deterministic synthetic market, orders, fills, persistence.

Pinned to real NYSE sessions: 2026-11-24 (Tue, opens 14:30 UTC), 2026-11-25,
2026-11-26 (Thanksgiving, closed) and 2026-11-27 (early close 13:00 ET = 18:00 UTC).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from perun_tui.brokers.base import Broker, BrokerRejected, UnknownSymbol
from perun_tui.brokers.sim import KEEP_FINAL_ORDERS, SimBroker
from perun_tui.brokers.sim_store import (
    DictSimStore,
    SimFillRow,
    SimOrderRow,
    SimStore,
)
from perun_tui.market_hours import UTC, FrozenClock, TradingCalendar
from perun_tui.models import OrderRequest, OrderStatus, OrderType, OrderUpdate, Side

SYMBOLS = ["AAPL", "MSFT", "NVDA", "SPY"]
OPEN = dt.datetime(2026, 11, 24, 14, 30, tzinfo=UTC)  # 09:30 ET
CLOSE = dt.datetime(2026, 11, 24, 21, 0, tzinfo=UTC)  # 16:00 ET
MIN = dt.timedelta(minutes=1)


@pytest.fixture(scope="module")
def cal() -> TradingCalendar:
    return TradingCalendar()


class CountingStore(DictSimStore):
    """Remembers what each save wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[tuple[str, list[SimOrderRow], list[SimFillRow]]] = []

    async def save_sim(
        self, head: str, orders: Sequence[SimOrderRow], fills: Sequence[SimFillRow]
    ) -> None:
        self.written.append((head, list(orders), list(fills)))
        await super().save_sim(head, orders, fills)

    def last_head(self) -> dict[str, Any]:
        assert self.head is not None
        data: dict[str, Any] = json.loads(self.head)
        return data


def make(
    cal: TradingCalendar,
    at: dt.datetime = OPEN,
    *,
    symbols: list[str] | None = None,
    seed: int = 42,
    cash: float = 100_000,
    store: SimStore | None = None,
) -> tuple[SimBroker, FrozenClock]:
    clock = FrozenClock(at)
    broker = SimBroker(
        symbols or SYMBOLS, clock, cal, seed=seed, starting_cash=cash, store=store
    )
    return broker, clock


def buy(cid: str, symbol: str = "AAPL", qty: float = 10, **kw: Any) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=symbol, side=Side.BUY, qty=qty, **kw)


def sell(cid: str, symbol: str = "AAPL", qty: float = 10, **kw: Any) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=symbol, side=Side.SELL, qty=qty, **kw)


def drain(stream: Any) -> list[OrderUpdate]:
    """Everything already queued on an order-update stream, without waiting."""
    out: list[OrderUpdate] = []
    queue: asyncio.Queue[OrderUpdate | None] = stream.queue
    while not queue.empty():
        item = queue.get_nowait()
        if item is not None:
            out.append(item)
    return out


# --------------------------------------------------------------------------- market


async def test_implements_broker_protocol(cal: TradingCalendar) -> None:
    broker, _ = make(cal)
    assert isinstance(broker, Broker)
    assert broker.name == "sim"


async def test_same_seed_same_prices_in_any_query_order(cal: TradingCalendar) -> None:
    times = [OPEN + dt.timedelta(minutes=m) for m in (0, 1, 17, 95, 389)] + [
        CLOSE + dt.timedelta(hours=3),
        dt.datetime(2026, 11, 25, 16, 7, tzinfo=UTC),
    ]
    a, ca = make(cal)
    b, cb = make(cal, symbols=list(reversed(SYMBOLS)))
    seen_a = {}
    for t in times:
        ca.set(t)
        seen_a[t] = await a.latest(SYMBOLS)
    # b: reverse time order, one symbol at a time, with history calls in between
    for t in reversed(times):
        cb.set(t)
        await b.history(["NVDA"], 15, 30)
        for sym in reversed(SYMBOLS):
            got = await b.latest([sym])
            assert got[sym] == seen_a[t][sym]
    c, cc = make(cal, seed=7)
    cc.set(times[3])
    other = await c.latest(SYMBOLS)
    assert all(other[s].last != seen_a[times[3]][s].last for s in SYMBOLS)


async def test_quotes_plausible(cal: TradingCalendar) -> None:
    broker, clock = make(cal, symbols=[*SYMBOLS, "ZQX"])
    clock.set(OPEN + dt.timedelta(minutes=61))
    quotes = await broker.latest([*SYMBOLS, "ZQX"])
    assert set(quotes) == {*SYMBOLS, "ZQX"}
    ranges = {"AAPL": (100, 500), "MSFT": (200, 900), "NVDA": (40, 500), "SPY": (300, 1000)}
    for sym, (lo, hi) in ranges.items():
        assert lo < quotes[sym].last < hi, quotes[sym]
    assert 5 < quotes["ZQX"].last < 2000
    for q in quotes.values():
        assert q.bid < q.last < q.ask
        assert 0.5 < q.spread_pct * 100 < 40  # a few bps
        assert q.volume > 0
        assert q.ts == OPEN + dt.timedelta(minutes=61)


async def test_paths_plausible_and_volume_u_shaped(cal: TradingCalendar) -> None:
    broker, clock = make(cal)
    clock.set(dt.datetime(2026, 11, 25, 22, 0, tzinfo=UTC))
    bars = (await broker.history(SYMBOLS, 1, 390 * 10))
    first, mid, last = [], [], []
    for sym, rows in bars.items():
        assert len(rows) == 390 * 10  # 10 regular sessions, 11-12 .. 11-25
        closes = np.array([b.close for b in rows])
        assert (closes > 0).all()
        rets = np.abs(np.diff(np.log(closes)))
        assert rets.mean() < 0.003, sym
        assert np.median(rets) < 0.002, sym
        for b in rows:
            assert b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high
        for b in rows:
            local = b.ts.astimezone(dt.timezone(dt.timedelta(hours=-5)))
            minute = (local.hour - 9) * 60 + local.minute - 30
            if minute < 30:
                first.append(b.volume)
            elif 180 <= minute < 240:
                mid.append(b.volume)
            elif 360 <= minute < 390:
                last.append(b.volume)
    assert np.mean(first) > 1.5 * np.mean(mid)
    assert np.mean(last) > 1.5 * np.mean(mid)


async def test_unknown_symbol_absent(cal: TradingCalendar) -> None:
    broker, _ = make(cal)
    quotes = await broker.latest(["AAPL", "NOPEX"])
    assert set(quotes) == {"AAPL"}
    hist = await broker.history(["AAPL", "NOPEX"], 15, 5)
    assert set(hist) == {"AAPL"}
    with pytest.raises(UnknownSymbol):
        await broker.submit(buy("u1", "NOPEX"))


async def test_history_oldest_first_completed_only(cal: TradingCalendar) -> None:
    now = OPEN + dt.timedelta(minutes=37)  # 10:07 ET
    broker, _ = make(cal, at=now)
    bars = (await broker.history(["AAPL"], 15, 5))["AAPL"]
    assert len(bars) == 5
    ts = [b.ts for b in bars]
    assert ts == sorted(ts)
    assert all(t + dt.timedelta(minutes=15) <= now for t in ts)
    # two completed buckets today (09:30, 09:45), the rest from the previous session
    assert ts[-2:] == [OPEN, OPEN + dt.timedelta(minutes=15)]
    prev_close = dt.datetime(2026, 11, 23, 21, 0, tzinfo=UTC)
    assert ts[:3] == [prev_close - dt.timedelta(minutes=15 * k) for k in (3, 2, 1)]
    # the last completed 1-min bar is the quote's last
    ones = (await broker.history(["AAPL"], 1, 3))["AAPL"]
    quote = (await broker.latest(["AAPL"]))["AAPL"]
    assert ones[-1].ts == now - MIN
    assert ones[-1].close == quote.last
    # the 15-min bar aggregates its minutes
    mins = (await broker.history(["AAPL"], 1, 37))["AAPL"][:15]
    agg = bars[-2]
    assert agg.open == mins[0].open and agg.close == mins[-1].close
    assert agg.high == max(b.high for b in mins) and agg.low == min(b.low for b in mins)
    assert agg.volume == sum(b.volume for b in mins)


async def test_history_long_lookback(cal: TradingCalendar) -> None:
    broker, _ = make(cal, at=OPEN + dt.timedelta(hours=2))
    bars = (await broker.history(["SPY", "NVDA"], 15, 1000))
    for rows in bars.values():
        assert len(rows) == 1000
        assert all(a.ts < b.ts for a, b in itertools.pairwise(rows))
    # at the open, nothing of today's session is complete yet
    fresh, _ = make(cal)
    rows = (await fresh.history(["SPY"], 15, 3))["SPY"]
    assert rows[-1].ts == dt.datetime(2026, 11, 23, 20, 45, tzinfo=UTC)


async def test_market_buy_fills_at_or_above_ask(cal: TradingCalendar) -> None:
    broker, clock = make(cal, at=OPEN + dt.timedelta(minutes=5))
    quote = (await broker.latest(["AAPL"]))["AAPL"]
    order = await broker.submit(buy("b1", qty=10))
    assert order.status is OrderStatus.FILLED
    assert order.filled_qty == 10
    assert order.filled_avg_price is not None and order.filled_avg_price >= quote.ask
    assert order.filled_avg_price < quote.ask * 1.001
    assert order.broker_order_id
    acct = await broker.account()
    assert acct.cash == pytest.approx(100_000 - 10 * order.filled_avg_price, abs=0.01)
    [pos] = await broker.positions()
    assert pos.symbol == "AAPL" and pos.qty == 10
    assert pos.avg_price == pytest.approx(order.filled_avg_price)
    assert pos.opened_at == OPEN + dt.timedelta(minutes=5)
    clock.advance(dt.timedelta(minutes=30))
    acct = await broker.account()
    [pos] = await broker.positions()
    last = (await broker.latest(["AAPL"]))["AAPL"].last
    assert pos.market_price == pytest.approx(last)
    assert acct.equity == pytest.approx(acct.cash + 10 * last, abs=0.02)
    assert acct.buying_power == pytest.approx(acct.cash)
    assert acct.last_equity == 100_000


async def test_slippage_grows_with_size(cal: TradingCalendar) -> None:
    broker, _ = make(cal, at=OPEN + dt.timedelta(minutes=5), cash=1e9)
    small = await broker.submit(buy("s", "MSFT", qty=1))
    big = await broker.submit(buy("b", "MSFT", qty=200_000))
    assert big.filled_avg_price is not None and small.filled_avg_price is not None
    assert big.filled_avg_price > small.filled_avg_price


async def test_notional_market_order(cal: TradingCalendar) -> None:
    broker, _ = make(cal, at=OPEN + dt.timedelta(minutes=5))
    order = await broker.submit(
        OrderRequest(client_order_id="n1", symbol="NVDA", side=Side.BUY, notional=1000)
    )
    assert order.status is OrderStatus.FILLED and order.qty is None
    assert order.filled_qty * (order.filled_avg_price or 0) == pytest.approx(1000, abs=0.01)
    assert (await broker.account()).cash == pytest.approx(99_000, abs=0.01)


async def test_sell_realizes_pl(cal: TradingCalendar) -> None:
    broker, clock = make(cal, at=OPEN + dt.timedelta(minutes=5))
    b = await broker.submit(buy("b1", qty=10))
    clock.advance(dt.timedelta(hours=2))
    part = await broker.submit(sell("s1", qty=4))
    assert part.status is OrderStatus.FILLED
    assert broker.realized_pl == pytest.approx(
        4 * ((part.filled_avg_price or 0) - (b.filled_avg_price or 0))
    )
    [pos] = await broker.positions()
    assert pos.qty == 6 and pos.avg_price == pytest.approx(b.filled_avg_price)
    rest = await broker.submit(sell("s2", qty=6))
    assert await broker.positions() == []
    expected = 4 * (part.filled_avg_price or 0) + 6 * (rest.filled_avg_price or 0) - 10 * (
        b.filled_avg_price or 0
    )
    assert broker.realized_pl == pytest.approx(expected)
    acct = await broker.account()
    assert acct.cash == pytest.approx(100_000 + expected, abs=0.01)
    assert acct.equity == acct.cash


async def test_rejections(cal: TradingCalendar) -> None:
    broker, _ = make(cal, at=OPEN + dt.timedelta(minutes=5))
    await broker.submit(buy("dup", qty=1))
    with pytest.raises(BrokerRejected) as exc:
        await broker.submit(buy("dup", qty=1))
    assert exc.value.status == 422 and "client_order_id must be unique" in exc.value.message
    with pytest.raises(BrokerRejected) as exc:
        await broker.submit(buy("big", qty=1000))  # ~ $200k+ with $100k cash
    assert exc.value.status == 403 and "buying power" in exc.value.message
    with pytest.raises(BrokerRejected) as exc:
        await broker.submit(sell("short", qty=2))  # holds 1
    assert exc.value.status == 403 and "insufficient qty" in exc.value.message
    with pytest.raises(BrokerRejected) as exc:
        await broker.submit(sell("none", "MSFT", qty=1))
    assert exc.value.status == 403
    for bad in (
        OrderRequest(client_order_id="x1", symbol="AAPL", side=Side.BUY),
        OrderRequest(client_order_id="x2", symbol="AAPL", side=Side.BUY, qty=1, notional=5),
        OrderRequest(client_order_id="x3", symbol="AAPL", side=Side.BUY, qty=-1),
        OrderRequest(client_order_id="x4", symbol="AAPL", side=Side.BUY, qty=1,
                     type=OrderType.LIMIT),
        OrderRequest(client_order_id="x5", symbol="AAPL", side=Side.BUY, qty=1,
                     time_in_force="opg"),
    ):
        with pytest.raises(BrokerRejected) as exc:
            await broker.submit(bad)
        assert exc.value.status == 422
        assert "client_order_id" not in exc.value.message
    # rejected requests do not consume their client order id
    assert await broker.order_by_client_id("big") is None
    assert (await broker.submit(buy("big", qty=1))).status is OrderStatus.FILLED


async def test_limit_order_rests_then_fills(cal: TradingCalendar) -> None:
    start = OPEN + dt.timedelta(minutes=10)
    broker, clock = make(cal, at=start)
    quote = (await broker.latest(["AAPL"]))["AAPL"]
    # peek at the (deterministic) future: the lowest low in the next two hours
    session = cal.current_session(start)
    assert session is not None
    path = broker.market.path("AAPL", session)
    low = float(path.low[10:130].min())
    limit = round(min(low * 1.0005, quote.bid - 0.01), 2)
    assert low <= limit < quote.bid
    stream = broker.order_updates()
    order = await broker.submit(buy("lim", qty=5, type=OrderType.LIMIT, limit_price=limit))
    assert order.status is OrderStatus.NEW and order.filled_qty == 0
    assert [o.client_order_id for o in await broker.open_orders()] == ["lim"]
    acct = await broker.account()
    assert acct.buying_power == pytest.approx(acct.cash - 5 * limit, abs=0.01)
    clock.advance(dt.timedelta(hours=2))
    filled = await broker.order_by_client_id("lim")
    assert filled is not None and filled.status is OrderStatus.FILLED
    assert filled.filled_avg_price is not None and filled.filled_avg_price <= limit
    assert filled.updated_at is not None and start < filled.updated_at <= clock.now()
    assert await broker.open_orders() == []
    events = [u.event for u in drain(stream)]
    assert events == ["new", "fill"]
    [pos] = await broker.positions()
    assert pos.qty == 5 and pos.opened_at == filled.updated_at


async def test_limit_order_expires_at_close(cal: TradingCalendar) -> None:
    broker, clock = make(cal, at=OPEN + dt.timedelta(minutes=10))
    quote = (await broker.latest(["AAPL"]))["AAPL"]
    stream = broker.order_updates()
    order = await broker.submit(
        buy("far", qty=5, type=OrderType.LIMIT, limit_price=round(quote.bid * 0.5, 2))
    )
    clock.set(CLOSE - MIN)
    assert (await broker.order_by_client_id("far")).status is OrderStatus.NEW  # type: ignore[union-attr]
    clock.set(CLOSE + dt.timedelta(hours=1))
    done = await broker.order_by_client_id("far")
    assert done is not None and done.status is OrderStatus.EXPIRED
    assert done.updated_at == CLOSE
    assert [u.event for u in drain(stream)] == ["new", "expired"]
    acct = await broker.account()
    assert acct.buying_power == acct.cash == 100_000
    with pytest.raises(BrokerRejected) as exc:
        await broker.cancel(order.broker_order_id or "")
    assert exc.value.status == 422


async def test_cancel_resting_order(cal: TradingCalendar) -> None:
    broker, _ = make(cal, at=OPEN + dt.timedelta(minutes=10))
    stream = broker.order_updates()
    order = await broker.submit(buy("c1", qty=1, type=OrderType.LIMIT, limit_price=10.0))
    assert order.status is OrderStatus.NEW
    await broker.cancel(order.broker_order_id or "")
    got = await broker.order_by_client_id("c1")
    assert got is not None and got.status is OrderStatus.CANCELED
    assert [u.event for u in drain(stream)] == ["new", "canceled"]
    with pytest.raises(BrokerRejected):
        await broker.cancel(order.broker_order_id or "")
    with pytest.raises(BrokerRejected) as exc:
        await broker.cancel("no-such-order")
    assert exc.value.status == 404


async def test_order_updates_stream(cal: TradingCalendar) -> None:
    broker, clock = make(cal, at=OPEN + dt.timedelta(minutes=3), symbols=["ZQX"], cash=1e9)
    updates: list[OrderUpdate] = []

    async def consume() -> None:
        async for u in broker.order_updates():
            updates.append(u)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    await broker.submit(buy("m1", "ZQX", qty=3))
    await broker.submit(buy("m2", "ZQX", qty=2))
    # a big resting order fills over several minutes (≤ 25% of each minute's volume)
    quote = (await broker.latest(["ZQX"]))["ZQX"]
    session = cal.current_session(clock.now())
    assert session is not None
    path = broker.market.path("ZQX", session)
    limit = round(min(float(np.median(path.low[3:360])), quote.bid - 0.01), 2)
    assert limit > float(path.low[3:360].min())
    await broker.submit(
        buy("m3", "ZQX", qty=quote.volume * 2, type=OrderType.LIMIT, limit_price=limit)
    )
    clock.advance(dt.timedelta(hours=6))
    await broker.open_orders()
    await broker.close()
    await asyncio.wait_for(task, 1)
    events = [u.event for u in updates]
    assert events[:4] == ["new", "fill", "new", "fill"]
    assert events[4] == "new"
    assert "partial_fill" in events[5:]
    fills = [u.fill for u in updates if u.fill is not None]
    assert len({f.fill_id for f in fills}) == len(fills)
    assert all(u.event in ("fill", "partial_fill") for u in updates if u.fill is not None)
    m3 = [u for u in updates if u.order.client_order_id == "m3" and u.fill is not None]
    assert sum(u.fill.qty for u in m3 if u.fill) == pytest.approx(m3[-1].order.filled_qty)
    assert len(broker.fills) == len(fills)
    # after close, a new stream ends at once
    assert [u async for u in broker.order_updates()] == []


async def test_first_stream_sees_earlier_updates(cal: TradingCalendar) -> None:
    broker, _ = make(cal, at=OPEN + dt.timedelta(minutes=3))
    await broker.submit(buy("early", qty=1))
    first = broker.order_updates()  # the daemon's loop may start after the first order
    assert [(u.event, u.order.client_order_id) for u in drain(first)] == [
        ("new", "early"), ("fill", "early")
    ]
    second = broker.order_updates()
    broker.order_updates()  # abandoned at once: held weakly, it does not collect updates
    await broker.submit(buy("later", qty=1))
    assert [u.event for u in drain(first)] == ["new", "fill"]
    assert [u.order.client_order_id for u in drain(second)] == ["later", "later"]
    assert len(broker._streams) == 2
    await broker.close()
    await broker.close()  # twice is fine
    assert [u async for u in first] == []


# --------------------------------------------------------------------------- persistence


async def test_persistence_round_trip(cal: TradingCalendar) -> None:
    store = CountingStore()
    start = OPEN + dt.timedelta(minutes=20)
    a, _ = make(cal, at=start, store=store)
    await a.start()
    bought = await a.submit(buy("p1", qty=10))
    await a.submit(sell("p2", qty=3))
    resting = await a.submit(buy("p3", "MSFT", qty=2, type=OrderType.LIMIT, limit_price=1.0))
    acct_a = await a.account()
    pos_a = await a.positions()
    await a.close()
    head = store.last_head()
    assert head["version"] == 2 and head["positions"]["AAPL"]["qty"] == 7
    assert "orders" not in head and "fills" not in head
    assert set(store.orders) == {"p1", "p2", "p3"}
    assert [r.client_order_id for r in store.orders.values() if r.open] == ["p3"]

    b, clock_b = make(cal, at=start + dt.timedelta(minutes=1), store=store)
    await b.start()
    assert (await b.account()).cash == acct_a.cash
    assert b.realized_pl == a.realized_pl
    pos_b = await b.positions()
    assert [(p.symbol, p.qty, p.avg_price, p.opened_at) for p in pos_b] == [
        (p.symbol, p.qty, p.avg_price, p.opened_at) for p in pos_a
    ]
    old = await b.order_by_client_id("p1")  # final: read from the store
    assert old is not None and old.broker_order_id == bought.broker_order_id
    assert old.status is OrderStatus.FILLED
    assert [o.broker_order_id for o in await b.open_orders()] == [resting.broker_order_id]
    with pytest.raises(BrokerRejected) as exc:
        await b.submit(buy("p1", qty=1))
    assert "client_order_id must be unique" in exc.value.message
    with pytest.raises(BrokerRejected) as exc:
        await b.cancel(bought.broker_order_id or "")
    assert exc.value.status == 422 and "already filled" in exc.value.message
    assert [f.fill_id for f in b.fills] == [f.fill_id for f in a.fills]
    # the resting day order still expires after the restart, and that is saved too
    clock_b.set(CLOSE + dt.timedelta(minutes=5))
    await b.account()
    c, _ = make(cal, at=CLOSE + dt.timedelta(minutes=6), store=store)
    got = await c.order_by_client_id("p3")  # lazily loads without start()
    assert got is not None and got.status is OrderStatus.EXPIRED
    assert not store.orders["p3"].open


async def test_state_is_saved_after_changes(cal: TradingCalendar) -> None:
    store = CountingStore()
    broker, clock = make(cal, at=OPEN + dt.timedelta(minutes=20), store=store)
    await broker.latest(["AAPL"])
    assert store.saves == 0  # reading prices changes nothing
    await broker.submit(buy("s1", qty=1))
    assert store.saves == 1
    assert store.last_head()["positions"]["AAPL"]["qty"] == 1
    await broker.submit(buy("s2", qty=1, type=OrderType.LIMIT, limit_price=1.0))
    await broker.cancel((await broker.order_by_client_id("s2")).broker_order_id or "")  # type: ignore[union-attr]
    assert store.saves == 3
    # each save wrote what changed: the new filled order and its fill, the resting
    # order, the same order canceled
    assert [([o.client_order_id for o in orders], [f.fill_id for f in fills])
            for _, orders, fills in store.written] == [
        (["s1"], [f"{(await broker.order_by_client_id('s1')).broker_order_id}-1"]),  # type: ignore[union-attr]
        (["s2"], []),
        (["s2"], []),
    ]
    clock.advance(dt.timedelta(minutes=30))
    await broker.latest(["AAPL"])
    assert store.saves == 3


async def test_a_save_does_not_grow_with_history(cal: TradingCalendar) -> None:
    store = CountingStore()
    broker, clock = make(cal, at=OPEN + dt.timedelta(minutes=5), store=store)
    sizes = []
    for i in range(300):
        await broker.submit(buy(f"g{i}", qty=1) if i % 2 == 0 else sell(f"g{i}", qty=1))
        head, orders, fills = store.written[-1]
        sizes.append(len(head) + sum(len(o.data) for o in orders) + sum(len(f.data) for f in fills))
        clock.advance(dt.timedelta(seconds=30))
    # each save writes the one order and its fill, whatever came before (the bytes
    # vary only with the digits of ids and amounts)
    assert {(len(orders), len(fills)) for _, orders, fills in store.written} == {(1, 1)}
    assert max(sizes[-50:]) <= 1.05 * max(sizes[:50])
    # memory keeps the latest final orders and the recent fills; the store has the rest
    assert len(broker._orders) == KEEP_FINAL_ORDERS
    assert len(store.orders) == 300
    first = await broker.order_by_client_id("g0")
    assert first is not None and first.status is OrderStatus.FILLED
    with pytest.raises(BrokerRejected):
        await broker.submit(buy("g0", qty=1))  # ids stay unique beyond what is in memory


async def test_fills_before_the_reference_close_are_dropped(cal: TradingCalendar) -> None:
    store = CountingStore()
    broker, clock = make(cal, at=OPEN + dt.timedelta(minutes=20), store=store)
    await broker.submit(buy("d1", "SPY", qty=20))
    clock.set(dt.datetime(2026, 11, 25, 15, 0, tzinfo=UTC))
    await broker.submit(buy("d2", "SPY", qty=1))
    # the base is the 11-24 close: d1 is part of the holdings then, not taken back
    assert [f.client_order_id for f in broker.fills] == ["d2"]
    base = (await broker.account()).last_equity
    restarted, _ = make(cal, at=dt.datetime(2026, 11, 25, 15, 1, tzinfo=UTC), store=store)
    assert (await restarted.account()).last_equity == base
    assert [f.client_order_id for f in restarted.fills] == ["d2"]
    clock.set(dt.datetime(2026, 11, 27, 15, 0, tzinfo=UTC))  # the 11-25 close now
    await broker.submit(buy("d3", "SPY", qty=1))
    assert [f.client_order_id for f in broker.fills] == ["d3"]
    assert len(store.fills) == 3  # the store keeps them all


async def test_last_equity_is_previous_close(cal: TradingCalendar) -> None:
    broker, clock = make(cal, at=OPEN + dt.timedelta(minutes=20))
    order = await broker.submit(buy("e1", "SPY", qty=20))
    acct = await broker.account()
    assert acct.last_equity == 100_000  # bought today: yesterday's equity was all cash
    # next day: the base is the equity at the 11-24 close
    clock.set(dt.datetime(2026, 11, 25, 15, 0, tzinfo=UTC))
    session = cal.session_on(dt.date(2026, 11, 24))
    assert session is not None
    close_px = broker.market.session_close_price("SPY", session)
    acct = await broker.account()
    expected = 100_000 - 20 * (order.filled_avg_price or 0) + 20 * close_px
    assert acct.last_equity == pytest.approx(expected, abs=0.01)
    # a sale today does not change the base
    await broker.submit(sell("e2", "SPY", qty=20))
    assert (await broker.account()).last_equity == pytest.approx(expected, abs=0.01)


# --------------------------------------------------------------------------- closed market


async def test_market_closed(cal: TradingCalendar) -> None:
    thanksgiving = dt.datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
    broker, clock = make(cal, at=thanksgiving)
    mc = await broker.clock()
    assert not mc.is_open
    assert mc.next_open == dt.datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
    assert mc.next_close == dt.datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
    with pytest.raises(BrokerRejected) as exc:
        await broker.submit(buy("c1", qty=1))
    assert exc.value.status == 403 and "market is closed" in exc.value.message
    quote = (await broker.latest(["AAPL"]))["AAPL"]
    wed_close = dt.datetime(2026, 11, 25, 21, 0, tzinfo=UTC)
    assert quote.ts == wed_close
    last_bar = (await broker.history(["AAPL"], 1, 1))["AAPL"][-1]
    assert last_bar.ts == wed_close - MIN and last_bar.close == quote.last
    # the rejected request did not consume its id; it works once the market opens
    clock.set(dt.datetime(2026, 11, 27, 15, 0, tzinfo=UTC))
    assert (await broker.clock()).is_open
    assert (await broker.submit(buy("c1", qty=1))).status is OrderStatus.FILLED
    # early close: the last hourly bucket is cut at 13:00 ET
    clock.set(dt.datetime(2026, 11, 27, 19, 0, tzinfo=UTC))
    bars = (await broker.history(["AAPL"], 60, 4))["AAPL"]
    assert [b.ts.hour * 60 + b.ts.minute for b in bars[-4:]] == [
        h * 60 + 30 for h in (14, 15, 16, 17)
    ]
    assert (await broker.latest(["AAPL"]))["AAPL"].ts == dt.datetime(
        2026, 11, 27, 18, 0, tzinfo=UTC
    )
