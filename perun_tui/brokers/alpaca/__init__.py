"""The Alpaca broker (paper and live) over the official ``alpaca-py`` SDK.

alpaca-py is synchronous, has no timeouts at all and retries 429/504 three times, 3 s
apart — a ``POST /v2/orders`` included. This package makes its calls safe to use from the
event loop and impossible to double:

* ``broker``: ``AlpacaBroker`` — every SDK call in a worker thread under a deadline, the
  SDK's retries off, a client-side rate limit, batched market data (one snapshots request
  and one bars request per cycle, whatever the number of symbols);
* ``errors``: every failure classified (final / retryable / unknown outcome);
* ``stream``: order updates from ``TradingStream``, with open orders re-read over REST
  after every (re)connection since the stream does not replay, and outages announced;
* ``market_clock``: Alpaca's clock and calendar against the local NYSE calendar;
* ``mapping``, ``history``, ``endpoints``: SDK models to ours, bar requests, URLs;
* ``doctor``: what ``perun doctor`` checks.

The SDK is imported lazily (it costs ~0.45 s), when the broker is started or first used.
"""

from __future__ import annotations

from perun_tui.brokers.alpaca.broker import AlpacaBroker, BrokerStats, check_keys
from perun_tui.brokers.alpaca.endpoints import check_urls
from perun_tui.brokers.alpaca.errors import CallKind, classify_error
from perun_tui.brokers.alpaca.history import history_start
from perun_tui.brokers.alpaca.mapping import alpaca_status, order_from_sdk, quote_from_snapshot

__all__ = [
    "AlpacaBroker",
    "BrokerStats",
    "CallKind",
    "alpaca_status",
    "check_keys",
    "check_urls",
    "classify_error",
    "history_start",
    "order_from_sdk",
    "quote_from_snapshot",
]
