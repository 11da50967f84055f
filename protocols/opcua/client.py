"""The async OPC UA client layer over asyncua: connect with security, browse, resolve node ids and
browse paths, chunked reads, batch subscriptions and writes.

Everything here runs inside one asyncio loop (the connector's own thread). asyncua is imported
lazily, so importing this module costs nothing until a session opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import ConnectorError
from engine.tags import Quality, from_epoch_us
from protocols.opcua.config import DEFAULT_MAX_NODES_PER_READ, OpcUaConfig

NODE_ID_PREFIXES = ("ns=", "i=", "s=", "g=", "b=", "nsu=")
# Monitored items per CreateMonitoredItems call: 2000 made 10,000 items fastest against asyncua's
# server (0.7 s; 5000 and 10000 took 1.3 s); a server's MaxMonitoredItemsPerCall lowers it.
MAX_ITEMS_PER_CREATE = 2000


def status_quality(code: int) -> tuple[Quality, str | None]:
    """OPC UA severity bits (the top two) -> quality; the status name is the reason when not good."""
    severity = (code >> 30) & 3
    if severity == 0:
        return "good", None
    from asyncua.ua.status_codes import code_to_name_doc

    # The low 16 bits are info flags (overflow, limits...); the name is in the high 16.
    known = code_to_name_doc.get(code & 0xFFFF0000)
    quality: Quality = "uncertain" if severity == 1 else "bad"
    return quality, known[0] if known else f"{quality.capitalize()}_0x{code:08X}"


# OPC UA's "no time": DateTime 0 (1601-01-01, what asyncua decodes it to) or anything before it,
# and Int64 max (9999-12-31 23:59:59, "the end of time"). Neither is ever stored as a time.
_NO_TIME = datetime(1601, 1, 1, tzinfo=UTC)
_END_OF_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def _utc(moment: datetime | None) -> datetime | None:
    """A UTC time, or None for a missing, zero (1601-01-01) or end-of-time DateTime."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment <= _NO_TIME or moment >= _END_OF_TIME:
        return None
    return moment


CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")
# Status names of a server refusing our certificate (a trailing colon-free token of one_line()).
_CLIENT_CERT_REFUSED = {
    "BadCertificateUntrusted",
    "BadSecurityChecksFailed",
    "BadCertificateInvalid",
    "BadCertificateRevoked",
    "BadCertificateUseNotAllowed",
    "BadCertificateUriInvalid",
    "BadCertificateTimeInvalid",
}


def pin_path(pki_dir: Path, endpoint: str) -> Path:
    """`<pki_dir>/trusted/<host>_<port>.der`: the certificate pinned for an endpoint."""
    import re
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    host = re.sub(r"[^A-Za-z0-9.-]", "_", parts.hostname or "host")
    return pki_dir / "trusted" / f"{host}_{parts.port or 4840}.der"


def _default_pki_dir() -> Path:
    from engine.workspace import default_data_dir

    return default_data_dir() / "pki"


def _server_certificate(endpoint: Any) -> Any:
    from asyncua.crypto import uacrypto

    return uacrypto.x509_from_der(endpoint.ServerCertificate) if endpoint.ServerCertificate else None


def _fingerprint(cert: Any) -> str:
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex()


def _try_certificate(path: Path) -> Any:
    from cryptography import x509

    data = path.read_bytes()
    for load in (x509.load_pem_x509_certificate, x509.load_der_x509_certificate):
        with contextlib.suppress(ValueError):
            return load(data)
    return None


def _load_certificate(path: Path, endpoint: str, what: str) -> Any:
    if not path.is_file():
        raise ConnectorError(f"OPC UA {endpoint}: {what} {path}: no such file")
    cert = _try_certificate(path)
    if cert is None:
        raise ConnectorError(f"OPC UA {endpoint}: {what} {path}: not a certificate (PEM or DER)")
    return cert


def _vouches_for(trusted: Any, cert: Any) -> bool:
    """`trusted` is `cert` itself, or the CA that signed it."""
    if _fingerprint(trusted) == _fingerprint(cert):
        return True
    try:
        cert.verify_directly_issued_by(trusted)
    except Exception:
        return False
    return True


_QUIETED = False
ASYNCUA_LOGGERS = ("asyncua", "asyncuagds")  # asyncuagds: its certificate trust store


class _Demote(logging.Handler):
    """asyncua's records, re-emitted at DEBUG under `protocols.opcua.asyncua`: its warnings and
    tracebacks on a lost link (`BadSessionClosed`, "Socket has closed connection"...) are
    chatter beside our one-line session state, so they reach a debug log, never the console."""

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger("protocols.opcua.asyncua")
        if not target.isEnabledFor(logging.DEBUG):
            return
        record.msg = f"[{record.levelname.lower()} {record.name}] {record.msg}"
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        target.handle(record)


