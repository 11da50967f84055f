"""The `nats` destination's credentials and TLS, against nats-servers (with JetStream) that the tests
start on free ports: user/password, token, TLS with our own CA, and TLS that verifies this box's
client certificate. Wrong credentials are one line, and never the records' fault."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from engine.connectors.nats_upstream import NatsConnector, NatsTarget
from engine.context import RunContext
from engine.outbox.target import DeliveryError
from tests.net import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.services


def _binary() -> str:
    path = shutil.which("nats-server")
    if path is None:
        message = "nats-server is not installed"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message} and REQUIRE_SERVICES=1")
        pytest.skip(message)
    return path


class Server:
    def __init__(self, tmp: Path, *args: str):
        import socket

        self.port = free_port()
        store = tmp / f"js-{self.port}"
        self.proc = subprocess.Popen(
            [_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            assert self.proc.poll() is None, "nats-server exited"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(up, 20, what="nats-server listening")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server(tmp_path):
    started: list[Server] = []

    def start(*args: str) -> Server:
        s = Server(tmp_path, *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def records(n: int) -> pa.Table:
    return pa.table({"tag": [f"t{i % 3}" for i in range(n)], "value": [float(i) for i in range(n)],
                     "_key": [f"box/p/up/{i}" for i in range(n)]})  # fmt: skip


def target(tmp_path, url: str, **config: Any) -> NatsTarget:
    cfg = {"servers": [url], "subject": "auth.{tag}", "stream": "AUTH", "create_stream": True,
           "connect_timeout": 2, "ack_timeout": 3, **config}  # fmt: skip
    return NatsConnector.make_target(cfg, RunContext(pipeline="p", data_dir=tmp_path), "up")


def deliver(t: NatsTarget, n: int = 10) -> None:
    try:
        t.deliver(records(n))
    finally:
        t.close()


def test_user_password(server, tmp_path):
    s = server("--user", "box7", "--pass", "s3cret-pw")
    url = f"nats://127.0.0.1:{s.port}"
    t = target(tmp_path, url, user="box7", password="s3cret-pw")
    deliver(t)
    assert t.acked == 10
    bad = target(tmp_path, url, user="box7", password="wrong-pw")
    with pytest.raises(DeliveryError) as err:
        bad.open()
    bad.close()
    text = str(err.value)
    assert not err.value.retryable and "\n" not in text
    assert "check user/password, token or creds_file" in text and "wrong-pw" not in text
    with pytest.raises(DeliveryError) as err:  # inside deliver: retried, the records are not at fault
        deliver(target(tmp_path, url, user="box7", password="wrong-pw"))
    assert err.value.retryable


def test_token(server, tmp_path):
    s = server("--auth", "tok-123456")
    url = f"nats://127.0.0.1:{s.port}"
    t = target(tmp_path, url, token="tok-123456")
    deliver(t)
    assert t.acked == 10
    with pytest.raises(DeliveryError, match="check user/password") as err:
        target(tmp_path, url, token="nope").open()
    assert "nope" not in str(err.value)


# --- TLS ----------------------------------------------------------------------------------------


def _pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject: str, key, issuer_key, issuer: str, *, ca: bool = False, server: bool = False):
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        elif not ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    out: dict[str, Path] = {}

    def write(stem: str, key, certificate) -> None:
        out[stem + "_key"] = folder / f"{stem}-key.pem"
        out[stem + "_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        out[stem] = folder / f"{stem}.pem"
        out[stem].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    write("ca", ca_key, cert("test CA", ca_key, ca_key, "test CA", ca=True))
    server_key = ec.generate_private_key(ec.SECP256R1())
    write("server", server_key, cert("127.0.0.1", server_key, ca_key, "test CA", server=True))
    client_key = ec.generate_private_key(ec.SECP256R1())
    write("client", client_key, cert("box7", client_key, ca_key, "test CA"))
    return out


def test_tls_with_our_ca(server, tmp_path):
    pki = _pki(tmp_path)
    s = server("--tls", "--tlscert", str(pki["server"]), "--tlskey", str(pki["server_key"]))
    url = f"tls://127.0.0.1:{s.port}"
    t = target(tmp_path, url, tls={"ca_file": str(pki["ca"])})
    deliver(t)
    assert t.acked == 10
    # without our CA the server's certificate is not trusted: one line, when connecting
    with pytest.raises(DeliveryError, match="certificate") as err:
        target(tmp_path, url).open()
    assert "\n" not in str(err.value)


def test_tls_client_certificate(server, tmp_path):
    pki = _pki(tmp_path)
    s = server("--tlsverify", "--tlscert", str(pki["server"]), "--tlskey", str(pki["server_key"]),
               "--tlscacert", str(pki["ca"]))  # fmt: skip
    url = f"tls://127.0.0.1:{s.port}"
    t = target(tmp_path, url, tls={"ca_file": str(pki["ca"]), "cert_file": str(pki["client"]),
                                   "key_file": str(pki["client_key"])})  # fmt: skip
    deliver(t)
    assert t.acked == 10
    with pytest.raises(DeliveryError):  # no client certificate: the server hangs up
        target(tmp_path, url, tls={"ca_file": str(pki["ca"])}).open()


def test_tls_files_missing_is_one_line(tmp_path):
    t = target(tmp_path, f"tls://127.0.0.1:{free_port()}", tls={"ca_file": "nowhere/ca.pem"})
    with pytest.raises(DeliveryError, match="tls: cannot use the certificate files") as err:
        t.open()
    t.close()
    assert not err.value.retryable and "\n" not in str(err.value)
