"""Alpaca broker: request budget per cycle and the cost of Perun's wrapper.

Against the loopback FakeAlpaca (real alpaca-py clients, no network):

1. Requests per cycle for 10 and 50 symbols, counted at the fake: what the daemon's
   cycle asks the broker for — ``latest`` + ``history`` (data) and ``account`` +
   ``positions`` + ``open_orders`` (trading). Baseline: the same data fetched one symbol
   at a time (2 data requests per symbol), the naive use of the SDK. Target: data
   requests per cycle do not grow with the number of symbols.
2. The latency the wrapper adds over a bare SDK call (``GET /v2/account``): median of
   ``--runs`` calls each, interleaved, of ``await AlpacaBroker.account()`` (rate limiter,
   worker thread, deadline, error classification, mapping) and of a plain
   ``TradingClient.get_account()`` called directly. overhead = wrapper − bare.

    python bench/broker.py [--runs 200] [--cycles 3]

The last line is JSON for 50 symbols:
``{"bench":"broker","symbols":50,"data_requests_per_cycle":…,"requests_per_cycle":…,
"wrapper_overhead_ms":…,"bare_ms":…,"ratio":…}``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from perun_tui.brokers.alpaca import AlpacaBroker  # noqa: E402
from perun_tui.brokers.ratelimit import TokenBucket  # noqa: E402
from perun_tui.config import Settings  # noqa: E402
from tests.fakes.alpaca_server import DEFAULT_PRICES, FakeAlpaca  # noqa: E402

KEY, SECRET = "PKTEST", "s3cret"
TIMEFRAME_MIN, HISTORY_BARS = 15, 60  # the defaults: trading.frequency_minutes, history_bars


def symbols_for(n: int) -> dict[str, float]:
    prices = dict(list(DEFAULT_PRICES.items())[:n])
    for i in range(n - len(prices)):
        prices[f"Z{i:03d}"] = round(20 + 7.3 * i, 2)
    return prices


def settings_for(srv: FakeAlpaca, symbols: list[str]) -> Settings:
    return Settings.model_validate(
        {
            "trading": {"mode": "paper", "symbols": symbols},
            "alpaca": {
                "trading_url": srv.trading_url,
                "data_url": srv.data_url,
                "stream_url": srv.stream_url,
                "key_id": KEY,
                "secret_key": SECRET,
                # the bench measures the wrapper, not the limiter's waiting
                "max_requests_per_minute": 10_000,
            },
        }
    )


async def one_cycle(broker: AlpacaBroker, symbols: list[str]) -> None:
    """What the daemon's cycle asks of the broker (step 3, fetch)."""
    quotes, history = await asyncio.gather(
        broker.latest(symbols), broker.history(symbols, TIMEFRAME_MIN, HISTORY_BARS)
    )
    await asyncio.gather(broker.account(), broker.positions(), broker.open_orders())
    assert len(quotes) == len(symbols), "every symbol should have a quote"
    assert all(len(v) == HISTORY_BARS for v in history.values()), "short history"


async def requests_per_cycle(n: int, cycles: int) -> dict[str, Any]:
    prices = symbols_for(n)
    symbols = list(prices)
    with FakeAlpaca(KEY, SECRET, prices=prices) as srv:
        broker = AlpacaBroker(settings_for(srv, symbols), stream=False)
        await one_cycle(broker, symbols)  # warm: imports, connections
        before_all = len(srv.request_log)
        before_data = len(srv.requests("GET", "/v2/stocks/*"))
        started = time.perf_counter()
        for _ in range(cycles):
            await one_cycle(broker, symbols)
        elapsed = (time.perf_counter() - started) / cycles
        total = (len(srv.request_log) - before_all) / cycles
        data = (len(srv.requests("GET", "/v2/stocks/*")) - before_data) / cycles
        await broker.close()
    return {
        "symbols": n,
        "requests_per_cycle": total,
        "data_requests_per_cycle": data,
        "baseline_requests_per_cycle": 2 * n + 3,  # one latest + one history per symbol
        "baseline_data_requests_per_cycle": 2 * n,
        "cycle_fetch_ms": elapsed * 1000,
    }


