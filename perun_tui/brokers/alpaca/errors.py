"""Everything alpaca-py (or requests under it) raises, as a classified ``BrokerError``.

* 403/422 → ``BrokerRejected`` with Alpaca's own message (401 says which keys to check);
* 429 → ``BrokerRetryable`` with the wait Alpaca asked for (``Retry-After`` or
  ``X-RateLimit-Reset``);
* "connection refused" and other failures before a byte was sent → ``BrokerRetryable``;
* on an order submission (``kind="write"``) a timeout, a 5xx or a connection dropped after
  sending → ``BrokerUnknownOutcome`` (resolve with ``order_by_client_id``); on reads and
  cancels the same failures are retryable, since repeating them is safe.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from typing import Any, Literal

from perun_tui.brokers.base import (
    BrokerError,
    BrokerRejected,
    BrokerRetryable,
    BrokerUnknownOutcome,
    UnknownSymbol,
)

__all__ = ["DEFAULT_RETRY_AFTER_S", "CallKind", "classify_error", "deadline_error"]

CallKind = Literal["read", "write", "cancel"]
"""``write`` (order submission) is the only call whose outcome can be unknown."""

DEFAULT_RETRY_AFTER_S = 2.0
_MAX_WAIT_S = 60.0
_UNKNOWN_SYMBOL_RE = re.compile(
    r"asset\b.*\bnot found|could not find asset|invalid symbol|unknown symbol"
    r"|symbol\b.*\bnot (found|valid)|no such symbol",
    re.IGNORECASE,
)
_TITLE_RE = re.compile(r"<title>\s*(.*?)\s*</title>", re.IGNORECASE | re.DOTALL)
_MAYBE_PLACED = "; the order may or may not have been placed"


def _api_error_details(exc: Any) -> tuple[int | None, Any, str]:
    """(status, code, message) of an ``APIError`` without trusting its body to be JSON.

    ``APIError.code``/``.message`` parse the body on every access and raise on an HTML
    gateway page or a missing key, so the body is parsed here once, defensively.
    """
    status: int | None = None
    with contextlib.suppress(Exception):
        status = exc.status_code
    text = str(exc)
    code: Any = None
    message = ""
    try:
        data = json.loads(text)
    except (ValueError, TypeError):
        data = None
    if isinstance(data, dict):
        code = data.get("code")
        message = str(data.get("message") or "").strip()
    if not message:
        reason = ""
        with contextlib.suppress(Exception):
            reason = str(exc.response.reason or "")
        match = _TITLE_RE.search(text)
        if match:
            reason = re.sub(r"^\d{3}\s*", "", match.group(1).strip()) or reason
        if status is not None:
            message = f"HTTP {status} {reason}".strip()
        else:
            message = (reason or text.strip()[:200] or "unknown error").strip()
    return status, code, message


def retry_after(exc: Any, now: float | None = None) -> float:
    """Seconds to wait after a 429: ``Retry-After``, else Alpaca's ``X-RateLimit-Reset``
    (an epoch second) less ``now``; clamped to 0.5–60 s."""
    headers: Any = {}
    with contextlib.suppress(Exception):
        headers = exc.response.headers or {}
    with contextlib.suppress(TypeError, ValueError):
        value = headers.get("Retry-After")
        if value is not None:
            return max(0.5, min(_MAX_WAIT_S, float(value)))
    with contextlib.suppress(TypeError, ValueError):
        reset = headers.get("X-RateLimit-Reset")
        if reset is not None:
            at = time.time() if now is None else now
            return max(0.5, min(_MAX_WAIT_S, float(reset) - at))
    return DEFAULT_RETRY_AFTER_S


def _never_sent(exc: BaseException) -> bool:
    """True when requests failed before any byte of the request reached the server."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    if isinstance(exc, requests.exceptions.ProxyError):
        return True
    inner: Any = exc.args[0] if exc.args else None
    if isinstance(inner, MaxRetryError):
        inner = inner.reason
    return isinstance(inner, NewConnectionError | ConnectTimeoutError)


