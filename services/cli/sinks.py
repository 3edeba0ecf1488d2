"""Local stand-ins for the notification receivers, used by the embedded stack (and tests).

- an SMTP server (aiosmtpd) that stores each mail as ``out_dir/mail/<timestamp>-<n>.eml`` and
  appends a summary line to ``out_dir/mail.log`` (any AUTH credentials are accepted);
- an HTTP SMS gateway at ``POST /sms`` accepting the ``json`` style (``{"from","to","text"}``)
  and the ``form`` style (``From``/``To``/``Body``), appending NDJSON to ``out_dir/sms.ndjson``;
- a webhook receiver at ``POST /webhook`` appending NDJSON (headers and body) to
  ``out_dir/webhooks.ndjson``.

The SMS and webhook routes are served on both HTTP ports (one server when the ports are equal).

DEVELOPMENT ONLY. The outbox holds every notification in clear: customers' names, staff
contacts, alert texts. It is for `make run` on a developer's machine; production points
CHURNWATCH_SMTP_HOST / CHURNWATCH_SMS_GATEWAY_URL at real services and runs no sinks. What it
stores is kept CHURNWATCH_OUTBOX_RETENTION_DAYS (7 by default; :func:`prune_outbox`, at start
and hourly), and erasure does not reach it (docs/privacy.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from datetime import datetime
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from services.common.logs import mask_email, mask_phone
from services.common.runtime import stop_on_signals
from services.common.timefmt import utc_now

logger = logging.getLogger(__name__)

MAX_HTTP_BODY = 1024 * 1024
DEV_ONLY = ("DEVELOPMENT ONLY: these sinks store every notification in clear (names, contacts, "
            "alert texts); never run them in production")
PRUNE_EVERY_S = 3600.0


def _now() -> str:
    return utc_now("milliseconds")


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
        logger.info("mail to %s stored as %s (development sink)", rcpts, path.name)
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
        logger.info("SMS (%s style) to %s stored (development sink)", style, mask_phone(to))
        return web.json_response({"status": "queued"}, status=201 if style == "form" else 200)

    async def webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        record = {"at": _now(), "headers": dict(request.headers),
                  "body": raw.decode("utf-8", errors="replace")}
        _append_line(self.webhook_path, record)
        logger.info("webhook delivery %s stored (development sink)",
                    request.headers.get("Churnwatch-Delivery", "(no delivery id)"))
        return web.json_response({"ok": True})


class Sinks:
    """All three receivers; :meth:`start` returns the bound ports (0 = any free port)."""

    def __init__(self, *, out_dir: Path, host: str = "127.0.0.1", smtp_port: int = 0,
                 sms_port: int = 0, webhook_port: int = 0, retention_days: float = 7.0):
        self.out_dir = Path(out_dir)
        self.retention_days = retention_days
        self.host = host
        self.ports = {"smtp": smtp_port, "sms": sms_port, "webhook": webhook_port}
        self.mail = MailSink(self.out_dir)
        self.http = HttpSinks(self.out_dir)
        self._smtp_server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._pruner: asyncio.Task[None] | None = None

    async def _prune_loop(self) -> None:
        while True:
            try:
                removed = await asyncio.to_thread(prune_outbox, self.out_dir,
                                                  self.retention_days * 86_400)
                if removed:
                    logger.info("outbox: %d item(s) older than %g days deleted", removed,
                                self.retention_days)
            except OSError as exc:
                logger.warning("cannot prune the outbox: %s", exc)
            await asyncio.sleep(PRUNE_EVERY_S)

    async def start(self) -> dict[str, int]:
        (self.out_dir / "mail").mkdir(parents=True, exist_ok=True)
        self._pruner = asyncio.create_task(self._prune_loop(), name="outbox-prune")
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
        logger.warning("%s. Sinks on %s: SMTP %d, SMS http://%s:%d/sms, webhooks "
                       "http://%s:%d/webhook; writing to %s (kept %g days)", DEV_ONLY, self.host,
                       self.ports["smtp"], self.host, self.ports["sms"], self.host,
                       self.ports["webhook"], self.out_dir, self.retention_days)
        return dict(self.ports)

    async def stop(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            self._pruner = None
        if self._smtp_server is not None:
            self._smtp_server.close()
            await self._smtp_server.wait_closed()
            self._smtp_server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _line_time(line: str) -> float | None:
    """When an outbox line was written: the ``at`` of an NDJSON record, or the leading
    timestamp of a ``mail.log`` line; None when unreadable (kept)."""
    text = line.strip()
    try:
        stamp = json.loads(text).get("at") if text.startswith("{") else text.split(" ", 1)[0]
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def prune_outbox(out_dir: Path, max_age_s: float, *, now: float | None = None) -> int:
    """Delete what the sinks stored more than ``max_age_s`` ago: ``mail/*.eml`` files by their
    modification time, lines of ``mail.log``, ``sms.ndjson`` and ``webhooks.ndjson`` by their
    own timestamps. Returns how many files and lines went."""
    cutoff = (time.time() if now is None else now) - max_age_s
    removed = 0
    for path in sorted((out_dir / "mail").glob("*.eml")):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    for name in ("mail.log", "sms.ndjson", "webhooks.ndjson"):
        path = out_dir / name
        if not path.exists():
            continue
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [ln for ln in lines if (t := _line_time(ln)) is None or t >= cutoff]
        if len(kept) != len(lines):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            tmp.replace(path)
            removed += len(lines) - len(kept)
    return removed


def main(*, smtp_port: int, sms_port: int, webhook_port: int, out_dir: Path,
         host: str = "127.0.0.1", retention_days: float = 7.0) -> int:
    """Run the sinks until SIGTERM/SIGINT; 0 on a clean stop, 1 when a port cannot be bound."""

    async def _run() -> int:
        stop = asyncio.Event()
        stop_on_signals(asyncio.get_running_loop(), stop.set, (signal.SIGTERM, signal.SIGINT))
        sinks = Sinks(out_dir=out_dir, host=host, smtp_port=smtp_port, sms_port=sms_port,
                      webhook_port=webhook_port, retention_days=retention_days)
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
