"""Security: Basic256Sha256 with certificates made at run time, trust, and user identity.

The simulator offers Basic256Sha256/Sign only, trusts one client certificate and knows one user.
Every failure is one line that names the endpoint and the reason (issue 9, A7)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from engine.context import RunContext
from engine.errors import ConnectorError
from protocols.opcua.client import pin_path
from protocols.opcua.connector import OpcUaSource
from protocols.opcua.simulator import CLIENT_URI, OpcUaSimulator, make_certificate


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    return {
        "trusted": make_certificate(folder / "trusted", "client", CLIENT_URI),
        "stranger": make_certificate(folder / "stranger", "client", CLIENT_URI),
        "folder": folder,
    }


@pytest.fixture(scope="module")
def secure_farm(certs):
    sim = OpcUaSimulator(
        turbines=1,
        security=True,
        security_modes=("Sign",),
        trusted_client_certificates=[certs["trusted"][0]],
        users={"operator": "s3cret"},
    )
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    """Each test its own data directory (a RunContext's default is the working directory):
    certificates trusted on first use are pinned there."""
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def _check(sim: OpcUaSimulator, cert: tuple, **extra) -> None:
    config = {
        "endpoint": sim.endpoint,
        "nodes": ["WindFarm/Turbine01/Power"],
        "security_policy": "Basic256Sha256",
        "security_mode": "Sign",
        "certificate": str(cert[0]),
        "private_key": str(cert[1]),
        "username": "operator",
        "password": "s3cret",
        **extra,
    }
    OpcUaSource(config, RunContext()).check()


def _refused(sim: OpcUaSimulator, cert: tuple, match: str, **extra) -> str:
    started = time.monotonic()
    with pytest.raises(ConnectorError, match=match) as err:
        _check(sim, cert, **extra)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"OPC UA {sim.endpoint}: ")
    assert time.monotonic() - started < 3.0, "a refusal is told at once, not after a timeout"
    return message


def test_trusted_certificate_and_user_connect_and_read(secure_farm, certs):
    _check(secure_farm, certs["trusted"])
    config = {
        "endpoint": secure_farm.endpoint,
        "nodes": ["WindFarm/Turbine01/Power"],
        "security_policy": "Basic256Sha256",
        "security_mode": "Sign",
        "certificate": str(certs["trusted"][0]),
        "private_key": str(certs["trusted"][1]),
        "username": "operator",
        "password": "s3cret",
    }
    frame = OpcUaSource(config, RunContext()).read_once()
    assert frame["tag"].to_list() == ["Turbine01.Power"] and frame["quality"].to_list() == ["good"]


def test_a_policy_the_server_does_not_offer_is_refused_not_downgraded(secure_farm, certs):
    message = _refused(secure_farm, certs["trusted"], "does not offer", security_mode="SignAndEncrypt")
    assert "Basic256Sha256/SignAndEncrypt" in message and "it offers: Basic256Sha256/Sign" in message


def test_no_security_on_a_secure_only_server_is_refused(secure_farm, certs):
    config = {"endpoint": secure_farm.endpoint, "nodes": ["ns=2;i=1"]}
    with pytest.raises(
        ConnectorError, match=r"does not offer security None/None \(it offers: Basic256Sha256/Sign\)"
    ):
        OpcUaSource(config, RunContext()).check()


def test_an_untrusted_client_certificate_is_refused(secure_farm, certs):
    message = _refused(secure_farm, certs["stranger"], "BadCertificateUntrusted")
    assert f"the server refused our client certificate {certs['stranger'][0]}" in message


def test_a_strict_server_refusing_our_certificate_at_open_is_one_line(certs):
    """node-opcua refuses an untrusted client certificate at OpenSecureChannel with a fault;
    asyncua's client then failed with a bare AssertionError."""
    with OpcUaSimulator(
        turbines=1,
        security=True,
        security_modes=("Sign",),
        trusted_client_certificates=[certs["trusted"][0]],
        strict_channel=True,
    ) as strict:
        _check(strict, certs["trusted"], username=None, password=None)
        message = _refused(
            strict, certs["stranger"], "refused our client certificate", username=None, password=None
        )
    assert message == (
        f"OPC UA {strict.endpoint}: the server refused our client certificate {certs['stranger'][0]} "
        "(a fault to OpenSecureChannel): add it to the server's trusted certificates"
    )


def test_a_wrong_password_is_refused(secure_farm, certs):
    _refused(secure_farm, certs["trusted"], "BadUserAccessDenied", password="guess")


def test_the_server_certificate_can_be_pinned_or_trusted_by_folder(secure_farm, certs, tmp_path):
    _check(secure_farm, certs["trusted"], server_certificate=str(secure_farm.server_certificate))
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(secure_farm.server_certificate, trusted / "server.pem")
    _check(secure_farm, certs["trusted"], trust_list=str(trusted))
    others = tmp_path / "others"
    others.mkdir()
    shutil.copy(certs["stranger"][0], others / "someone-else.pem")
    message = _refused(secure_farm, certs["trusted"], "is not in trust_list", trust_list=str(others))
    assert f"is not in trust_list {others}, nor issued by a certificate in it" in message


def _sha256(path: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex()


def test_a_server_closing_on_our_certificate_is_one_line(certs):
    with OpcUaSimulator(
        turbines=1,
        security=True,
        security_modes=("Sign",),
        trusted_client_certificates=[certs["trusted"][0]],
        strict_channel="close",
    ) as strict:
        _check(strict, certs["trusted"], username=None, password=None)
        message = _refused(strict, certs["stranger"], "closed the connection", username=None, password=None)
    assert message.startswith(
        f"OPC UA {strict.endpoint}: the server closed the connection while the secure channel was set up ("
    )
    assert message.endswith(f"): does it trust our client certificate {certs['stranger'][0]}?")


def test_a_wrong_pin_names_both_fingerprints(secure_farm, certs):
    """It used to be "no answer within 8 s" (the server could not decrypt) or BadTcpInternalError."""
    wrong = certs["stranger"][0]
    message = _refused(secure_farm, certs["trusted"], "is not the pinned one", server_certificate=str(wrong))
    assert message == (
        f"OPC UA {secure_farm.endpoint}: the server's certificate is not the pinned one (pinned {wrong}: "
        f"sha256 {_sha256(wrong)}; the server's: sha256 {_sha256(secure_farm.server_certificate)})"
    )


def test_an_empty_or_missing_trust_list_is_one_line(secure_farm, certs, tmp_path):
    """It used to be `ValueError: can't create an empty store`."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.txt").write_text("not a certificate")
    message = _refused(secure_farm, certs["trusted"], "holds no certificate", trust_list=str(empty))
    assert f"trust_list {empty} holds no certificate (.der, .pem, .crt, .cer)" in message
    _refused(
        secure_farm,
        certs["trusted"],
        f"trust_list {tmp_path / 'nope'}: no such folder",
        trust_list=str(tmp_path / "nope"),
    )


def test_trust_on_first_use_pins_the_certificate_and_refuses_a_changed_one(certs, data_dir, tmp_path):
    """Without `server_certificate` or `trust_list` the first connection stores the server's
    certificate in `<data dir>/pki/trusted/<host>_<port>.der`; a server that later shows another
    certificate on that endpoint is refused, naming both fingerprints. (It used to trust any
    certificate, every time.)"""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    options = {"turbines": 1, "security": True, "security_modes": ("Sign",)}
    logs: list[str] = []
    with OpcUaSimulator(cert_dir=tmp_path / "first", **options) as first:
        config = {
            "endpoint": first.endpoint,
            "nodes": ["WindFarm/Turbine01/Power"],
            "security_policy": "Basic256Sha256",
            "security_mode": "Sign",
            "certificate": str(certs["trusted"][0]),
            "private_key": str(certs["trusted"][1]),
        }
        source = OpcUaSource(config, RunContext(log=lambda level, message, node=None: logs.append(message)))
        source.check()
        pin = pin_path(data_dir / "pki", first.endpoint)
        assert pin == data_dir / "pki" / "trusted" / f"127.0.0.1_{first.port}.der"
        server_der = x509.load_pem_x509_certificate(first.server_certificate.read_bytes()).public_bytes(
            Encoding.DER
        )
        assert pin.read_bytes() == server_der
        assert any("trusted the server's certificate on first use" in m and str(pin) in m for m in logs)
        source.check()  # the same certificate again: accepted
        assert source.read_once()["quality"].to_list() == ["good"]
        port, first_cert = first.port, first.server_certificate
        first_sha = _sha256(first_cert)
    # Another server (a new certificate) on the same endpoint.
    with OpcUaSimulator(port=port, cert_dir=tmp_path / "second", **options) as second:
        message = _refused(second, certs["trusted"], "has changed since it was first trusted")
        assert message == (
            f"OPC UA {second.endpoint}: the server's certificate has changed since it was first trusted "
            f"(pinned: sha256 {first_sha}; now: sha256 {_sha256(second.server_certificate)}); "
            f"if the change is expected, delete {pin}"
        )
        assert pin.read_bytes() == server_der  # the pin is kept
        pin.unlink()  # the operator accepts the new certificate
        _check(second, certs["trusted"], username=None, password=None)


def test_the_tag_browser_pins_in_the_data_directory_it_is_given(secure_farm, certs, tmp_path):
    from protocols.opcua.connector import OpcUaConnector

    config = {
        "endpoint": secure_farm.endpoint,
        "security_policy": "Basic256Sha256",
        "security_mode": "Sign",
        "certificate": str(certs["trusted"][0]),
        "private_key": str(certs["trusted"][1]),
        "username": "operator",
        "password": "s3cret",
    }
    workspace = tmp_path / "workspace"
    top = OpcUaConnector.browse(config, data_dir=workspace)
    assert "2:WindFarm" in {row["browse_name"] for row in top}
    assert pin_path(workspace / "pki", secure_farm.endpoint).is_file()


def test_a_pin_that_cannot_be_written_is_one_line(secure_farm, certs, data_dir):
    (data_dir / "pki").write_text("a file where the pki folder should be")
    message = _refused(secure_farm, certs["trusted"], "cannot pin the server's certificate")
    pin = pin_path(data_dir / "pki", secure_farm.endpoint)
    assert (
        message == f"OPC UA {secure_farm.endpoint}: cannot pin the server's certificate in {pin}: File exists"
    )
