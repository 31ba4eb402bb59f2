"""Alpaca's endpoints per mode, and the rule that paper and live are never mixed."""

from __future__ import annotations

from urllib.parse import urlsplit

from perun_tui.config import ConfigError

__all__ = [
    "LIVE_TRADING_URL",
    "PAPER_TRADING_URL",
    "check_urls",
    "default_trading_url",
    "sdk_url_override",
]

PAPER_TRADING_URL = "https://paper-api.alpaca.markets"
LIVE_TRADING_URL = "https://api.alpaca.markets"
_HOSTS = {
    "paper": frozenset({urlsplit(PAPER_TRADING_URL).hostname or ""}),
    "live": frozenset({urlsplit(LIVE_TRADING_URL).hostname or ""}),
}


def default_trading_url(mode: str) -> str:
    """Alpaca's own trading endpoint for ``mode`` (what the SDK uses without an override)."""
    return PAPER_TRADING_URL if mode == "paper" else LIVE_TRADING_URL


def check_urls(mode: str, trading_url: str, stream_url: str) -> None:
    """Refuse a configured URL that belongs to the other mode's Alpaca host.

    Paper keys against the live host (or the reverse) fail anyway, but a live-mode Perun
    pointed at the paper host would *look* like it trades real money while it does not —
    and the other way round is worse. Loopback and other hosts are allowed (tests,
    Alpaca-compatible endpoints).
    """
    other = "live" if mode == "paper" else "paper"
    for key, url, schemes in (
        ("trading_url", trading_url, ("http", "https")),
        ("stream_url", stream_url, ("ws", "wss")),
    ):
        if not url:
            continue
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in schemes:
            raise ConfigError(
                f"alpaca.{key} = {url!r}: expected a {' or '.join(schemes)} URL"
            )
        if host in _HOSTS[other]:
            raise ConfigError(
                f"alpaca.{key} = {url!r} is Alpaca's {other.upper()} endpoint but "
                f'trading.mode is "{mode}"; paper and live endpoints are never mixed. '
                f"Leave alpaca.{key} empty to use Alpaca's {mode} endpoint."
            )


def sdk_url_override(url: str) -> str | None:
    """A configured REST URL as the SDK's ``url_override``: the SDK appends ``/v2``
    itself, so a URL given with it is accepted too; "" means Alpaca's own (None)."""
    if not url:
        return None
    url = url.rstrip("/")
    return url[: -len("/v2")] if url.endswith("/v2") else url