def quiet_asyncua() -> None:
    """Route asyncua's logging to debug level (once per process). Its own DEBUG records (one per
    request) are cut at the source: they cost time on the hot path."""
    global _QUIETED
    if _QUIETED:
        return
    _QUIETED = True
    for name in ASYNCUA_LOGGERS:
        log = logging.getLogger(name)
        log.addHandler(_Demote())
        log.propagate = False
        if log.level == logging.NOTSET or log.level < logging.INFO:
            log.setLevel(logging.INFO)


def is_node_id(text: str) -> bool:
    return text.startswith(NODE_ID_PREFIXES)


def one_line(exc: BaseException) -> str:
    """asyncua errors often have empty messages; the class name (a status name) is the reason."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    text = text.removesuffix(f"({name})").strip()
    return f"{name}: {text}" if text and text != name else name


class _NoMatch(ConnectorError):
    """A browse path that leads nowhere (that node only; the others still stream)."""


@dataclass(frozen=True)
class TagNode:
    """A variable the source reads: its node id (string form) and the tag name it is stored under."""

    node_id: str
    tag: str


ValueSink = Callable[[str, Any, int, datetime | None, datetime | None], None]
"""(tag, value, status code, source timestamp, server timestamp) for each value received."""
UndecodableSink = Callable[["TagNode", BaseException], None]
"""(node, error) for a node whose value the client cannot decode."""


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What asyncua raises for a message it cannot parse (not a broken link)."""
    import struct

    from asyncua.common.utils import NotEnoughData
    from asyncua.ua.uaerrors import UaStructParsingError

    return (NotEnoughData, UaStructParsingError, struct.error, ValueError, IndexError, UnicodeError)


