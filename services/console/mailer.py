"""The sign-in mail: one plain-text + HTML message over the configured SMTP server
(``CHURNWATCH_SMTP_*``, the same server the notifier uses; under ``churnwatch up`` the local
sink that writes ``$CHURNWATCH_HOME/outbox/mail/``)."""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

import aiosmtplib

from services.common.settings import Settings


class MailUnavailable(Exception):
    """No SMTP server is configured, or it did not take the message."""


async def send_sign_in_link(settings: Settings, *, to: str, name: str | None, link: str,
                            subject: str, text: str, html: str) -> None:
    if not settings.smtp_host:
        raise MailUnavailable("no SMTP server is configured (CHURNWATCH_SMTP_HOST)")
    mail = EmailMessage()
    mail["From"] = settings.smtp_from
    mail["To"] = formataddr((name, to)) if name else to
    mail["Subject"] = subject
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = make_msgid(domain=settings.smtp_from.rpartition("@")[2] or None)
    mail.set_content(text)
    mail.add_alternative(html, subtype="html")
    context = None
    if settings.smtp_security != "none":
        cafile = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
        context = ssl.create_default_context(cafile=cafile)
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    try:
        await aiosmtplib.send(mail, hostname=settings.smtp_host, port=settings.smtp_port,
                              timeout=settings.smtp_timeout_seconds,
                              use_tls=settings.smtp_security == "tls",
                              start_tls=settings.smtp_security == "starttls",
                              tls_context=context, username=settings.smtp_username,
                              password=password if settings.smtp_username else None)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise MailUnavailable(f"the SMTP server {settings.smtp_host}:{settings.smtp_port} did "
                              f"not take the message ({type(exc).__name__})") from None
