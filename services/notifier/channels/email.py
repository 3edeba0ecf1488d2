"""Email channel: one multipart (text + HTML) message per delivery over SMTP (aiosmtplib).

``Message-ID`` is derived from the delivery id, so every retry of a delivery carries the same
id and a mail system (or a person) can recognise a repeat.
"""

from __future__ import annotations

import re
import ssl
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Literal

import aiosmtplib

from services.common.exceptions import DeliveryError
from services.common.logs import mask_email
from services.notifier.channels.base import ChannelName, Message
from services.notifier.channels.registry import Built, ChannelSpec

SMTP_TIMEOUT_S = 30.0
_ADDRESS = re.compile(r"[^\s<>@,;:'\"]+@[^\s<>@,;:'\"]+")


def _scrub(text: str) -> str:
    """Server replies often quote the address; mask it before it reaches logs and the DLQ."""
    return _ADDRESS.sub(lambda m: mask_email(m.group(0)), text)


def message_id(delivery_id: str, sender: str) -> str:
    domain = sender.rpartition("@")[2] or "churnwatch.local"
    return f"<{delivery_id}@{domain}>"


def build_email(message: Message, *, sender: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = formataddr((message.recipient_name, message.to)) if message.recipient_name else message.to
    mail["Subject"] = message.subject
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = message_id(message.delivery_id, sender)
    mail["X-Churnwatch-Delivery"] = message.delivery_id
    mail["X-Churnwatch-Event"] = message.event_id
    mail.set_content(message.text)
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    return mail


class EmailChannel:
    name: ChannelName = "email"

    def __init__(self, *, host: str, port: int, security: Literal["none", "starttls", "tls"],
                 sender: str, username: str | None = None, password: str | None = None,
                 timeout_s: float = SMTP_TIMEOUT_S, ca_file: str | None = None):
        self.host = host
        self.port = port
        self.security = security
        self.sender = sender
        self.username = username or None
        self.password = password
        self.timeout_s = timeout_s
        # STARTTLS / implicit TLS always verify the server: with ca_file, against that CA.
        self.tls_context: ssl.SSLContext | None = None
        if security != "none":
            self.tls_context = ssl.create_default_context(cafile=ca_file)

    async def send(self, message: Message) -> None:
        mail = build_email(message, sender=self.sender)
        what = f"the SMTP server {self.host}:{self.port}"
        try:
            await aiosmtplib.send(
                mail, hostname=self.host, port=self.port, timeout=self.timeout_s,
                use_tls=self.security == "tls", start_tls=self.security == "starttls",
                tls_context=self.tls_context,
                username=self.username, password=self.password if self.username else None,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            permanent = all(r.code >= 500 for r in exc.recipients)
            codes = ", ".join(str(r.code) for r in exc.recipients)
            raise DeliveryError(f"{what} refused the recipient ({codes})", permanent=permanent) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            # A configuration problem: keep retrying while CHURNWATCH_SMTP_* is being fixed.
            raise DeliveryError(f"{what} rejected CHURNWATCH_SMTP_USERNAME/PASSWORD "
                                f"({exc.code} {_scrub(exc.message)})") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{what} answered {exc.code} {_scrub(exc.message)}",
                                permanent=exc.code >= 500) from None
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(f"{what}: its TLS certificate is not trusted ({exc.verify_message}); "
                                "set CHURNWATCH_SMTP_CA_FILE to the CA that signed it") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(f"{what} could not be reached: {type(exc).__name__}: "
                                f"{_scrub(str(exc))}") from None

    async def aclose(self) -> None:
        return None


def _build(b: Built) -> EmailChannel | None:
    s = b.settings
    if not s.smtp_host:
        return None
    return EmailChannel(
        host=s.smtp_host, port=s.smtp_port, security=s.smtp_security, sender=s.smtp_from,
        username=s.smtp_username,
        password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        timeout_s=s.smtp_timeout_seconds, ca_file=str(s.smtp_ca_file) if s.smtp_ca_file else None)


SPEC = ChannelSpec(name="email", order=10, audience="staff", push=True, long_form=True,
                   target=lambda person: person.email, mask=mask_email, build=_build,
                   off="CHURNWATCH_SMTP_HOST is not set")
