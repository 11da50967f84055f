"""Issue 14, item 7: HTTPS for the API (a self-signed certificate made on request, or the settings'
certificate and key), its fingerprint said at start, and no plain HTTP beyond loopback unless
--insecure says so."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys

import httpx
import pytest

from app.tls import TlsRefused, choose, fingerprint, make_self_signed
from engine.datadir import self_signed_files
from tests.service.conftest import ROOT, cli, spawn
from tests.service.http_server import service_env
from tests.waiting import wait_for


def _https_ready(service, context: ssl.SSLContext) -> str:
    from engine.service.lock import owner

    def ready():
        if service.proc.poll() is not None:
            raise AssertionError(f"serve exited {service.proc.returncode}:\n{service.output()}")
        found = owner(service.data_dir)
        if not found or not found[1]:
            return None
        try:
            if httpx.get(found[1] + "/health", timeout=5, verify=context).status_code == 200:
                return found[1]
        except httpx.TransportError:
            return None
        return None

    return wait_for(ready, 60, what="GET /health over https")


def test_serve_with_a_self_signed_certificate(tmp_path, config_dir, monkeypatch):
    env = service_env(config_dir)
    service = spawn(tmp_path / "data", tmp_path / "serve.out", "--tls", "self-signed", env=env)
    try:
        cert, key = self_signed_files()  # the same config folder as the service's
        wait_for(lambda: cert.is_file() and key.is_file(), 60, what="the certificate to be written")
        context = ssl.create_default_context(cafile=str(cert))
        url = _https_ready(service, context)
        assert url.startswith("https://127.0.0.1:")
        for path in (cert, key):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        # the fingerprint a client compares is said at start
        said = wait_for(
            lambda: "SHA-256 fingerprint" in service.output() and service.output(), 30, what="fingerprint"
        )
        assert fingerprint(cert.read_bytes()) in said
        # a client that does not trust the certificate is refused; plain http gets no API
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health", timeout=5, verify=ssl.create_default_context())
        with pytest.raises(httpx.TransportError):
            httpx.get(url.replace("https:", "http:") + "/health", timeout=5)
        # the CLI next to the service talks https to it and trusts the certificate of its config folder
        done = cli("runs", "--json", home=service.data_dir, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().startswith("[")
        # another machine: no certificate of its own; it trusts the copied certificate as its CA file
        from engine.api.remote import RemoteEngine
        from engine.api.remote.client import ServiceUnavailable
        from engine.secrets import SecretStore
        from engine.service.token import TOKEN_SECRET

        api_token = SecretStore(service.data_dir, config=config_dir).get(TOKEN_SECRET)
        copied = tmp_path / "copied-ca.pem"
        copied.write_bytes(cert.read_bytes())
        monkeypatch.setenv("AGGREGATOR_CONFIG", str(tmp_path / "elsewhere"))
        with (
            pytest.raises(ServiceUnavailable, match="cannot reach the service"),
            RemoteEngine(url, api_token) as remote,
        ):
            remote.runs.list()  # not trusted
        monkeypatch.setenv("AGGREGATOR_TLS_CAFILE", str(copied))
        with RemoteEngine(url, api_token) as remote:
            assert isinstance(remote.runs.list(), list)
        monkeypatch.setenv("AGGREGATOR_CONFIG", str(config_dir))
        monkeypatch.delenv("AGGREGATOR_TLS_CAFILE")
        # a client given a CA file that does not exist says so in one line
        bad = cli(
            "runs", home=service.data_dir, env={**env, "AGGREGATOR_TLS_CAFILE": str(tmp_path / "none.pem")}
        )
        assert bad.returncode == 2 and "does not exist" in bad.stderr and len(bad.stderr.splitlines()) == 1
    finally:
        if service.proc.poll() is None:
            service.stop()
    assert service.proc.returncode == 0, service.output()


def test_a_bind_beyond_loopback_needs_tls_or_insecure(tmp_path, config_dir):
    args = [
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        "--data-dir",
        str(tmp_path / "d"),
        "--listen",
        "0.0.0.0:0",
    ]
    env = {**os.environ, **service_env(config_dir)}
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve plain HTTP on 0.0.0.0"), lines
    assert "--tls self-signed" in lines[0] and "--insecure" in lines[0]
    assert not (tmp_path / "d").exists()  # refused before anything was created


def test_insecure_is_said_as_a_warning(caplog):
    from app.serve import _say_transport

    with caplog.at_level("INFO", logger="aggregator.service"):
        _say_transport(None, "0.0.0.0", True)
        _say_transport(None, "127.0.0.1", True)
        _say_transport(None, "127.0.0.1", False)
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert said[0][0] == "WARNING" and "plain HTTP on 0.0.0.0" in said[0][1] and "in clear" in said[0][1]
    assert said[1][0] == "WARNING" and "loopback" in said[1][1]
    assert len(said) == 2  # plain HTTP on loopback without the flag: nothing to warn of


def test_certificate_and_key_from_the_settings(tmp_path, monkeypatch):
    cert_pem, key_pem = make_self_signed(["localhost", "127.0.0.1"])
    cert, key = tmp_path / "api.crt", tmp_path / "api.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    monkeypatch.setenv("AGGREGATOR_TLS_CERT", str(cert))
    monkeypatch.setenv("AGGREGATOR_TLS_KEY", str(key))
    chosen = choose(None, False, "0.0.0.0")
    assert chosen is not None and chosen.cert == cert and chosen.fingerprint == fingerprint(cert_pem)
    other_cert, _ = make_self_signed(["localhost"])
    cert.write_bytes(other_cert)  # a certificate with someone else's key
    with pytest.raises(TlsRefused, match="are not a certificate and its key"):
        choose(None, False, "0.0.0.0")
    monkeypatch.delenv("AGGREGATOR_TLS_KEY")
    with pytest.raises(TlsRefused, match="tls_key is not set"):
        choose(None, False, "127.0.0.1")