class OpcUaSession:
    """One connected client session. Use `async with OpcUaSession(config):` or connect()/close()."""

    def __init__(
        self,
        config: OpcUaConfig,
        counters: Any | None = None,
        *,
        pki_dir: Path | None = None,
        log: Callable[[str, str], None] | None = None,
    ):
        """`pki_dir`: where server certificates trusted on first use are pinned (`<data
        directory>/pki`; default: the default data directory's). `log(level, message)`."""
        from collections import Counter

        self.config = config
        self.pki_dir = pki_dir
        self.log = log or (lambda level, message: None)
        self.counters = counters if counters is not None else Counter()
        self.client: Any = None
        self.max_nodes_per_read = config.max_nodes_per_read or DEFAULT_MAX_NODES_PER_READ
        self.max_items_per_create = MAX_ITEMS_PER_CREATE
        self._children_cache: dict[str, list[Any]] = {}
        self.unresolved: dict[str, str] = {}  # {tag: reason} of the last tag_nodes()

    async def __aenter__(self) -> OpcUaSession:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- connection ---------------------------------------------------------------------------

    async def connect(self, on_lost: Callable[[Exception], Any] | None = None) -> None:
        """Connect with the configured security and identity; raise ConnectorError (one line)."""
        from asyncua import Client

        quiet_asyncua()
        cfg = self.config
        # A closed socket is noticed at once; the watchdog probe only finds a silent server, and a
        # short probe timeout would call a busy server lost (seen at 25k changes/s on 2 cores).
        client = Client(cfg.endpoint, timeout=cfg.timeout_s, watchdog_intervall=max(2.0, cfg.timeout_s))
        client.application_uri = "urn:data-aggregator:opcua-client"
        if cfg.username:
            client.set_user(cfg.username)
            if cfg.password is not None:
                client.set_password(cfg.password)
        if on_lost is not None:

            async def lost(exc: Exception) -> None:
                on_lost(exc)

            client.connection_lost_callback = lost
        try:
            endpoint = await self._require_offered(client)
            if cfg.security_policy != "None":
                await self._apply_security(client, endpoint)
            await asyncio.wait_for(client.connect(), timeout=cfg.timeout_s * 2)
        except ConnectorError:
            with contextlib.suppress(Exception):
                client.disconnect_socket()
            raise
        except Exception as exc:
            with contextlib.suppress(Exception):
                client.disconnect_socket()
            raise ConnectorError(f"OPC UA {cfg.endpoint}: {self._explain(exc)}") from exc
        self.client = client
        self._children_cache.clear()
        await self._read_operation_limits()

    async def _require_offered(self, client: Any) -> Any:
        """Look the endpoints up first, so that a policy the server does not offer is a clear
        refusal and never a silent fall-back to another (weaker) one. Returns the endpoint
        description that matches the configured policy and mode."""
        cfg = self.config
        try:
            endpoints = await asyncio.wait_for(
                client.connect_and_get_server_endpoints(), timeout=cfg.timeout_s
            )
        except TimeoutError:
            raise ConnectorError(f"OPC UA {cfg.endpoint}: no answer within {cfg.timeout_s:g} s") from None
        offered = {}
        for e in endpoints:
            offered.setdefault((e.SecurityPolicyUri.rsplit("#", 1)[-1], e.SecurityMode.name.rstrip("_")), e)
        if (cfg.security_policy, cfg.security_mode) not in offered:
            names = ", ".join(sorted(f"{p}/{m}" for p, m in offered))
            raise ConnectorError(
                f"OPC UA {cfg.endpoint}: the server does not offer security {cfg.security_policy}/"
                f"{cfg.security_mode} (it offers: {names})"
            )
        return offered[(cfg.security_policy, cfg.security_mode)]

    async def _apply_security(self, client: Any, endpoint: Any) -> None:
        """The server's certificate is checked before anything is signed or sent: against the
        pinned `server_certificate`, against `trust_list`, or else against the certificate
        pinned on first use (trust on first use: stored at the first connection, and a changed
        one refused)."""
        from asyncua import ua
        from asyncua.crypto import security_policies

        cfg = self.config
        policy = getattr(security_policies, f"SecurityPolicy{cfg.security_policy}")
        mode = getattr(ua.MessageSecurityMode, cfg.security_mode)
        for key in ("certificate", "private_key"):
            path = Path(getattr(cfg, key))
            if not path.is_file():
                raise ConnectorError(f"OPC UA {cfg.endpoint}: {key} {path}: no such file")
        server_cert = _server_certificate(endpoint)
        if server_cert is None:
            raise ConnectorError(f"OPC UA {cfg.endpoint}: the server sent no certificate with its endpoint")
        if cfg.server_certificate:
            pinned = _load_certificate(Path(cfg.server_certificate), cfg.endpoint, "server_certificate")
            if _fingerprint(pinned) != _fingerprint(server_cert):
                raise ConnectorError(
                    f"OPC UA {cfg.endpoint}: the server's certificate is not the pinned one (pinned "
                    f"{cfg.server_certificate}: sha256 {_fingerprint(pinned)}; the server's: sha256 "
                    f"{_fingerprint(server_cert)})"
                )
            server_file: str | None = cfg.server_certificate
        elif cfg.trust_list:
            await self._trust_list_validator(client, server_cert)
            server_file = None  # asyncua takes it from the endpoints and its validator checks it
        else:
            server_file = str(self._trust_on_first_use(server_cert))
        await client.set_security(
            policy, cfg.certificate, cfg.private_key, server_certificate=server_file, mode=mode
        )

    async def _trust_list_validator(self, client: Any, server_cert: Any) -> None:
        from asyncua.crypto.truststore import TrustStore
        from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

        cfg = self.config
        folder = Path(cfg.trust_list or "")
        if not folder.is_dir():
            raise ConnectorError(f"OPC UA {cfg.endpoint}: trust_list {folder}: no such folder")
        trusted = [
            c
            for f in sorted(folder.iterdir())
            if f.suffix.lower() in CERT_SUFFIXES and (c := _try_certificate(f)) is not None
        ]
        if not trusted:
            raise ConnectorError(
                f"OPC UA {cfg.endpoint}: trust_list {folder} holds no certificate "
                f"({', '.join(CERT_SUFFIXES)}): put the server's certificate or its CA's in it"
            )
        if not any(_vouches_for(t, server_cert) for t in trusted):
            raise ConnectorError(
                f"OPC UA {cfg.endpoint}: the server's certificate ({server_cert.subject.rfc4514_string()}, "
                f"sha256 {_fingerprint(server_cert)}) is not in trust_list {folder}, nor issued by a "
                f"certificate in it"
            )
        store = TrustStore([folder], [])
        await store.load()
        client.certificate_validator = CertificateValidator(
            CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_SERVER, store
        )

    def _trust_on_first_use(self, server_cert: Any) -> Path:
        """The pinned copy of this endpoint's certificate: written at the first connection,
        compared at every later one (a changed certificate is refused, naming both)."""
        from cryptography.hazmat.primitives.serialization import Encoding

        cfg = self.config
        pin = pin_path(self.pki_dir or _default_pki_dir(), cfg.endpoint)
        if pin.exists():
            pinned = _load_certificate(pin, cfg.endpoint, "pinned certificate")
            if _fingerprint(pinned) != _fingerprint(server_cert):
                raise ConnectorError(
                    f"OPC UA {cfg.endpoint}: the server's certificate has changed since it was first "
                    f"trusted (pinned: sha256 {_fingerprint(pinned)}; now: sha256 "
                    f"{_fingerprint(server_cert)}); if the change is expected, delete {pin}"
                )
            return pin
        try:
            pin.parent.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # <data dir>/pki
            pin.parent.mkdir(exist_ok=True, mode=0o700)
            temp = pin.with_suffix(".tmp")
            temp.write_bytes(server_cert.public_bytes(Encoding.DER))
            os.replace(temp, pin)
        except OSError as exc:
            raise ConnectorError(
                f"OPC UA {cfg.endpoint}: cannot pin the server's certificate in {pin}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from exc
        self.log(
            "warning",
            f"OPC UA {cfg.endpoint}: trusted the server's certificate on first use "
            f"(sha256 {_fingerprint(server_cert)}), pinned in {pin}",
        )
        return pin

    def _explain(self, exc: BaseException) -> str:
        cfg = self.config
        if isinstance(exc, asyncio.TimeoutError | TimeoutError):
            return f"no answer within {cfg.timeout_s * 2:g} s"
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ConnectionResetError):
            return exc.strerror[0].lower() + exc.strerror[1:]
        text = one_line(exc)
        if cfg.security_policy == "None":
            return text
        if isinstance(exc, AssertionError) or _CLIENT_CERT_REFUSED.intersection(text.split(":")):
            # A strict server refuses an untrusted client certificate at OpenSecureChannel (asyncua
            # then trips on the answer: AssertionError); asyncua's server at CreateSession.
            status = text if not isinstance(exc, AssertionError) else "a fault to OpenSecureChannel"
            return (
                f"the server refused our client certificate {cfg.certificate} ({status}): add it to "
                f"the server's trusted certificates"
            )
        if isinstance(exc, ConnectionError):
            return (
                f"the server closed the connection while the secure channel was set up ({text}): does "
                f"it trust our client certificate {cfg.certificate}?"
            )
        return text

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            # A failure here means the link is already gone; nothing is left to tidy on the server.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), timeout=2.0)

    async def _read_operation_limits(self) -> None:
        """MaxNodesPerRead and MaxMonitoredItemsPerCall from the server's OperationLimits
        (0 or unreadable means none declared: our defaults apply)."""
        from asyncua import ua

        ids = ua.ObjectIds
        pairs = [
            (ua.NodeId(ids.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead), ua.AttributeIds.Value),
            (
                ua.NodeId(ids.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall),
                ua.AttributeIds.Value,
            ),
        ]
        self.max_nodes_per_read = 1  # the limit is not known yet: one node per request is always allowed
        try:
            per_read, per_call = [await self.read_attributes(pairs[i : i + 1], count=False) for i in range(2)]
        except Exception:
            per_read = per_call = []
        self.max_nodes_per_read = self.config.max_nodes_per_read or _limit(
            per_read, DEFAULT_MAX_NODES_PER_READ
        )
        self.max_items_per_create = min(MAX_ITEMS_PER_CREATE, _limit(per_call, MAX_ITEMS_PER_CREATE))

    async def server_state(self) -> str:
        from asyncua import ua

        value = await self.client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)).read_value()
        return ua.ServerState(value).name

    # --- browsing and resolving ----------------------------------------------------------------

    async def _children(self, node_id: str) -> list[Any]:
        cached = self._children_cache.get(node_id)
        if cached is None:
            cached = await self.client.get_node(node_id).get_children_descriptions()
            self._children_cache[node_id] = cached
        return cached

    async def browse(self, node_id: str | None = None) -> list[dict[str, Any]]:
        """The children of a node (default: Objects) for a tag browser."""
        from asyncua import ua

        parent = node_id or ua.NodeId(ua.ObjectIds.ObjectsFolder).to_string()
        try:
            exists = (await self.read_attributes([(parent, ua.AttributeIds.NodeClass)], count=False))[0]
            if not exists.StatusCode.is_good():
                raise ConnectorError(
                    f"OPC UA {self.config.endpoint}: cannot browse {parent}: {exists.StatusCode.name}"
                )
            refs = await self.client.get_node(parent).get_children_descriptions()
        except ConnectorError:
            raise
        except Exception as exc:
            raise ConnectorError(
                f"OPC UA {self.config.endpoint}: cannot browse {parent}: {one_line(exc)}"
            ) from exc
        variables = [r.NodeId for r in refs if r.NodeClass == ua.NodeClass.Variable]
        pairs = [(n, ua.AttributeIds.DataType) for n in variables] + [
            (n, ua.AttributeIds.AccessLevel) for n in variables
        ]
        values = await self.read_attributes(pairs, count=False)
        data_types = {}
        access = {}
        for i, nid in enumerate(variables):
            dtype, level = values[i], values[len(variables) + i]
            data_types[nid.to_string()] = await self._type_name(dtype.Value.Value if dtype.Value else None)
            access[nid.to_string()] = _access_text(level.Value.Value if level.Value else None)
        out = []
        for r in refs:
            nid = r.NodeId.to_string()
            out.append(
                {
                    "node_id": nid,
                    "browse_name": r.BrowseName.to_string(),
                    "display_name": r.DisplayName.Text,
                    "node_class": r.NodeClass.name,
                    "data_type": data_types.get(nid),
                    "access_level": access.get(nid),
                    "has_children": r.NodeClass == ua.NodeClass.Object,
                }
            )
        return out

    async def _type_name(self, type_id: Any) -> str | None:
        if type_id is None:
            return None
        from asyncua import ua

        if type_id.NamespaceIndex == 0 and isinstance(type_id.Identifier, int):
            name = ua.ObjectIdNames.get(type_id.Identifier)
            if name:
                return name
        return type_id.to_string()

    async def resolve(self, path_or_id: str) -> str:
        """A node id string for a node id or a browse path below Objects (`WindFarm/Turbine01/Power`)."""
        from asyncua import ua

        if is_node_id(path_or_id):
            return path_or_id
        current = ua.NodeId(ua.ObjectIds.ObjectsFolder).to_string()
        for part in [p for p in path_or_id.split("/") if p]:
            ns, _, name = (
                part.rpartition(":") if ":" in part and part.split(":")[0].isdigit() else ("", "", part)
            )
            match = [
                r
                for r in await self._children(current)
                if r.BrowseName.Name == name and (not ns or r.BrowseName.NamespaceIndex == int(ns))
            ]
            if not match:
                raise _NoMatch(
                    f"OPC UA {self.config.endpoint}: browse path '{path_or_id}': no '{part}' found"
                )
            current = match[0].NodeId.to_string()
        return current

    async def tag_nodes(self) -> list[TagNode]:
        """The configured `nodes` and every variable below `browse_root`, resolved to node ids.

        A node the server does not know (`BadNodeIdUnknown`), or a browse path that leads nowhere,
        is left out and put in `self.unresolved` ({tag: reason}): the source writes one bad record
        for it and streams the others."""
        from asyncua import ua

        cfg = self.config
        self.unresolved = {}
        found: dict[str, TagNode] = {}
        ids: list[tuple[str, str]] = []  # (entry, node id)
        for entry in cfg.nodes:
            try:
                nid = await self.resolve(entry)
                ua.NodeId.from_string(nid)
            except _NoMatch as exc:
                self.unresolved[entry] = f"BadNoMatch: {str(exc).split(': ', 1)[-1]}"
            except (ValueError, ua.UaStringParsingError):
                self.unresolved[entry] = "BadNodeIdInvalid"
            else:
                ids.append((entry, nid))
        names = await self.read_attributes([(nid, ua.AttributeIds.BrowseName) for _, nid in ids], count=False)
        for (entry, nid), name in zip(ids, names, strict=True):
            if nid in found:
                continue
            if not name.StatusCode.is_good():
                self.unresolved[entry if cfg.tag_name == "browse_name" else nid] = name.StatusCode.name
                continue
            if cfg.tag_name == "node_id":
                found[nid] = TagNode(nid, nid)
            else:
                found[nid] = TagNode(nid, await self._tag_name(nid, name.Value.Value))
        if cfg.browse_root:
            try:
                root = await self.resolve(cfg.browse_root)
            except _NoMatch as exc:
                self.unresolved[cfg.browse_root] = f"BadNoMatch: {str(exc).split(': ', 1)[-1]}"
            else:
                for nid, tag in await self._variables_below(root):
                    found.setdefault(nid, TagNode(nid, tag if cfg.tag_name == "browse_name" else nid))
        return list(found.values())

    async def _tag_name(self, node_id: str, browse_name: Any) -> str:
        """`<parent browse name>.<browse name>` (the name alone for a node without a parent)."""
        name = getattr(browse_name, "Name", None) or node_id
        parent = await self.client.get_node(node_id).get_parent()
        parent_name = (await parent.read_browse_name()).Name if parent is not None else None
        return f"{parent_name}.{name}" if parent_name and parent_name != "Objects" else name

    async def _variables_below(self, root: str) -> list[tuple[str, str]]:
        """(node id, `parent.name`) of every variable below `root`, breadth first."""
        from asyncua import ua

        out: list[tuple[str, str]] = []
        frontier = [(root, None)]
        seen = {root}
        while frontier:
            node_id, name = frontier.pop(0)
            for ref in await self._children(node_id):
                child = ref.NodeId.to_string()
                if child in seen:
                    continue
                seen.add(child)
                child_name = ref.BrowseName.Name
                if ref.NodeClass == ua.NodeClass.Variable:
                    out.append((child, f"{name}.{child_name}" if name else child_name))
                elif ref.NodeClass == ua.NodeClass.Object:
                    frontier.append((child, child_name))
        return out

    # --- reads and writes --------------------------------------------------------------------

    async def read_attributes(self, pairs: Sequence[tuple[Any, Any]], *, count: bool = True) -> list[Any]:
        """Read (node id, attribute) pairs in chunks of at most MaxNodesPerRead; `count`: add the
        requests to `counters["reads"]` (value reads; not our own housekeeping)."""
        from asyncua import ua

        results: list[Any] = []
        step = max(1, self.max_nodes_per_read)
        for start in range(0, len(pairs), step):
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            for node_id, attribute in pairs[start : start + step]:
                rv = ua.ReadValueId()
                rv.NodeId = node_id if isinstance(node_id, ua.NodeId) else ua.NodeId.from_string(node_id)
                rv.AttributeId = attribute
                params.NodesToRead.append(rv)
            results.extend(await self.client.uaclient.read(params))
            if count:
                self.counters["reads"] += 1
        return results

    async def read_values(
        self, nodes: Sequence[TagNode], sink: ValueSink, on_undecodable: UndecodableSink | None = None
    ) -> None:
        """Read every node's value (chunked) and hand each to `sink`.

        A response that cannot be decoded (one value no client can parse spoils the whole message)
        is read again in halves, down to the one node at fault, which goes to `on_undecodable`
        (node, error); without it the error is raised."""
        from asyncua import ua

        step = max(1, self.max_nodes_per_read)
        undecodable = _decode_errors()
        for start in range(0, len(nodes), step):
            chunk = list(nodes[start : start + step])
            try:
                values = await self.read_attributes([(n.node_id, ua.AttributeIds.Value) for n in chunk])
            except undecodable as exc:
                if on_undecodable is None:
                    raise
                if len(chunk) == 1:
                    on_undecodable(chunk[0], exc)
                else:
                    half = len(chunk) // 2
                    await self.read_values(chunk[:half], sink, on_undecodable)
                    await self.read_values(chunk[half:], sink, on_undecodable)
                continue
            for node, dv in zip(chunk, values, strict=True):
                value = dv.Value.Value if dv.Value is not None else None
                code = dv.StatusCode.value if dv.StatusCode is not None else 0
                sink(node.tag, value, code, _utc(dv.SourceTimestamp), _utc(dv.ServerTimestamp))

    async def write_value(self, node_id: str, value: Any, status: int = 0) -> None:
        """Write a value with a status code (the simulator's and the tests' fault injection)."""
        from asyncua import ua

        node = self.client.get_node(node_id)
        variant_type = await node.read_data_type_as_variant_type()
        dv = ua.DataValue(ua.Variant(value, variant_type), StatusCode=ua.StatusCode(status))
        await node.write_value(dv)

    # --- subscriptions -------------------------------------------------------------------------

    async def subscribe(
        self,
        nodes: Sequence[TagNode],
        sink: ValueSink,
        on_problem: ProblemSink | None = None,
        columns_sink: ColumnsSink | None = None,
    ) -> tuple[Any, dict[str, int]]:
        """One subscription with a monitored item per node, created in large calls.

        Publish responses are decoded into columns (notifications.py) and handed to
        `columns_sink` in one call each; a message the fast decoder leaves to asyncua goes to
        `sink` value by value (without `columns_sink`, every value goes to `sink`).
        `on_problem(tag or None, error)` hears of everything the value path could not hand on:
        a value that failed, a notification of an unknown kind or item, and a publish response
        asyncua could not decode (tag None; its values are lost: read them again).
        Returns the subscription and the nodes the server refused ({tag: status code})."""
        from asyncua import ua

        cfg = self.config
        problem = on_problem or _ignore_problem
        self._watch_publish_decoding(problem)
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = cfg.publishing_interval_ms
        params.RequestedLifetimeCount = 10000
        params.RequestedMaxKeepAliveCount = self.client.get_keepalive_count(cfg.publishing_interval_ms)
        params.MaxNotificationsPerPublish = 0  # no limit: the server sends all in one message
        params.PublishingEnabled = True
        subscription = _batch_subscription_class()(
            self.client.uaclient.session, params, sink, problem, columns_sink
        )
        await subscription.init()
        self.client._subscriptions.append(subscription)  # so disconnect() deletes it
        mfilter = _data_change_filter(cfg)
        refused: dict[str, int] = {}
        step = self.max_items_per_create
        for start in range(0, len(nodes), step):
            chunk = nodes[start : start + step]
            requests = []
            for node in chunk:
                request = subscription._make_monitored_item_request(
                    self.client.get_node(node.node_id),
                    ua.AttributeIds.Value,
                    mfilter,
                    cfg.queue_size,
                    ua.MonitoringMode.Reporting,
                    cfg.sampling_interval_ms,
                )
                subscription.tags[request.RequestedParameters.ClientHandle] = node.tag
                requests.append(request)
            for node, result in zip(chunk, await subscription.create_monitored_items(requests), strict=True):
                if isinstance(result, ua.StatusCode):
                    refused[node.tag] = result.value
        return subscription, refused

    def _watch_publish_decoding(self, problem: ProblemSink) -> None:
        """Publish responses take the fast path: the wrapper sends the PublishRequest as asyncua's
        `UaSession.publish` does and decodes the answer into columns (notifications.py); what
        that decoder leaves alone is decoded by asyncua as before. asyncua logs a publish response
        it cannot parse and carries on: the values in it are gone without a word. Hear of it, so
        it is counted and the values can be read again."""
        from asyncua import ua
        from asyncua.common.utils import Buffer
        from asyncua.ua.ua_binary import struct_from_binary
        from asyncua.ua.uaerrors import UaStructParsingError

        from protocols.opcua.notifications import FastPublishResponse, decode_publish

        session = self.client.uaclient.session
        if getattr(session, "_watched_publish", False):
            return

        async def publish(acks: list[Any]) -> Any:
            request = ua.PublishRequest()
            request.Parameters.SubscriptionAcknowledgements = acks if acks else []
            data = await session._send_request(request, timeout=0)
            if isinstance(data, Buffer):
                start = data._cur_pos
                columns = decode_publish(data._data, start, start + len(data))
            else:
                columns = decode_publish(data)
            if columns is not None:
                self.counters["publish_fast"] += 1
                return FastPublishResponse(columns)
            self.counters["publish_asyncua"] += 1
            try:
                return struct_from_binary(ua.PublishResponse, data)
            except Exception as exc:  # what asyncua's own publish() does, and counted
                session.logger.exception("Error parsing notification from server")
                problem(None, exc)
                raise UaStructParsingError from exc

        session.publish = publish
        session._watched_publish = True


