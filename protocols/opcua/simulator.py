"""A fault-injecting OPC UA server: N wind turbines from `protocols.windfarm`, served by asyncua.

Address space: Objects/WindFarm/Turbine01..N, each with WindSpeed, Power, RotorRpm, GearboxTemp
(and Aux05... when `tags_per_turbine` > 4), node ids `ns=2;s=Turbine01.Power`.

Faults: `restart()` (the server closes every connection and its sessions and subscriptions, and
listens again on the same port), `stall()` (values stop changing), `flip_quality()`
(values carry a Bad or Uncertain status), and `max_nodes_per_read` (declared in OperationLimits
and enforced: a larger Read is refused with BadTooManyOperations, as strict servers do).

`odd_nodes=True` adds Objects/Odd with values that real servers send and clients choke on: no
source timestamp, the zero DateTime (1601-01-01), text that is not UTF-8, byte strings, arrays,
NaN, UInt64 max; `inject_garbage()` then sends one value no client can decode (an ExtensionObject
whose body is cut short). `strict_channel=True` (or "fault") refuses an untrusted client
certificate already at OpenSecureChannel, with a ServiceFault, as node-opcua does (asyncua's own
server waits until CreateSession); `strict_channel="close"` just closes the connection there.

The server runs on its own thread and asyncio loop; the public methods are blocking and thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from protocols import windfarm
from protocols.serving import serve

NAMESPACE = "urn:data-aggregator:windfarm"
BASE_TAGS: list[tuple[str, Callable[[float, int], float]]] = [
    ("WindSpeed", windfarm.wind_speed),
    ("Power", windfarm.turbine_power_kw),
    ("RotorRpm", windfarm.rotor_rpm),
    ("GearboxTemp", windfarm.gearbox_temp_c),
]
SERVER_URI = "urn:data-aggregator:opcua-simulator"
ODD_NODES = (
    "NoSourceTime",
    "ZeroSourceTime",
    "ZeroTimes",
    "OldSourceTime",
    "NotUtf8",
    "Bytes",
    "Array",
    "NaN",
    "UInt64Max",
    "Garbage",
)
CLIENT_URI = "urn:data-aggregator:opcua-client"


def turbine_name(index: int) -> str:
    return f"Turbine{index + 1:02d}"


def tag_names(tags_per_turbine: int) -> list[str]:
    names = [name for name, _ in BASE_TAGS[:tags_per_turbine]]
    return names + [f"Aux{i + 1:02d}" for i in range(len(names), tags_per_turbine)]


def tag_value(name: str, t: float, turbine: int) -> float:
    for base, fn in BASE_TAGS:
        if base == name:
            return fn(t, turbine)
    return round(t % 1000.0 + turbine, 3)  # Aux: a ramp, different at every update


def make_certificate(folder: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A self-signed application certificate and key (PEM) for `uri`, written into `folder`."""
    from asyncua.crypto.cert_gen import (
        dump_private_key_as_pem,
        generate_private_key,
        generate_self_signed_app_certificate,
    )
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    folder.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    host = socket.gethostname()
    cert = generate_self_signed_app_certificate(
        key,
        name,
        {"organizationName": "Data Aggregator"},
        [x509.UniformResourceIdentifier(uri), x509.DNSName(host), x509.DNSName("localhost")],
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    key_path.write_bytes(dump_private_key_as_pem(key))
    return cert_path, key_path


class OpcUaSimulator:
    def __init__(
        self,
        port: int = 0,
        turbines: int = 10,
        tags_per_turbine: int = 4,
        interval_s: float = 0.1,
        security: bool = False,
        *,
        max_nodes_per_read: int = 0,
        security_modes: tuple[str, ...] = ("Sign", "SignAndEncrypt"),
        trusted_client_certificates: list[Path] | None = None,
        users: dict[str, str] | None = None,
        cert_dir: Path | None = None,
        odd_nodes: bool = False,
        strict_channel: bool | str = False,
    ):
        self.port = port
        self.turbines = turbines
        self.tags_per_turbine = tags_per_turbine
        self.interval_s = interval_s
        self.security = security
        self.security_modes = security_modes
        self.max_nodes_per_read = max_nodes_per_read
        self.trusted_client_certificates = trusted_client_certificates
        self.users = users
        self.read_requests = 0  # Read service calls from clients (the chunking test counts them)
        self.updates = 0  # update rounds done
        self._stalled = False
        self._status = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._updater: asyncio.Task[None] | None = None
        self._node_ids: list[tuple[Any, str, int]] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.cert_dir = cert_dir
        self.server_certificate: Path | None = None
        self.odd_nodes = odd_nodes
        self.strict_channel = strict_channel
        self._odd: dict[str, Any] = {}  # name -> node id of the Objects/Odd variables

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/windfarm"

    @property
    def tag_count(self) -> int:
        return self.turbines * self.tags_per_turbine

    def node_ids(self) -> list[str]:
        return [
            f"ns=2;s={turbine_name(t)}.{name}"
            for t in range(self.turbines)
            for name in tag_names(self.tags_per_turbine)
        ]

    def start(self) -> OpcUaSimulator:
        from protocols.opcua.client import quiet_asyncua

        quiet_asyncua()  # asyncua's notices ("No signing policy available"...) go to a debug log
        _skip_datavalue_deepcopy()
        if self.security and self.cert_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="opcua-sim-")
            self.cert_dir = Path(self._tmp.name)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="opcua-simulator", daemon=True)
        self._thread.start()
        self._call(self._start_server())
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._stop_server())
        with contextlib.suppress(Exception):
            self._call(_cancel_pending())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop.close()
        self._loop = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> OpcUaSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        assert self._loop is not None, "the simulator is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # --- faults --------------------------------------------------------------------------------

    def restart(self, down_s: float = 0.0) -> None:
        """The server goes away (sockets closed, sessions and subscriptions forgotten), stays away
        `down_s`, and comes back on the same port. The address space is kept: rebuilding it costs
        seconds, and clients cannot tell the difference."""
        self.go_down()
        time.sleep(down_s)
        self.come_back()

    def go_down(self) -> None:
        self._call(self._unbind())

    def come_back(self) -> None:
        self._call(self._bind())

    def set_max_nodes_per_read(self, limit: int) -> None:
        """Declare (and enforce) a new MaxNodesPerRead; 0 means no limit."""
        self.max_nodes_per_read = limit
        self._call(self._declare_limits(self._server))

    def subscriptions(self) -> int:
        """How many subscriptions clients hold on the server now (a client is listening)."""
        server = self._server
        return 0 if server is None else len(server.iserver.subscription_service.subscriptions)

    def stall(self, stalled: bool = True) -> None:
        """Stop (or resume) updating the values; the server still answers."""
        self._stalled = stalled

    def flip_quality(self, quality: str = "bad") -> None:
        """From now on every value carries a Bad (BadNoCommunication) or Uncertain
        (UncertainLastUsableValue) status; `flip_quality("good")` heals it."""
        from asyncua import ua

        codes = {
            "bad": ua.StatusCodes.BadNoCommunication,
            "uncertain": ua.StatusCodes.UncertainLastUsableValue,
            "good": ua.StatusCodes.Good,
        }
        self._status = codes[quality]
        self._call(self._update_all(time.time()))

    def inject_garbage(self) -> None:
        """Odd.Garbage (odd_nodes=True) takes a value no client can decode: an ExtensionObject that
        claims to be an Argument but whose body is cut short. Every Read or publish response that
        carries it fails to parse on the client."""
        from asyncua import ua

        assert self._odd, "inject_garbage() needs odd_nodes=True"
        body = ua.ExtensionObject(
            TypeId=ua.NodeId(ua.ObjectIds.Argument_Encoding_DefaultBinary), Body=b"\x05\x00\x00"
        )
        dv = ua.DataValue(ua.Variant(body, ua.VariantType.ExtensionObject))
        self._call(self._server.write_attribute_value(self._odd["Garbage"], dv))

    def clear_garbage(self) -> None:
        """Odd.Garbage is empty again."""
        from asyncua import ua

        self._call(self._server.write_attribute_value(self._odd["Garbage"], ua.DataValue(ua.Variant())))

    # --- server --------------------------------------------------------------------------------

    async def _start_server(self) -> None:
        from asyncua import Server, ua

        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/windfarm")
        server.set_server_name("Data Aggregator wind-farm simulator")
        await server.set_application_uri(SERVER_URI)
        if self.security:
            await self._secure(server)
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.users is not None:
            server.iserver.user_manager = _PasswordUsers(self.users)
            server.set_identity_tokens([ua.UserNameIdentityToken])
        idx = await server.register_namespace(NAMESPACE)
        farm = await server.nodes.objects.add_folder(
            ua.NodeId("WindFarm", idx), ua.QualifiedName("WindFarm", idx)
        )
        self._node_ids = []
        now = time.time()
        for t in range(self.turbines):
            tname = turbine_name(t)
            turbine = await farm.add_object(ua.NodeId(tname, idx), ua.QualifiedName(tname, idx))
            for name in tag_names(self.tags_per_turbine):
                var = await turbine.add_variable(
                    ua.NodeId(f"{tname}.{name}", idx), ua.QualifiedName(name, idx), tag_value(name, now, t)
                )
                await var.set_writable()
                self._node_ids.append((var.nodeid, name, t))
        if self.odd_nodes:
            await self._add_odd_nodes(server, idx)
        if self.strict_channel:
            how = "fault" if self.strict_channel is True else str(self.strict_channel)
            _refuse_untrusted_at_open(server, self.trusted_client_certificates or [], how)
        await self._declare_limits(server)
        await server.start()
        if self.port == 0:
            self.port = server.bserver.port
        self._server = server
        self._updater = asyncio.create_task(self._update_loop())

    async def _secure(self, server: Any) -> None:
        from asyncua import ua

        assert self.cert_dir is not None
        cert, key = make_certificate(self.cert_dir, "simulator", SERVER_URI)
        self.server_certificate = cert
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        modes = {
            "Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
            "SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        }
        server.set_security_policy([modes[m] for m in self.security_modes])
        if self.trusted_client_certificates is not None:
            from cryptography import x509

            trusted = {
                x509.load_pem_x509_certificate(Path(p).read_bytes()).fingerprint(_sha256())
                for p in self.trusted_client_certificates
            }

            async def validate(certificate: Any, app: Any) -> None:
                from asyncua.common.utils import ServiceError

                if certificate.fingerprint(_sha256()) not in trusted:
                    raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

            server.set_certificate_validator(validate)

    async def _add_odd_nodes(self, server: Any, idx: int) -> None:
        from asyncua import ua

        folder = await server.nodes.objects.add_folder(ua.NodeId("Odd", idx), ua.QualifiedName("Odd", idx))
        for name, (variant, _, _) in self._odd_values(0).items():
            # Garbage starts empty with a structure data type: the server then takes any value.
            datatype = ua.NodeId(ua.ObjectIds.Argument) if name == "Garbage" else None
            var = await folder.add_variable(
                ua.NodeId(f"Odd.{name}", idx), ua.QualifiedName(name, idx), variant, datatype=datatype
            )
            self._odd[name] = var.nodeid
        await self._update_odd(server)

    def _odd_values(self, n: int) -> dict[str, tuple[Any, Any, Any]]:
        """name -> (variant, source timestamp, server timestamp) of update round `n`: a new value
        each round (so subscriptions notify), with the odd part kept."""
        from datetime import UTC, datetime

        from asyncua import ua

        stamp = datetime.now(UTC)
        zero = datetime(1601, 1, 1, tzinfo=UTC)  # encoded as DateTime 0
        double = ua.VariantType.Double
        return {
            "NoSourceTime": (ua.Variant(float(n), double), None, stamp),
            "ZeroSourceTime": (ua.Variant(float(n), double), zero, stamp),
            "ZeroTimes": (ua.Variant(float(n), double), zero, zero),
            # a PLC whose clock was never set: 1970 plus its uptime
            "OldSourceTime": (ua.Variant(float(n), double), datetime(1970, 1, 1, 0, 5, tzinfo=UTC), stamp),
            # surrogateescape: asyncua sends these as the raw bytes 0xff 0xfe, which are not UTF-8
            "NotUtf8": (ua.Variant(f"\udcff\udcfe{n}", ua.VariantType.String), stamp, stamp),
            "Bytes": (ua.Variant(bytes([n % 256, 0, 255]), ua.VariantType.ByteString), stamp, stamp),
            "Array": (ua.Variant([float(n), 2.0, 3.0], double), stamp, stamp),
            "NaN": (ua.Variant(float("nan") if n % 2 else float("inf"), double), stamp, stamp),
            "UInt64Max": (ua.Variant(2**64 - 1 - n % 2, ua.VariantType.UInt64), stamp, stamp),
            "Garbage": (ua.Variant(), None, None),
        }

    async def _update_odd(self, server: Any) -> None:
        from asyncua import ua

        for name, (variant, source_ts, server_ts) in self._odd_values(self.updates).items():
            if name != "Garbage":  # empty until inject_garbage()
                dv = ua.DataValue(variant, SourceTimestamp=source_ts, ServerTimestamp=server_ts)
                await server.write_attribute_value(self._odd[name], dv)

    async def _declare_limits(self, server: Any) -> None:
        from asyncua import ua

        node = server.get_node(
            ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
        )
        await node.write_value(ua.Variant(self.max_nodes_per_read, ua.VariantType.UInt32))
        service = server.iserver.attribute_service
        if getattr(service, "_limited", False):
            return
        plain_read = service.read

        def read(params: Any) -> Any:
            from asyncua.common.utils import ServiceError

            self.read_requests += 1
            if self.max_nodes_per_read and len(params.NodesToRead) > self.max_nodes_per_read:
                raise ServiceError(ua.StatusCodes.BadTooManyOperations)
            return plain_read(params)

        service.read = read
        service._limited = True

    async def _unbind(self) -> None:
        server = self._server
        if server is None or server.bserver is None:
            return
        await server.bserver.stop()
        server.bserver = None
        for session in list(server.iserver._external_sessions.values()):
            with contextlib.suppress(Exception):
                await session.close_session(delete_subs=True)

    async def _bind(self) -> None:
        from asyncua.server.binary_server_asyncio import BinaryServer

        server = self._server
        if server is None or server.bserver is not None:
            return
        server.bserver = BinaryServer(server.iserver, "127.0.0.1", self.port, server.limits)
        server.bserver.set_policies(server._policies)
        await server.bserver.start()

    async def _stop_server(self) -> None:
        if self._updater is not None:
            self._updater.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._updater
            self._updater = None
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def _update_loop(self) -> None:
        next_at = time.monotonic()
        while True:
            if not self._stalled:
                await self._update_all(time.time())
                self.updates += 1
                if self._odd and self._server is not None:
                    await self._update_odd(self._server)
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _update_all(self, now: float) -> None:
        from asyncua import ua

        server = self._server
        if server is None:
            return
        status = ua.StatusCode(self._status)
        from datetime import UTC, datetime

        stamp = datetime.fromtimestamp(now, UTC)
        for node_id, name, turbine in self._node_ids:
            dv = ua.DataValue(
                ua.Variant(float(tag_value(name, now, turbine)), ua.VariantType.Double),
                StatusCode=status,
                SourceTimestamp=stamp,
                ServerTimestamp=stamp,
            )
            await server.write_attribute_value(node_id, dv)


def _skip_datavalue_deepcopy() -> None:
    """asyncua's server deep-copies every DataValue it notifies (75% of its CPU at 25k changes/s,
    about 90 us a value) in case the writer mutates the value later. The simulator writes a fresh
    DataValue every time, and network writes are fresh decoded objects, so a shallow hand-over is
    safe here. This changes asyncua's class for the process: only simulators call it."""
    from asyncua.server.monitored_item_service import MonitoredItemValues

    def set_current_datavalue(self: Any, cur_val: Any) -> None:
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = cur_val

    MonitoredItemValues.set_current_datavalue = set_current_datavalue


async def _cancel_pending() -> None:
    """asyncua leaves session and subscription tasks behind on stop; end them before the loop closes."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class _PasswordUsers:
    """Username/password identity: a wrong password gets no user (the server refuses the session)."""

    def __init__(self, users: dict[str, str]):
        self.users = users

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ):
        from asyncua.crypto.permission_rules import User, UserRole

        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


def _refuse_untrusted_at_open(server: Any, trusted: list[Path], how: str = "fault") -> None:
    """Make this server answer OpenSecureChannel from an untrusted client certificate with a
    ServiceFault (BadSecurityChecksFailed) in an OPN message, as node-opcua does (`how="fault"`),
    or close the connection (`how="close"`). asyncua's processor class is patched once; only
    servers marked here are strict."""
    if how not in ("fault", "close"):
        raise ValueError(f"strict_channel: 'fault' or 'close', not {how!r}")
    from asyncua import ua
    from asyncua.server.uaprocessor import UaProcessor
    from asyncua.ua.ua_binary import struct_from_binary
    from cryptography import x509

    server.iserver._strict_trusted = {
        x509.load_pem_x509_certificate(Path(p).read_bytes()).fingerprint(_sha256()) for p in trusted
    }
    server.iserver._strict_how = how
    if getattr(UaProcessor, "_strict_patched", False):
        return
    plain_open = UaProcessor.open_secure_channel

    def open_secure_channel(self: Any, algohdr: Any, seqhdr: Any, body: Any) -> Any:
        strict = getattr(self.iserver, "_strict_trusted", None)
        sender = getattr(algohdr, "SenderCertificate", None)
        if strict is None or not sender:
            return plain_open(self, algohdr, seqhdr, body)
        if x509.load_der_x509_certificate(sender).fingerprint(_sha256()) in strict:
            return plain_open(self, algohdr, seqhdr, body)
        if self.iserver._strict_how == "close":
            self._transport.close()
            return None
        request = struct_from_binary(ua.OpenSecureChannelRequest, body)
        self._connection.select_policy(algohdr.SecurityPolicyURI, sender, request.Parameters.SecurityMode)
        fault = ua.ServiceFault()
        fault.ResponseHeader.ServiceResult = ua.StatusCode(ua.StatusCodes.BadSecurityChecksFailed)
        self.send_response(request.RequestHeader.RequestHandle, seqhdr, fault, ua.MessageType.SecureOpen)
        return None

    UaProcessor.open_secure_channel = open_secure_channel
    UaProcessor._strict_patched = True


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def run_cli(port: int, tags: int, seconds: float | None = None) -> None:
    """`aggregator simulate opcua`: serve about `tags` tags (4 per turbine) until Ctrl-C or `seconds`."""
    turbines = max(1, -(-tags // 4))
    sim = OpcUaSimulator(port=port, turbines=turbines, tags_per_turbine=4 if tags >= 4 else tags)
    sim.start()
    print(f"OPC UA simulator on {sim.endpoint}: {sim.tag_count} tags under Objects/WindFarm", flush=True)
    serve(sim.stop, seconds)
