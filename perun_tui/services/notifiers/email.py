"""Email notifier: SMTP with STARTTLS (certificate verified), one message per notification.

``smtplib`` is synchronous, so each send runs in a worker thread with the socket timeout
set; the notification service delivers remote notifiers from a background queue, so a
slow mail server never holds up a cycle.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Iterable, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from perun_tui.events import Notification
from perun_tui.services.notification import Category


class EmailError(Exception):
    """The mail server refused the message or could not be reached."""


def build_message(
    notification: Notification, *, sender: str, recipients: Sequence[str], mode: str
) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"[Perun {mode}] {notification.title}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="perun.local")
    tags = f"\n\ntags: {', '.join(notification.tags)}" if notification.tags else ""
    msg.set_content(
        f"{notification.title} ({notification.level.value})\n\n{notification.message}{tags}\n"
        "\n-- \nsent by Perun; configure in perun.toml [notify]\n"
    )
    return msg


class EmailNotifier:
    remote = True

    def __init__(
        self,
        *,
        host: str,
        port: int = 587,
        sender: str,
        recipients: Sequence[str],
        user: str = "",
        password: str = "",
        starttls: bool = True,
        cafile: str | None = None,
        timeout_s: float = 10.0,
        events: Iterable[str] | None = None,
        mode: str = "sim",
    ) -> None:
        if not recipients:
            raise ValueError("email notifier needs at least one recipient (notify.email_to)")
        self.host = host
        self.port = port
        self.sender = sender or f"perun@{host}"
        self.recipients = list(recipients)
        self.user = user
        self._password = password
        self.starttls = starttls
        self.cafile = cafile
        self.timeout_s = timeout_s
        self.events = None if events is None else frozenset(Category(e) for e in events)
        self.mode = mode
        self.name = f"email ({host}:{port})"

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.cafile:
            context.load_verify_locations(cafile=self.cafile)
        return context

    def _send_blocking(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                smtp.ehlo()
                if self.starttls:
                    if not smtp.has_extn("starttls"):
                        raise EmailError(
                            f"{self.host}:{self.port} does not offer STARTTLS; set "
                            "notify.smtp_starttls = false only for a trusted local relay"
                        )
                    smtp.starttls(context=self._tls_context())
                    smtp.ehlo()
                if self.user:
                    smtp.login(self.user, self._password)
                smtp.send_message(message)
        except EmailError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise EmailError(
                f"{self.host}: login refused for {self.user!r} (check notify.smtp_user and "
                "PERUN_NOTIFY__SMTP_PASSWORD)"
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise EmailError(f"{self.host}:{self.port}: {type(exc).__name__}: {exc}") from exc

    async def send(self, notification: Notification) -> None:
        message = build_message(
            notification, sender=self.sender, recipients=self.recipients, mode=self.mode
        )
        await asyncio.to_thread(self._send_blocking, message)
