"""``perun doctor`` for Alpaca: keys, account, clock, calendar, data feed, stream.

Each check says what to do when it is not OK, and never shows a secret (keys masked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perun_tui.brokers.alpaca.history import NY
from perun_tui.brokers.base import BrokerError, BrokerRejected
from perun_tui.config import ConfigError

if TYPE_CHECKING:
    from perun_tui.brokers.alpaca.broker import AlpacaBroker

__all__ = ["Check", "doctor_checks"]

Check = tuple[str, bool, str]


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{max(seconds, 0):.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


async def doctor_checks(broker: AlpacaBroker) -> list[Check]:
    if not broker.keys_present:
        return [("alpaca keys", False, broker.missing_keys_message())]
    checks: list[Check] = [
        (
            "alpaca keys",
            True,
            f"{broker.mode} keys present: {broker.masked_keys()}; endpoint {broker.endpoint}",
        )
    ]
    account, reachable = await _account(broker)
    checks.append(account)
    if not reachable:
        return checks
    checks.append(await _clock(broker))
    checks.append(await _calendar(broker))
    checks.append(await _data(broker))
    checks.append(await _stream(broker))
    return checks


async def _account(broker: AlpacaBroker) -> tuple[Check, bool]:
    """The account check, and whether Alpaca answered with the account at all."""
    try:
        acct = await broker.account()
    except BrokerRejected as exc:
        if exc.status in (401, 403):
            return ("alpaca account", False, broker.keys_rejected_message(exc)), False
        return ("alpaca account", False, exc.message), False
    except (BrokerError, ConfigError) as exc:
        detail = (
            f"cannot reach {broker.endpoint}: {exc}. Check the network/proxy, or "
            "alpaca.trading_url if you set one."
        )
        return ("alpaca account", False, detail), False
    ok = acct.status == "ACTIVE"
    detail = (
        f"status {acct.status}, equity {acct.equity:,.2f} {acct.currency}, "
        f"cash {acct.cash:,.2f}, buying power {acct.buying_power:,.2f}"
    )
    if not ok:
        detail += " — the account is not ACTIVE: check the Alpaca dashboard"
    elif acct.buying_power <= 0:
        ok = False
        detail += " — no buying power: buys will be refused (fund or reset the account)"
    return ("alpaca account", ok, detail), True


async def _clock(broker: AlpacaBroker) -> Check:
    try:
        clock = await broker.clock()
    except BrokerError as exc:
        return ("alpaca clock", False, f"GET /v2/clock failed: {exc}")
    state = "open" if clock.is_open else "closed"
    when = clock.next_close if clock.is_open else clock.next_open
    label = "closes" if clock.is_open else "opens"
    detail = f"market {state}, {label} {when.astimezone(NY):%a %Y-%m-%d %H:%M} ET"
    note = broker.clock_disagreement()
    if note:
        return (
            "alpaca clock",
            False,
            f"{detail}; {note}. Check the system clock and update pandas-market-calendars; "
            "Perun follows Alpaca meanwhile.",
        )
    return ("alpaca clock", True, f"{detail}; agrees with the local NYSE calendar")


async def _calendar(broker: AlpacaBroker) -> Check:
    notes = await broker.check_calendar()
    if notes is None:
        return (
            "alpaca calendar",
            False,
            "GET /v2/calendar failed: the next sessions could not be compared with the "
            "local NYSE calendar",
        )
    if notes:
        return (
            "alpaca calendar",
            False,
            "; ".join(notes) + ". Update pandas-market-calendars; Perun follows Alpaca's "
            "clock meanwhile.",
        )
    return ("alpaca calendar", True, "the next sessions agree with the local NYSE calendar")


async def _data(broker: AlpacaBroker) -> Check:
    symbols = list(broker.settings.trading.symbols)
    feed = broker.feed
    try:
        quotes = await broker.latest(symbols)
    except BrokerError as exc:
        hint = (
            ' Your data plan may not include SIP: set alpaca.feed = "iex".'
            if feed == "sip" and exc.status == 403
            else " Check alpaca.data_url and the network."
        )
        return ("alpaca data", False, f"feed {feed}: {exc}.{hint}")
    if not quotes:
        return (
            "alpaca data",
            False,
            f"feed {feed}: no data for {', '.join(symbols)} — check the symbols in "
            "trading.symbols",
        )
    missing = [s for s in symbols if s not in quotes]
    newest = max(q.ts for q in quotes.values())
    age = (broker.now() - newest).total_seconds()
    detail = f"feed {feed}: {len(quotes)}/{len(symbols)} symbols, newest data {_age(age)} old"
    if missing:
        detail += f"; no data for {', '.join(missing)} (check trading.symbols)"
    return ("alpaca data", not missing, detail)


async def _stream(broker: AlpacaBroker) -> Check:
    """The running stream's state, or (doctor's own broker) a one-off connection."""
    stream = broker.updates
    where = stream.url or f"Alpaca's {broker.mode} stream"
    what_then = (
        "; until it connects, fills are only seen when Perun looks orders up over REST. "
        "Check alpaca.stream_url, the network/proxy (websockets), and the keys."
    )
    if stream.state not in ("off", "closed"):
        if stream.connected:
            return ("alpaca stream", True, f"order updates connected at {where}")
        why = f" ({stream.last_error})" if stream.last_error else ""
        return ("alpaca stream", False, f"order updates {stream.state} at {where}{why}{what_then}")
    problem = await broker.probe_stream()
    if problem is None:
        return ("alpaca stream", True, f"order updates: connected and authorized at {where}")
    return ("alpaca stream", False, f"order updates: cannot connect to {where}: {problem}"
            f"{what_then}")
