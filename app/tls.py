"""TLS for `aggregator serve` (issue 14, item 7): which certificate, the self-signed one made on
request, its fingerprint, and the rule that only loopback may be served in plain HTTP.

- The certificate and key come from the settings (`tls_cert`, `tls_key`), or `--tls self-signed`
  makes one (or reuses the one made before, so clients that trust it keep trusting it): an EC P-256
  key and a certificate for this host's names and addresses, both 0600 in `<config dir>/tls/`.
- A listen address other than loopback needs TLS, or `--insecure`, which is said as a warning.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from engine.errors import AggregatorError

SELF_SIGNED = "self-signed"
VALID_DAYS = 825  # what browsers accept for a server certificate
RENEW_BEFORE_DAYS = 30


class TlsRefused(AggregatorError):
    """A listen address that needs TLS, or TLS files that cannot be used: one line, exit 2."""

    exit_code = 2


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the certificate, AA:BB:... (what a client compares)
    generated: bool = False


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:  # a host name: loopback if every address it names is
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError:
            return False
        return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def fingerprint(cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(cert_pem)
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def choose(mode: str | None, insecure: bool, host: str) -> TlsFiles | None:
    """The TLS files to serve with (None: plain HTTP), or TlsRefused naming what to do."""
    from engine.datadir import security_settings

    chosen = security_settings()
    files: TlsFiles | None = None
    if mode == SELF_SIGNED:
        files = self_signed(host)
    elif mode not in (None, "settings"):
        raise TlsRefused(f"--tls {mode}: say --tls self-signed, or set tls_cert and tls_key in the settings")
    elif chosen["tls_cert"] or chosen["tls_key"] or mode == "settings":
        files = from_settings(chosen["tls_cert"], chosen["tls_key"])
    if files is None and not insecure and not is_loopback(host):
        raise TlsRefused(
            f"refusing to serve plain HTTP on {host}, which is not loopback: use --tls self-signed (or"
            " tls_cert and tls_key in the settings), or --insecure to send the API token in clear"
        )
    return files


def from_settings(cert: Path | None, key: Path | None) -> TlsFiles:
    if cert is None or key is None:
        missing = "tls_key" if key is None else "tls_cert"
        raise TlsRefused(f"TLS: {missing} is not set (`aggregator settings set {missing} FILE`)")
    for path, name in ((cert, "tls_cert"), (key, "tls_key")):
        if not path.is_file():
            raise TlsRefused(f"TLS: {name} {path}: no such file")
    import ssl

    try:  # both read now: a wrong pair is one line here, not a dead HTTP thread later
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
        print_ = fingerprint(cert.read_bytes())
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TlsRefused(f"TLS: {cert} and {key} are not a certificate and its key (PEM): {exc}") from None
    return TlsFiles(cert, key, print_)


def self_signed(host: str) -> TlsFiles:
    """The self-signed certificate of `<config dir>/tls/`, made now when missing, expiring or not
    valid for `host`."""
    from engine.datadir import self_signed_files

    cert_path, key_path = self_signed_files()
    names = _names(host)
    if cert_path.is_file() and key_path.is_file() and _still_good(cert_path.read_bytes(), names):
        return TlsFiles(cert_path, key_path, fingerprint(cert_path.read_bytes()))
    cert_pem, key_pem = make_self_signed(names)
    from engine.secrets import restrict_to_owner

    restrict_to_owner(cert_path.parent)
    for path, data in ((key_path, key_pem), (cert_path, cert_pem)):
        _write_private(path, data)
    return TlsFiles(cert_path, key_path, fingerprint(cert_pem), generated=True)


def _write_private(path: Path, data: bytes) -> None:
    """Written whole with mode 0600 from the start (a temporary file renamed over the old one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _names(host: str) -> list[str]:
    """What the certificate is for: localhost, the loopback addresses, this machine's name and the
    listen address when it names one host."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    if host and host not in ("0.0.0.0", "::") and host not in names:
        names.append(host)
    return names


def _still_good(cert_pem: bytes, names: list[str]) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    return left > dt.timedelta(days=RENEW_BEFORE_DAYS) and all(_canonical(n) in have for n in names)


def _canonical(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def make_self_signed(names: list[str]) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM): EC P-256, its own issuer, for `names` (host names and addresses)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"Data Aggregator on {socket.gethostname()}")]
    )
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        # its own CA, so that a client can trust it as a CA file (--cafile / tls_cafile)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
