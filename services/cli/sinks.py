"""Local stand-ins for the notification receivers, used by the embedded stack (and tests).

- an SMTP server (aiosmtpd) that stores each mail as ``out_dir/mail/<timestamp>-<n>.eml`` and
  appends a summary line to ``out_dir/mail.log`` (any AUTH credentials are accepted);
- an HTTP SMS gateway at ``POST /sms`` accepting the ``json`` style (``{"from","to","text"}``)
  and the ``form`` style (``From``/``To``/``Body``), appending NDJSON to ``out_dir/sms.ndjson``;
- a webhook receiver at ``POST /webhook`` appending NDJSON (headers and body) to
  ``out_dir/webhooks.ndjson``.

The SMS and webhook routes are served on both HTTP ports (one server when the ports are equal).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from services.common.logs import mask_email, mask_phone

logger = logging.getLogger(__name__)

MAX_HTTP_BODY = 1024 * 1024


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _append_line(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")


class MailSink:
    """aiosmtpd handler: store every message as an .eml file."""

    def __init__(self, out_dir: Path):
        self.mail_dir = out_dir / "mail"
        self.log_path = out_dir / "mail.log"
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and not content:
            content = envelope.content
        self.count += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.mail_dir / f"{stamp}-{self.count}.eml"
        path.write_bytes(content)
        parsed = message_from_bytes(content, policy=default_policy)
        rcpts = ",".join(mask_email(r) for r in envelope.rcpt_tos)
        line = (f"{_now()} from={envelope.mail_from} to={rcpts} "
                f"subject={str(parsed.get('Subject', '')).strip()!r} "
                f"message_id={parsed.get('Message-ID', '')} file={path.name}\n")
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(line)
        logger.info("mail to %s stored as %s", rcpts, path.name)
        return "250 Message accepted for delivery"


def _accept_any_login(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
    user = auth_data.login.decode(errors="replace") if isinstance(auth_data, LoginPassword) else ""
    logger.info("SMTP AUTH %s as %r accepted", mechanism, user)
    return AuthResult(success=True)


class HttpSinks:
    def __init__(self, out_dir: Path):
        self.sms_path = out_dir / "sms.ndjson"
        self.webhook_path = out_dir / "webhooks.ndjson"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_HTTP_BODY)
        app.router.add_post("/sms", self.sms)
        app.router.add_post("/webhook", self.webhook)
        return app

    async def sms(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"error": "body is not JSON"}, status=400)
            if not isinstance(body, dict):
                return web.json_response({"error": "expected a JSON object"}, status=400)
            style, sender, to, text = "json", body.get("from"), body.get("to"), body.get("text")
        else:
            form = await request.post()
            style, sender, to, text = "form", form.get("From"), form.get("To"), form.get("Body")
        if not isinstance(to, str) or not to or not isinstance(text, str):
            return web.json_response(
                {"error": "need 'to' and 'text' (json) or 'To' and 'Body' (form)"}, status=400)
        record = {
            "at": _now(), "style": style, "from": sender, "to": to, "text": text,
            "authorization": request.headers.get("Authorization", "").split(" ", 1)[0] or None,
            "signature": request.headers.get("X-Churnwatch-Signature"),
            "idempotency_key": request.headers.get("Idempotency-Key"),
        }
        _append_line(self.sms_path, record)
        logger.info("SMS (%s style) to %s stored", style, mask_phone(to))
        return web.json_response({"status": "queued"}, status=201 if style == "form" else 200)

    async def webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        record = {"at": _now(), "headers": dict(request.headers),
                  "body": raw.decode("utf-8", errors="replace")}
        _append_line(self.webhook_path, record)
        logger.info("webhook delivery %s stored",
                    request.headers.get("Churnwatch-Delivery", "(no delivery id)"))
        return web.json_response({"ok": True})


class Sinks:
    """All three receivers; :meth:`start` returns the bound ports (0 = any free port)."""

    def __init__(self, *, out_dir: Path, host: str = "127.0.0.1", smtp_port: int = 0,
                 sms_port: int = 0, webhook_port: int = 0):
        self.out_dir = Path(out_dir)
        self.host = host
        self.ports = {"smtp": smtp_port, "sms": sms_port, "webhook": webhook_port}
        self.mail = MailSink(self.out_dir)
        self.http = HttpSinks(self.out_dir)
        self._smtp_server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> dict[str, int]:
        (self.out_dir / "mail").mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            return SMTP(self.mail, hostname="churnwatch-sinks", loop=loop,
                        authenticator=_accept_any_login, auth_require_tls=False)

        server = await loop.create_server(factory, self.host, self.ports["smtp"])
        assert isinstance(server, asyncio.Server)
        self._smtp_server = server
        self.ports["smtp"] = int(server.sockets[0].getsockname()[1])

        self._runner = web.AppRunner(self.http.app(), access_log=None)
        await self._runner.setup()
        bound: dict[int, int] = {}
        for name in ("sms", "webhook"):
            wanted = self.ports[name]
            if wanted in bound:
                self.ports[name] = bound[wanted]
                continue
            site = web.TCPSite(self._runner, self.host, wanted)
            await site.start()
            listening = site._server  # noqa: SLF001 - aiohttp has no public accessor for the port
            sockets = getattr(listening, "sockets", None)
            port = int(sockets[0].getsockname()[1]) if sockets else wanted
            bound[wanted] = port
            self.ports[name] = port
        logger.info("sinks on %s: SMTP %d, SMS http://%s:%d/sms, webhooks http://%s:%d/webhook; "
                    "writing to %s", self.host, self.ports["smtp"], self.host, self.ports["sms"],
                    self.host, self.ports["webhook"], self.out_dir)
        return dict(self.ports)

    async def stop(self) -> None:
        if self._smtp_server is not None:
            self._smtp_server.close()
            await self._smtp_server.wait_closed()
            self._smtp_server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def main(*, smtp_port: int, sms_port: int, webhook_port: int, out_dir: Path,
         host: str = "127.0.0.1") -> int:
    """Run the sinks until SIGTERM/SIGINT; 0 on a clean stop, 1 when a port cannot be bound."""

    async def _run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sinks = Sinks(out_dir=out_dir, host=host, smtp_port=smtp_port, sms_port=sms_port,
                      webhook_port=webhook_port)
        try:
            await sinks.start()
        except OSError as exc:
            logger.error("cannot start the sinks on %s: %s; pick other ports", host, exc)
            await sinks.stop()
            return 1
        try:
            await stop.wait()
        finally:
            await sinks.stop()
        logger.info("sinks stopped")
        return 0

    return asyncio.run(_run())
