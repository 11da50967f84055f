"""Security: Basic256Sha256 with certificates made at run time, trust, and user identity.

The simulator offers Basic256Sha256/Sign only, trusts one client certificate and knows one user."""

from __future__ import annotations

import shutil

import pytest

from engine.context import RunContext
from engine.errors import ConnectorError
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
    with pytest.raises(ConnectorError, match=match) as err:
        _check(sim, cert, **extra)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"OPC UA {sim.endpoint}: ")
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
    config = {
        "endpoint": secure_farm.endpoint,
        "nodes": ["ns=2;i=1"],
        "username": "operator",
        "password": "s3cret",
    }
    with pytest.raises(
        ConnectorError, match=r"does not offer security None/None \(it offers: Basic256Sha256/Sign\)"
    ):
        OpcUaSource(config, RunContext()).check()


def test_an_untrusted_client_certificate_is_refused(secure_farm, certs):
    _refused(secure_farm, certs["stranger"], "BadCertificateUntrusted")


def test_a_wrong_password_is_refused(secure_farm, certs):
    _refused(secure_farm, certs["trusted"], "BadUserAccessDenied", password="guess")


def test_the_server_certificate_can_be_pinned_or_trusted_by_folder(secure_farm, certs, tmp_path):
    _check(secure_farm, certs["trusted"], server_certificate=str(secure_farm.server_certificate))
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(secure_farm.server_certificate, trusted / "server.pem")
    _check(secure_farm, certs["trusted"], trust_list=str(trusted))
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(certs["stranger"][0], empty / "someone-else.pem")
    _refused(secure_farm, certs["trusted"], "BadCertificateUntrusted", trust_list=str(empty))