ProblemSink = Callable[[str | None, BaseException | str], None]
"""(tag, or None for the whole message; the error) for what the value path could not deliver."""
ColumnsSink = Callable[[list[str], list[Any], list[int], list[Any], list[Any], set[int]], None]
"""(tags, values, status codes, source and server timestamps in epoch microseconds or None, the
Variant types met) of one publish response decoded into columns (notifications.py)."""


def _ignore_problem(tag: str | None, error: BaseException | str) -> None:
    pass


def _data_change_filter(cfg: OpcUaConfig) -> Any:
    from asyncua import ua

    if cfg.deadband.type == "none":
        return None
    flt = ua.DataChangeFilter()
    flt.Trigger = ua.DataChangeTrigger.StatusValue
    flt.DeadbandType = (
        ua.DeadbandType.Absolute if cfg.deadband.type == "absolute" else ua.DeadbandType.Percent
    )
    flt.DeadbandValue = cfg.deadband.value
    return flt


def _limit(values: list[Any], default: int) -> int:
    if values and values[0].StatusCode.is_good() and values[0].Value is not None and values[0].Value.Value:
        return int(values[0].Value.Value)
    return default


def _access_text(level: int | None) -> str | None:
    if level is None:
        return None
    parts = [name for bit, name in ((1, "read"), (2, "write"), (4, "history")) if level & bit]
    return ",".join(parts) or "none"