def short(exc: BaseException) -> str:
    """A one-line reason: requests nests urllib3 reprs, the innermost part is readable."""
    text = str(exc).strip() or type(exc).__name__
    match = re.search(r"\[Errno [^\]]+\] ([^'\")]+)", text)
    if match:
        return match.group(1).strip()
    return text if len(text) <= 160 else text[:157] + "..."


def classify_error(
    exc: BaseException, *, op: str, kind: CallKind, timeout_s: float | None = None
) -> BrokerError:
    """Turn anything the SDK (or requests under it) raised into a classified BrokerError."""
    import requests
    from alpaca.common.exceptions import APIError

    if isinstance(exc, BrokerError):
        return exc
    write = kind == "write"
    if isinstance(exc, APIError):
        status, _code, message = _api_error_details(exc)
        if status == 429:
            wait = retry_after(exc)
            return BrokerRetryable(
                f"{op}: Alpaca rate limit hit (429): {message}; waiting {wait:.0f}s",
                status=429,
                retry_after_s=wait,
            )
        if status is None or status >= 500:
            text = f"{op}: Alpaca answered {message}"
            if write:
                return BrokerUnknownOutcome(text + _MAYBE_PLACED, status=status)
            return BrokerRetryable(text, status=status, retry_after_s=DEFAULT_RETRY_AFTER_S)
        if status == 401:
            return BrokerRejected(
                f"{op}: Alpaca refused the API keys (401 {message}); check "
                "APCA_API_KEY_ID / APCA_API_SECRET_KEY",
                status=401,
            )
        if status in (400, 404, 422) and _UNKNOWN_SYMBOL_RE.search(message):
            return UnknownSymbol(message, status=status)
        # 403 (buying power, PDT, not fractionable...), 422 (invalid, duplicate client
        # order id), 404...: final, with Alpaca's own words for the user.
        return BrokerRejected(message, status=status)
    if isinstance(exc, requests.exceptions.RequestException):
        if _never_sent(exc):
            return BrokerRetryable(
                f"{op}: cannot connect to Alpaca ({short(exc)}); nothing was sent",
                retry_after_s=DEFAULT_RETRY_AFTER_S,
            )
        if isinstance(exc, requests.exceptions.Timeout):
            limit = f" within {timeout_s:g}s" if timeout_s else ""
            text = f"{op}: no answer from Alpaca{limit}"
        elif isinstance(exc, requests.exceptions.ConnectionError):
            text = f"{op}: connection to Alpaca dropped after the request was sent"
        elif isinstance(exc, ValueError):
            text = f"{op}: Alpaca's reply could not be read (not JSON)"
        else:
            text = f"{op}: {short(exc)}"
        if write:
            return BrokerUnknownOutcome(text + _MAYBE_PLACED)
        return BrokerRetryable(text, retry_after_s=DEFAULT_RETRY_AFTER_S)
    if isinstance(exc, ValueError | TypeError | KeyError):
        # a reply that does not fit the SDK's models (pydantic ValidationError is a
        # ValueError): the request was answered, so for a submit the order may exist.
        text = f"{op}: Alpaca's reply could not be understood ({short(exc)})"
        if write:
            return BrokerUnknownOutcome(text)
        return BrokerRetryable(text, retry_after_s=DEFAULT_RETRY_AFTER_S)
    if write:
        return BrokerUnknownOutcome(f"{op}: {short(exc)}")
    return BrokerError(f"{op}: {short(exc)}")


def deadline_error(op: str, kind: CallKind, timeout_s: float) -> BrokerError:
    """The error for a call that got no answer within Perun's own deadline."""
    text = f"{op}: no answer from Alpaca within {timeout_s:g}s"
    if kind == "write":
        return BrokerUnknownOutcome(text + _MAYBE_PLACED)
    return BrokerRetryable(text, retry_after_s=DEFAULT_RETRY_AFTER_S)
