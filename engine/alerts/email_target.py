"""Alert emails: an `UpstreamTarget` (engine/outbox/target.py) that sends each row of the table it
is given as one mail through an SMTP server (smtplib: STARTTLS or implicit TLS, and AUTH).

Rows carry `_key` (the notification's idempotency key), `to` (addresses, comma-separated),
`subject` and `body`. SMTP has no deduplication of its own, so the key goes into the Message-ID
(`<key-digest@aggregator>`, which mail clients and archives deduplicate on) and the target keeps
the keys it has sent in this process: a table sent again after a failure mid-way skips the rows
the server already accepted.

Errors: no connection, a timeout, a 4xx answer or a refused login are retryable (the outbox keeps
the mail; the link shows down with the reason); a 5xx answer to the recipients or the message
itself is the mail's fault, not the link's (non-retryable: quarantined after its tries).
"""

from __future__ import annotations

import contextlib
import hashlib
import smtplib
import socket
import ssl
from collections import OrderedDict
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import pyarrow as pa

from engine.errors import ConnectorError
from engine.outbox.target import KEY_COLUMN, DeliveryError

SENT_KEYS_KEPT = 10_000


def message_id(key: str) -> str:
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@aggregator>"


class EmailTarget:
    """Sends alert mails. `settings`: the spec's `notifications.smtp` (engine/spec/models.py
    `SmtpSettings`, or a dict of it); `secret(name)` resolves `password: {"secret": NAME}`."""

    def __init__(self, settings: Any, name: str = "email", secret: Callable[[str], str | None] | None = None):
        from engine.spec.models import SmtpSettings

        self.settings = (
            settings if isinstance(settings, SmtpSettings) else SmtpSettings.model_validate(settings)
        )
        self.name = name
        self._secret = secret
        self._smtp: smtplib.SMTP | None = None
        self._sent: OrderedDict[str, None] = OrderedDict()
        self.sent = 0  # mails the server accepted (tests, statistics)

    # ---- the contract ------------------------------------------------------------------------
    def open(self) -> None:
        if self._smtp is None:
            self._smtp = self._connect()

    def deliver(self, table: pa.Table, *, historical: bool = False) -> None:
        if table.num_rows == 0:
            return
        for column in (KEY_COLUMN, "to", "subject", "body"):
            if column not in table.column_names:
                raise DeliveryError(f"{self.name}: the mail rows have no '{column}' column", retryable=False)
        self.open()
        for row in table.select([KEY_COLUMN, "to", "subject", "body"]).to_pylist():
            key = row[KEY_COLUMN]
            if key in self._sent:
                continue
            self._send_one(key, row["to"] or "", row["subject"] or "", row["body"] or "", historical)
            self._sent[key] = None
            while len(self._sent) > SENT_KEYS_KEPT:
                self._sent.popitem(last=False)

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(Exception):
                smtp.quit()
            with contextlib.suppress(Exception):
                smtp.close()

    def check(self) -> None:
        try:
            self.close()
            self.open()
        except DeliveryError as exc:
            raise ConnectorError(str(exc)) from None
        finally:
            self.close()

    def describe_target(self) -> str:
        s = self.settings
        return f"smtp://{s.host}:{s.port}" + (" (STARTTLS)" if s.starttls and not s.ssl else "")

    # ---- SMTP --------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"{self.name}: {self.describe_target()}"

    def _tls(self) -> ssl.SSLContext:
        s = self.settings
        context = ssl.create_default_context(cafile=s.ca_file) if s.ca_file else ssl.create_default_context()
        if not s.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _password(self) -> str | None:
        value = self.settings.password
        if isinstance(value, dict):
            name = str(value.get("secret", ""))
            found = self._secret(name) if self._secret else None
            if found is None:
                raise DeliveryError(f"{self._where()}: secret '{name}' is not set", retryable=True)
            return found
        return value

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        smtp: smtplib.SMTP | None = None
        try:
            if s.ssl:
                smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self._tls())
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            smtp.ehlo()
            if s.starttls and not s.ssl:
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(f"{self._where()}: the server offers no STARTTLS", retryable=True)
                smtp.starttls(context=self._tls())
                smtp.ehlo()
            if s.username:
                self._login(smtp, s.username, self._password() or "")
            return smtp
        except DeliveryError:
            self._drop(smtp)
            raise
        except smtplib.SMTPAuthenticationError as exc:
            self._drop(smtp)
            raise DeliveryError(f"{self._where()}: login refused ({_reply(exc)})", retryable=True) from None
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            self._drop(smtp)
            raise DeliveryError(f"{self._where()}: {_reason(exc, s.timeout)}", retryable=True) from None

    @staticmethod
    def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
        """AUTH PLAIN when offered (one try: a refused password is not retried with every other
        mechanism), else whatever smtplib picks."""
        if "plain" in (smtp.esmtp_features.get("auth") or "").lower().split():
            smtp.user, smtp.password = user, password
            smtp.auth("PLAIN", smtp.auth_plain)
        else:
            smtp.login(user, password)

    @staticmethod
    def _drop(smtp: smtplib.SMTP | None) -> None:
        if smtp is not None:
            with contextlib.suppress(Exception):
                smtp.close()

    def _send_one(self, key: str, to: str, subject: str, body: str, historical: bool) -> None:
        recipients = [a.strip() for a in to.split(",") if a.strip()]
        if not recipients:
            raise DeliveryError(f"{self.name}: a mail with no recipient (key {key})", retryable=False)
        msg = EmailMessage()
        msg["From"] = self.settings.sender
        msg["To"] = ", ".join(recipients)
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = message_id(key)
        msg["X-Aggregator-Key"] = key
        if historical:
            msg["X-Aggregator-Historical"] = "true"
        msg.set_content(body)
        assert self._smtp is not None
        try:
            self._smtp.send_message(msg, from_addr=self.settings.sender, to_addrs=recipients)
            self.sent += 1
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(
                f"{self._where()}: every recipient refused ({_refused(exc)})", retryable=False
            ) from None
        except smtplib.SMTPResponseException as exc:
            self.close()
            retryable = exc.smtp_code < 500
            raise DeliveryError(f"{self._where()}: {_reply(exc)}", retryable=retryable) from None
        except (OSError, smtplib.SMTPException) as exc:
            self.close()  # a connection in an unknown state is not reused
            raise DeliveryError(
                f"{self._where()}: {_reason(exc, self.settings.timeout)}", retryable=True
            ) from None


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = (
        exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    )
    return f"{exc.smtp_code} {' '.join(text.split())}"


def _refused(exc: smtplib.SMTPRecipientsRefused) -> str:
    parts = []
    for addr, (code, text) in list(exc.recipients.items())[:3]:
        reply = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
        parts.append(f"{addr}: {code} {' '.join(reply.split())}")
    return "; ".join(parts)


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "the server closed the connection"
    return " ".join(str(exc).split()) or type(exc).__name__