_SUBSCRIPTION_CLASS: type | None = None


def _batch_subscription_class() -> type:
    """A Subscription that hands each data change straight to a sink (no task per value).

    asyncua's handler path schedules one asyncio task per notification, which costs more than the
    value itself at tens of thousands of values a second; this walks the publish result directly.
    """
    global _SUBSCRIPTION_CLASS
    if _SUBSCRIPTION_CLASS is not None:
        return _SUBSCRIPTION_CLASS
    from asyncua import ua
    from asyncua.common.subscription import Subscription

    from protocols.opcua.notifications import FastPublishResult

    class BatchSubscription(Subscription):
        def __init__(
            self,
            session: Any,
            params: Any,
            sink: ValueSink,
            problem: ProblemSink = _ignore_problem,
            columns_sink: ColumnsSink | None = None,
        ):
            super().__init__(session, params, handler=_NoHandler())
            self.sink = sink
            self.problem = problem
            self.columns_sink = columns_sink
            self.tags: dict[int, str] = {}
            self.status_changes: list[int] = []

        async def publish_callback(self, publish_result: Any) -> None:
            # Nothing may escape: asyncua would log it and drop the rest of the message.
            try:
                if isinstance(publish_result, FastPublishResult):
                    self._columns(publish_result.columns)
                else:
                    self._walk(publish_result)
            except Exception as exc:
                self.problem(None, exc)

        def _columns(self, columns: Any) -> None:
            """A publish response decoded into columns: one call to `columns_sink`."""
            import time

            self.last_publish_at = time.monotonic()
            self.last_sequence_number = int(columns.sequence_number)
            if not columns.handles:
                return
            tag_of = self.tags.get
            tags = [tag_of(h) for h in columns.handles]
            values, codes = columns.values, columns.statuses
            source, server = columns.source_us, columns.server_us
            if None in tags:  # not ours: each one said, the others go on
                keep = []
                for i, (tag, handle) in enumerate(zip(tags, columns.handles, strict=True)):
                    if tag is None:
                        self.problem(None, f"a value for client handle {handle}, which is no item of ours")
                    else:
                        keep.append(i)
                tags = [tags[i] for i in keep]
                values, codes = [values[i] for i in keep], [codes[i] for i in keep]
                source, server = [source[i] for i in keep], [server[i] for i in keep]
                if not tags:
                    return
            if self.columns_sink is not None:
                self.columns_sink(tags, values, codes, source, server, columns.types)
                return
            sink, problem = self.sink, self.problem
            for tag, value, code, src, srv in zip(tags, values, codes, source, server, strict=True):
                try:
                    sink(tag, value, code, from_epoch_us(src), from_epoch_us(srv))
                except Exception as exc:
                    problem(tag, exc)

        def _walk(self, publish_result: Any) -> None:
            import time

            self.last_publish_at = time.monotonic()
            message = publish_result.NotificationMessage
            if message.NotificationData is None:
                return
            self.last_sequence_number = int(message.SequenceNumber)
            sink, tags, problem = self.sink, self.tags, self.problem
            for notification in message.NotificationData:
                if isinstance(notification, ua.DataChangeNotification):
                    for item in notification.MonitoredItems:
                        tag = tags.get(item.ClientHandle)
                        if tag is None:
                            problem(
                                None,
                                f"a value for client handle {item.ClientHandle}, which is no item of ours",
                            )
                            continue
                        try:
                            dv = item.Value
                            value = dv.Value.Value if dv.Value is not None else None
                            code = dv.StatusCode.value if dv.StatusCode is not None else 0
                            sink(tag, value, code, _utc(dv.SourceTimestamp), _utc(dv.ServerTimestamp))
                        except Exception as exc:
                            problem(tag, exc)
                elif isinstance(notification, ua.StatusChangeNotification):
                    self.status_changes.append(notification.Status.value)
                else:
                    problem(None, f"a notification of an unexpected kind ({type(notification).__name__})")

    _SUBSCRIPTION_CLASS = BatchSubscription
    return BatchSubscription


class _NoHandler:
    """Present so asyncua takes its handler path (no event queue); values go to the sink instead."""


async def abrowse(
    endpoint: str, node_id: str | None = None, *, pki_dir: Path | None = None, **config: Any
) -> list[dict[str, Any]]:
    """Children of `node_id` (default: Objects): node id, browse name, class, data type, access."""
    cfg = OpcUaConfig(endpoint=endpoint, browse_root=node_id or "i=85", **config)
    async with OpcUaSession(cfg, pki_dir=pki_dir) as session:
        return await session.browse(node_id)


def browse(
    endpoint: str, node_id: str | None = None, *, pki_dir: Path | None = None, **config: Any
) -> list[dict[str, Any]]:
    """The tag browser's call (blocking; runs its own short-lived loop). `config` takes the same
    security and identity keys as the source (security_policy, certificate, username...);
    `pki_dir` holds certificates trusted on first use (default: the default data directory's)."""
    return asyncio.run(abrowse(endpoint, node_id, pki_dir=pki_dir, **config))