@contextlib.contextmanager
def fake_process() -> Iterator[str]:
    """FakeAlpaca in its own process, so its threads do not share our GIL (as a real
    server would not); yields the trading URL."""
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.alpaca_server", "--port", str(ports[0]),
         "--stream-port", str(ports[1]), "--walk-interval", "3600"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("trading "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(5)


async def overhead(runs: int) -> dict[str, float]:
    from alpaca.trading.client import TradingClient

    with fake_process() as url:
        settings = Settings.model_validate(
            {
                "trading": {"mode": "paper", "symbols": ["AAPL"]},
                "alpaca": {"trading_url": url, "key_id": KEY, "secret_key": SECRET},
            }
        )
        broker = AlpacaBroker(settings, stream=False)
        # The limiter's token accounting stays in the measurement; its deliberate waiting
        # (pacing to the request budget) does not.
        broker.limiter = TokenBucket(10**7, burst=10**6)
        bare = TradingClient(KEY, SECRET, paper=True, url_override=url)
        bare._retry = 0  # a single attempt, as in the wrapper; otherwise the SDK as shipped
        hardened = broker.trading_client  # the same SDK client the wrapper uses, called directly
        for _ in range(20):  # warm: connection pools, imports, thread pool
            bare.get_account()
            hardened.get_account()
            await broker.account()
        bare_s: list[float] = []
        hardened_s: list[float] = []
        wrapped_s: list[float] = []
        for _ in range(runs):
            t0 = time.perf_counter()
            bare.get_account()
            t1 = time.perf_counter()
            hardened.get_account()
            t2 = time.perf_counter()
            await broker.account()
            t3 = time.perf_counter()
            bare_s.append(t1 - t0)
            hardened_s.append(t2 - t1)
            wrapped_s.append(t3 - t2)
        await broker.close()
    bare_ms = statistics.median(bare_s) * 1000
    hardened_ms = statistics.median(hardened_s) * 1000
    wrapped_ms = statistics.median(wrapped_s) * 1000
    return {
        "bare_ms": bare_ms,
        "hardened_ms": hardened_ms,
        "wrapped_ms": wrapped_ms,
        "wrapper_overhead_ms": wrapped_ms - bare_ms,
        "ratio": wrapped_ms / bare_ms if bare_ms else float("nan"),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="calls per side for latency")
    parser.add_argument("--cycles", type=int, default=3, help="cycles per universe size")
    args = parser.parse_args()

    sizes = [await requests_per_cycle(n, args.cycles) for n in (10, 50)]
    print("requests per cycle (latest + history + account + positions + open orders)")
    print(f"{'symbols':>8} {'data':>6} {'total':>6} {'baseline data':>14} "
          f"{'baseline total':>15} {'fetch ms':>9}")
    for row in sizes:
        print(
            f"{row['symbols']:>8} {row['data_requests_per_cycle']:>6g} "
            f"{row['requests_per_cycle']:>6g} {row['baseline_data_requests_per_cycle']:>14} "
            f"{row['baseline_requests_per_cycle']:>15} {row['cycle_fetch_ms']:>9.1f}"
        )
    flat = sizes[0]["data_requests_per_cycle"] == sizes[-1]["data_requests_per_cycle"]
    print(f"data requests independent of the number of symbols: {'yes' if flat else 'NO'}")

    lat = await overhead(args.runs)
    print(f"\nGET /v2/account, median of {args.runs} (interleaved)")
    print(f"  bare SDK call                    {lat['bare_ms']:.3f} ms   (baseline)")
    print(f"  same, with the session timeout   {lat['hardened_ms']:.3f} ms")
    print(f"  AlpacaBroker.account()           {lat['wrapped_ms']:.3f} ms")
    print(f"  wrapper overhead                 {lat['wrapper_overhead_ms']:.3f} ms   "
          f"(ratio {lat['ratio']:.2f})")

    last = sizes[-1]
    print(
        json.dumps(
            {
                "bench": "broker",
                "symbols": last["symbols"],
                "data_requests_per_cycle": last["data_requests_per_cycle"],
                "requests_per_cycle": last["requests_per_cycle"],
                "wrapper_overhead_ms": round(lat["wrapper_overhead_ms"], 3),
                "bare_ms": round(lat["bare_ms"], 3),
                "ratio": round(lat["ratio"], 3),
            }
        )
    )


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.run(main())
