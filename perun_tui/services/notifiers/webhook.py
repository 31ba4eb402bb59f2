"""Webhook notifier: one HTTP POST per notification, as generic JSON or as the payload
Slack, Mattermost or Discord incoming webhooks expect.

A webhook URL is a secret (the path carries the token), so errors name only the host.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from perun_tui.events import Level, Notification
from perun_tui.services.notification import Category, category_of

DISCORD_LIMIT = 2000
SLACK_LIMIT = 3000


class WebhookError(Exception):
    """The receiver refused the POST or could not be reached."""


def detect_style(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host.endswith("slack.com"):
        return "slack"
    if host.endswith(("discord.com", "discordapp.com")) and "/api/webhooks/" in parts.path:
        return "discord"
    if parts.path.startswith("/hooks/"):
        return "mattermost"
    return "generic"


def _heading(notification: Notification, mode: str) -> str:
    marker = {Level.WARNING: "⚠ ", Level.ERROR: "⛔ "}.get(notification.level, "")
    return f"{marker}Perun ({mode}) · {notification.title}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def payload(
    notification: Notification, style: str, *, mode: str, at: datetime | None = None
) -> dict[str, Any]:
    """The JSON body for one notification in the given style."""
    heading = _heading(notification, mode)
    if style == "slack":
        return {"text": _clip(f"*{heading}*\n{notification.message}", SLACK_LIMIT)}
    if style == "mattermost":
        return {
            "text": _clip(f"**{heading}**\n{notification.message}", SLACK_LIMIT),
            "username": "Perun",
        }
    if style == "discord":
        return {
            "content": _clip(f"**{heading}**\n{notification.message}", DISCORD_LIMIT),
            "username": "Perun",
            "allowed_mentions": {"parse": []},
        }
    return {
        "source": "perun",
        "mode": mode,
        "category": category_of(notification).value,
        "title": notification.title,
        "message": notification.message,
        "level": notification.level.value,
        "tags": list(notification.tags),
        "at": (at or datetime.now(UTC)).isoformat(timespec="seconds"),
    }


class WebhookNotifier:
    remote = True

    def __init__(
        self,
        url: str,
        *,
        style: str = "auto",
        events: Iterable[str] | None = None,
        timeout_s: float = 5.0,
        mode: str = "sim",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.style = detect_style(url) if style == "auto" else style
        self.events = None if events is None else frozenset(Category(e) for e in events)
        self.timeout_s = timeout_s
        self.mode = mode
        self.host = urlsplit(url).netloc or "?"
        self.name = f"webhook ({self.style}, {self.host})"
        self._client = client
        self._own_client = client is None

    async def send(self, notification: Notification) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s), follow_redirects=False
            )
        body = payload(notification, self.style, mode=self.mode)
        try:
            response = await self._client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise WebhookError(f"no answer from {self.host} within {self.timeout_s:g}s") from exc
        except httpx.HTTPError as exc:
            raise WebhookError(f"cannot reach {self.host}: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise WebhookError(f"{self.host} answered HTTP {response.status_code}")

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
        self._client = None
