"""Secrets never leave the process: one redactor for logs, errors, screens and storage.

Secrets are registered once at start-up (from the validated settings); every text that
goes to a log handler, the database, stdout or the screen can be passed through
``redact``. A logging filter applies it to every record, including exception text, and
tracebacks are rendered without locals.
"""

from __future__ import annotations

import logging
import re

_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
MASK = "[REDACTED]"


def register_secrets(values: list[str]) -> None:
    global _pattern
    for value in values:
        if value and len(value) >= 4:
            _secrets.add(value)
    if _secrets:
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    if _pattern is None or not text:
        return text
    return _pattern.sub(MASK, text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is None:
            return True
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(formatted)
            record.exc_info = None
        return True


def install_logging_filter(logger: logging.Logger | None = None) -> None:
    """Redact every record that reaches ``logger``'s handlers (default: the root's).

    A filter on a logger only sees records logged *on that logger*, not those propagated
    from its children (``perun_tui.brokers.alpaca`` and friends), so the filter goes on
    the handlers — and on ``logging.lastResort``, the stderr handler Python uses while no
    handler is configured at all (the headless runner's case).
    """
    target = logger or logging.getLogger()
    handlers = list(target.handlers)
    if logger is None and logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
