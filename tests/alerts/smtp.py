"""A real SMTP server for the alert tests: aiosmtpd on 127.0.0.1 with STARTTLS (a self-signed
certificate made here with `cryptography`), AUTH required after TLS, and the mails it accepted."""

from __future__ import annotations

import datetime as dt
import email
import ipaddress
import ssl
import threading
from email.message import Message
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USER, PASSWORD = "alerts", "s3cret-pw"


def self_signed(folder: Path, stem: str = "smtp") -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class Mailbox:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mails: list[tuple[list[str], Message]] = []
        self.logins: list[str] = []
        self.tls_sessions = 0

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        message = email.message_from_bytes(envelope.content)
        with self.lock:
            self.mails.append((list(envelope.rcpt_tos), message))
            if session.ssl:
                self.tls_sessions += 1
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        if ok:
            with self.lock:
                self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    def received(self) -> list[tuple[list[str], Message]]:
        with self.lock:
            return list(self.mails)


class SmtpServer:
    """aiosmtpd with STARTTLS required and AUTH (after TLS); `start()`/`stop()` on one port."""

    def __init__(self, folder: Path, port: int):
        self.cert, self.key = self_signed(folder, f"smtp-{port}")
        self.port = port
        self.box = Mailbox()
        self.controller: Controller | None = None

    def start(self) -> SmtpServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        self.controller = Controller(
            self.box,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=True,
            authenticator=self.box.authenticate,
            auth_require_tls=True,
            auth_exclude_mechanism=["CRAM-MD5"],
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def settings(self, **extra) -> dict:
        """The spec's `notifications.smtp` for this server."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "username": USER,
            "password": PASSWORD,
            "starttls": True,
            "ca_file": str(self.cert),
            "sender": "edge@example.test",
            "timeout": 5,
            **extra,
        }
