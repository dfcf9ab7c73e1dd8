"""``hyco forward``: port forwarding over a relay, compatible with Azure Relay Bridge (``azbridge``).

Theory of operation:

* A **local forwarder** (``-L [bind_address:]port:relay_name``, or ``-L socket_path:relay_name``) listens on a
  local TCP port or unix socket. For every connection it opens one relayed stream to the hybrid connection
  (:meth:`HybridConnectionClient.connect`) and pipes the two (:func:`hyco.tools.pipe.pipe`).
* A **remote forwarder** (``-R relay_name:[host:]port``, or ``-R relay_name:socket_path``) listens on the
  hybrid connection (:class:`HybridConnectionListener`, which reconnects forever with the official back-off,
  protocol.md 2.9). Its accept handler first connects to the target; if the target refuses or cannot be
  reached, the sender is **rejected** with 502 and the reason (protocol.md 3.3), so the local forwarder can
  say why and close its client's connection. Otherwise the stream is accepted and piped to the target.
  Streams already accepted are independent of the control channel: they keep flowing while it reconnects.
* **UDP** (``/udp`` or azbridge's ``U`` suffix on the port): the local forwarder keeps one relayed stream per
  client address (a *session*); every datagram travels as one binary WebSocket message, so datagram
  boundaries survive. A session that carries no datagram for ``udp_idle_timeout`` seconds is closed on the
  side that notices first, and the other side follows when it sees the Close.
* :class:`Forwarder` runs any number of mappings in one process. Each finished connection is logged in one
  line: where from, bytes each way, duration, and how it ended.

Only the public SDK (``hyco.client``) is used; never the relay internals (design.md, layering).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import re
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from hyco.client.credentials import TokenProvider
from hyco.client.listener import AcceptContext, HybridConnectionListener, ListenerState
from hyco.client.sender import HybridConnectionClient
from hyco.client.stream import HybridConnectionStream
from hyco.exceptions import (
    ConnectionRejected,
    HycoError,
    InvalidConnectionString,
    InvalidInput,
    RelayTimeout,
)
from hyco.protocol.connection_string import RelayConnectionString
from hyco.protocol.uri import parse_address
from hyco.tools.pipe import DEFAULT_CHUNK_SIZE, PipeEnd, PipeResult, pipe

__all__ = [
    "DEFAULT_TARGET_CONNECT_TIMEOUT",
    "DEFAULT_UDP_IDLE_TIMEOUT",
    "ForwardError",
    "Forwarder",
    "LocalForward",
    "LocalForwarder",
    "Protocol",
    "RelayCredentials",
    "RemoteForward",
    "RemoteForwarder",
]

logger = logging.getLogger("hyco.tools.forward")

#: azbridge's ``ConnectTimeout``: how long the remote side tries to reach its target before rejecting.
DEFAULT_TARGET_CONNECT_TIMEOUT = 10.0
#: A UDP session with no datagram either way for this long is closed (seconds).
DEFAULT_UDP_IDLE_TIMEOUT = 60.0
#: Datagrams waiting for a session's relayed stream; more are dropped, as a full UDP buffer would.
_UDP_QUEUE = 256
#: Largest UDP payload read from a socket.
_UDP_MAX = 65535
#: Status a remote forwarder rejects senders with when its target cannot be reached (502 Bad Gateway).
TARGET_UNREACHABLE_STATUS = 502


class ForwardError(HycoError):
    """A forwarding could not be set up (port in use, bad socket path, ...). The message says what to do."""


class Protocol(enum.StrEnum):
    """What a mapping carries."""

    TCP = "tcp"
    UDP = "udp"


# ---------------------------------------------------------------------------------------------- specs

_PORT = re.compile(r"^(\d+)(U|/udp|/tcp)?$", re.IGNORECASE)


def _parse_port(text: str, what: str) -> tuple[int, Protocol] | None:
    """``5000`` → (5000, tcp); ``5000U`` or ``5000/udp`` → (5000, udp); not a port → None."""
    match = _PORT.match(text.strip())
    if not match:
        if "/" in text and text.split("/", 1)[0].isdigit():
            raise InvalidInput(
                f"{what}: {text!r}: only /udp or /tcp may follow a port (azbridge port names for "
                "multiplexing are not supported by hyco)"
            )
        return None
    port = int(match.group(1))
    if not 0 <= port <= 65535:
        raise InvalidInput(f"{what}: port {port} is not from 0 to 65535")
    suffix = (match.group(2) or "").lower()
    return port, Protocol.UDP if suffix in ("u", "/udp") else Protocol.TCP


def _split_host_port(text: str) -> tuple[str, str] | None:
    """``host:port`` or ``[v6]:port`` → (host, port); no colon → None."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            return None
        return text[1:close], text[close + 2 :]
    host, sep, port = text.rpartition(":")
    if not sep:
        return None
    return host, port


def _check_relay_name(name: str, what: str) -> str:
    name = name.strip().strip("/")
    if not name:
        raise InvalidInput(f"{what}: the relay name (hybrid connection) is empty")
    return name


def _check_endpoint(
    kind: str, relay_name: str, port: int | None, local_socket: str | None, protocol: Protocol
) -> None:
    """The rules both mapping kinds share: a port or a unix socket (not both), and no UDP over a socket."""
    if (port is None) == (local_socket is None):
        raise InvalidInput(f"{kind} {relay_name!r}: give either a port or a local_socket")
    if local_socket is not None and protocol is Protocol.UDP:
        raise InvalidInput(f"{kind} {relay_name!r}: UDP over a unix socket is not supported")


@dataclass(frozen=True, slots=True)
class LocalForward:
    """One ``-L`` mapping: a local TCP port, UDP port or unix socket bound to a hybrid connection.

    Attributes:
        relay_name: the hybrid connection to open streams to.
        bind_address: local address to listen on (TCP/UDP).
        port: local port (0 picks a free one; see :attr:`LocalForwarder.addresses`).
        local_socket: unix socket path to listen on instead of a port.
        protocol: ``tcp`` or ``udp``.
    """

    relay_name: str
    bind_address: str = "127.0.0.1"
    port: int | None = None
    local_socket: str | None = None
    protocol: Protocol = Protocol.TCP

    def __post_init__(self) -> None:
        _check_endpoint("LocalForward", self.relay_name, self.port, self.local_socket, self.protocol)

    @classmethod
    def parse(cls, text: str, *, default_bind_address: str = "127.0.0.1") -> LocalForward:
        """Parse azbridge's ``-L`` forms.

        ``port:relay``, ``bind_address:port:relay``, ``[v6addr]:port:relay``, ``socket_path:relay``; the port
        may end in ``/udp`` (or azbridge's ``U``, as in ``5353U``) for UDP.

        Raises:
            InvalidInput: the text is none of these forms; the message says which part is wrong.
        """
        what = f"-L {text}"
        local, sep, relay = text.rpartition(":")
        if not sep or not local:
            raise InvalidInput(f"{what}: expected [bind_address:]port:relay_name or socket_path:relay_name")
        relay = _check_relay_name(relay, what)
        port = _parse_port(local, what)
        if port is not None:
            return cls(relay, default_bind_address, port[0], None, port[1])
        hostport = _split_host_port(local)
        if hostport is not None:
            port = _parse_port(hostport[1], what)
            if port is not None:
                host = hostport[0]
                bind = "" if host in ("", "*") else host
                return cls(relay, bind, port[0], None, port[1])
            if not ("/" in local or local.startswith(".")):
                raise InvalidInput(f"{what}: {hostport[1]!r} is not a port number")
        if ":" in local and "/" not in local:
            raise InvalidInput(f"{what}: expected [bind_address:]port:relay_name or socket_path:relay_name")
        return cls(relay, local_socket=local)

    def describe(self) -> str:
        """``127.0.0.1:5000/tcp``, ``/run/x.sock``: the local end, for logs."""
        if self.local_socket is not None:
            return self.local_socket
        host = f"[{self.bind_address}]" if ":" in self.bind_address else self.bind_address or "*"
        return f"{host}:{self.port}/{self.protocol.value}"


@dataclass(frozen=True, slots=True)
class RemoteForward:
    """One ``-R`` mapping: a hybrid connection bound to a target host and port, or unix socket.

    Attributes:
        relay_name: the hybrid connection to listen on.
        host: the target host (default: this machine).
        port: the target port.
        local_socket: a unix socket path to connect to instead.
        protocol: ``tcp`` or ``udp``.
    """

    relay_name: str
    host: str = "localhost"
    port: int | None = None
    local_socket: str | None = None
    protocol: Protocol = Protocol.TCP

    def __post_init__(self) -> None:
        _check_endpoint("RemoteForward", self.relay_name, self.port, self.local_socket, self.protocol)
        if self.port == 0:
            raise InvalidInput(f"RemoteForward {self.relay_name!r}: the target port cannot be 0")

    @classmethod
    def parse(cls, text: str) -> RemoteForward:
        """Parse azbridge's ``-R`` forms.

        ``relay:port``, ``relay:host:port``, ``relay:[v6addr]:port``, ``relay:socket_path``; the port may end
        in ``/udp`` (or ``U``) for UDP.

        Raises:
            InvalidInput: the text is none of these forms.
        """
        what = f"-R {text}"
        relay, sep, target = text.partition(":")
        if not sep or not target:
            raise InvalidInput(f"{what}: expected relay_name:[host:]port or relay_name:socket_path")
        relay = _check_relay_name(relay, what)
        port = _parse_port(target, what)
        if port is not None:
            return cls(relay, "localhost", port[0], None, port[1])
        hostport = _split_host_port(target)
        if hostport is not None and hostport[0]:
            port = _parse_port(hostport[1], what)
            if port is not None:
                return cls(relay, hostport[0], port[0], None, port[1])
            if "/" not in target:
                raise InvalidInput(f"{what}: {hostport[1]!r} is not a port number")
        return cls(relay, local_socket=target)

    def describe(self) -> str:
        """``db.internal:5432/tcp``, ``/run/x.sock``: the target, for logs."""
        if self.local_socket is not None:
            return self.local_socket
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.protocol.value}"


# ---------------------------------------------------------------------------------------------- credentials


@dataclass(frozen=True, slots=True)
class RelayCredentials:
    """Where the relay is and how to authorize: a namespace endpoint plus a token provider.

    Attributes:
        endpoint: the namespace, e.g. ``sb://contoso.servicebus.windows.net/`` or ``ws://127.0.0.1:9350/``.
        token_provider: tokens for listening and sending (None: the hybrid connection needs no sender auth;
            a remote forwarder always needs one).
        entity_path: the ``EntityPath`` of the connection string; when set, it is the only valid relay name.
        client_options: extra keyword arguments for :class:`HybridConnectionClient` and
            :class:`HybridConnectionListener` (``ssl=``, ``ca_file=``, ``proxy=``).
    """

    endpoint: str
    token_provider: TokenProvider | None = None
    entity_path: str | None = None
    client_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str | None,
        *,
        endpoint: str | None = None,
        key_name: str | None = None,
        key: str | None = None,
        sas: str | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> RelayCredentials:
        """Combine a connection string with azbridge's overrides (``-E``, ``-K``, ``-k``, ``-s``).

        Raises:
            InvalidConnectionString: the connection string is malformed, or there is no endpoint at all.
        """
        cs = RelayConnectionString.parse(connection_string) if connection_string else None
        endpoint = endpoint or (cs.endpoint if cs else None)
        if not endpoint:
            raise InvalidConnectionString(
                "no relay endpoint: pass -x CONNECTION_STRING (or set AZURE_BRIDGE_CONNECTIONSTRING) "
                "or -E URI"
            )
        if cs is not None and cs.authentication:
            raise InvalidConnectionString(
                f"Authentication={cs.authentication} is not supported by hyco; use a SharedAccessKey"
            )
        key_name = key_name or (cs.shared_access_key_name if cs else None)
        key = key or (cs.shared_access_key if cs else None)
        sas = sas or (cs.shared_access_signature if cs else None)
        provider: TokenProvider | None = None
        if sas:
            provider = TokenProvider.from_sas(sas)
        elif key:
            provider = TokenProvider.from_shared_access_key(key_name or "RootManageSharedAccessKey", key)
        parse_address(endpoint, "probe")  # validate the endpoint once, here (raises InvalidURI)
        return cls(endpoint, provider, cs.entity_path if cs else None, dict(client_options or {}))

    def address_of(self, relay_name: str) -> tuple[str, str]:
        """The ``(address, path)`` pair for the SDK's ``address``/``path`` arguments.

        Raises:
            InvalidInput: the connection string names another hybrid connection (``EntityPath``).
        """
        if self.entity_path and self.entity_path.strip("/") != relay_name:
            raise InvalidInput(
                f"the connection string is for hybrid connection {self.entity_path!r}; it cannot be used "
                f"for {relay_name!r}"
            )
        return self.endpoint, relay_name


# ---------------------------------------------------------------------------------------------- logging


def _peer_name(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(peer) if peer else "unix"


def _log_end(prefix: str, who: str, to_relay: int, from_relay: int, seconds: float, how: str) -> None:
    logger.info(
        "%s %s closed: %d B to relay, %d B from relay, %.3f s, %s",
        prefix,
        who,
        to_relay,
        from_relay,
        seconds,
        how,
    )


async def _idle_watch(last: list[float], idle: float) -> None:
    """Return once ``last[0]`` (a monotonic timestamp, refreshed by traffic) is ``idle`` seconds old."""
    while True:
        remaining = last[0] + idle - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.sleep(remaining)


# ---------------------------------------------------------------------------------------------- local side


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, owner: LocalForwarder) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.owner._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("! %s: %s", self.owner.prefix, exc)


@dataclass
class _UdpSession:
    peer: tuple[Any, ...]
    queue: asyncio.Queue[bytes]
    last: list[float]
    task: asyncio.Task[None] | None = None


class LocalForwarder:
    """Serves one :class:`LocalForward`: each local connection (or UDP peer) gets its own relayed stream.

    Args:
        spec: the mapping.
        credentials: relay endpoint and tokens.
        connect_timeout: seconds to wait for the remote side to accept (None: the SDK's 70 s).
        udp_idle_timeout: seconds after which a silent UDP session is closed.
        chunk_size: largest local read (one WebSocket message).

    Use ``async with`` or :meth:`start` / :meth:`close`.
    """

    def __init__(
        self,
        spec: LocalForward,
        credentials: RelayCredentials,
        *,
        connect_timeout: float | None = None,
        udp_idle_timeout: float = DEFAULT_UDP_IDLE_TIMEOUT,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        address, path = credentials.address_of(spec.relay_name)
        self.spec = spec
        self.client = HybridConnectionClient(
            address,
            credentials.token_provider,
            path=path,
            connect_timeout=connect_timeout,
            **credentials.client_options,
        )
        self.udp_idle_timeout = udp_idle_timeout
        self.chunk_size = chunk_size
        self.prefix = f"-L {spec.describe()} -> {spec.relay_name}:"
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._sessions: dict[tuple[Any, ...], _UdpSession] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Connections (TCP) or sessions (UDP) served so far, and open now.
        self.total = 0
        self.active = 0

    def __repr__(self) -> str:
        return f"<LocalForwarder {self.prefix.rstrip(':')}>"

    @property
    def addresses(self) -> list[Any]:
        """Where this forwarder listens: ``(host, port)`` tuples (the real port for port 0) or a path."""
        if self._server is not None:
            return [s.getsockname() for s in self._server.sockets]
        if self._udp is not None:
            return [self._udp.get_extra_info("sockname")]
        return []

    async def start(self) -> None:
        """Bind the local port or socket and start serving.

        Raises:
            ForwardError: the port is in use, the address is not local, or the socket path is unusable.
        """
        loop = asyncio.get_running_loop()
        spec = self.spec
        host = spec.bind_address or None
        try:
            if spec.local_socket is not None:
                _remove_stale_socket(spec.local_socket)
                self._server = await asyncio.start_unix_server(self._handle, spec.local_socket)
            elif spec.protocol is Protocol.UDP:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpServer(self),
                    local_addr=(host or "0.0.0.0", spec.port or 0),  # noqa: S104
                )
                self._udp = transport
            else:
                self._server = await asyncio.start_server(self._handle, host, spec.port)
        except OSError as exc:
            raise ForwardError(f"cannot listen on {spec.describe()}: {_os_reason(exc)}") from exc
        bound = ", ".join(_peer_name(a) if isinstance(a, tuple) else str(a) for a in self.addresses)
        logger.info("%s listening on %s", self.prefix, bound)

    async def close(self) -> None:
        """Stop listening and close every open connection. Idempotent."""
        if self._server is not None:
            self._server.close()
        if self._udp is not None:
            self._udp.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        self._udp = None

    async def __aenter__(self) -> LocalForwarder:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _track(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- TCP and unix sockets

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        who = _peer_name(writer.get_extra_info("peername"))
        self.total += 1
        self.active += 1
        started = time.monotonic()
        try:
            try:
                stream = await self.client.connect()
            except ConnectionRejected as exc:
                writer.transport.abort()
                _log_end(
                    self.prefix, who, 0, 0, time.monotonic() - started,
                    f"refused by the remote side: {exc.http_status} {exc.description}",
                )  # fmt: skip
                return
            except HycoError as exc:
                writer.transport.abort()
                _log_end(self.prefix, who, 0, 0, time.monotonic() - started, f"relay error: {exc}")
                return
            except asyncio.CancelledError:
                writer.transport.abort()
                raise
            logger.info("%s %s opened (stream %s)", self.prefix, who, stream.tracking_id)
            result = await pipe(reader, writer, stream, chunk_size=self.chunk_size)
            how = result.end.value if result.error is None else _how(result)
            _log_end(self.prefix, who, result.to_relay, result.from_relay, time.monotonic() - started, how)
        except asyncio.CancelledError:
            _log_end(self.prefix, who, 0, 0, time.monotonic() - started, PipeEnd.CANCELLED.value)
            raise
        finally:
            self.active -= 1

    # -- UDP

    def _datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        session = self._sessions.get(addr)
        if session is None:
            session = _UdpSession(addr, asyncio.Queue(_UDP_QUEUE), [time.monotonic()])
            self._sessions[addr] = session
            session.task = self._track(self._udp_session(session))
        session.last[0] = time.monotonic()
        with contextlib.suppress(asyncio.QueueFull):  # UDP: drop rather than buffer without bound
            session.queue.put_nowait(data)

    async def _udp_session(self, session: _UdpSession) -> None:
        who = _peer_name(session.peer)
        self.total += 1
        self.active += 1
        started = time.monotonic()
        counts = [0, 0]
        how = "idle"
        stream: HybridConnectionStream | None = None
        try:
            try:
                stream = await self.client.connect()
            except HycoError as exc:
                how = f"relay error: {exc}"
                return
            logger.info("%s %s opened (udp session %s)", self.prefix, who, stream.tracking_id)
            how = await _udp_relay(
                stream,
                session.queue,
                lambda data: self._send_to(data, session.peer),
                session.last,
                self.udp_idle_timeout,
                counts,
            )
        except asyncio.CancelledError:
            how = PipeEnd.CANCELLED.value
            raise
        finally:
            self._sessions.pop(session.peer, None)
            self.active -= 1
            if stream is not None:
                with contextlib.suppress(HycoError, OSError):
                    await stream.close()
            _log_end(self.prefix, who, counts[0], counts[1], time.monotonic() - started, how)

    def _send_to(self, data: bytes, peer: tuple[Any, ...]) -> None:
        if self._udp is not None:
            self._udp.sendto(data, peer)


async def _udp_relay(
    stream: HybridConnectionStream,
    outgoing: asyncio.Queue[bytes],
    deliver: Callable[[bytes], None],
    last: list[float],
    idle: float,
    counts: list[int],
) -> str:
    """Move datagrams between a queue/deliver pair and a relayed stream until idle, closed or broken.

    Returns how the session ended.
    """

    async def up() -> str:
        while True:
            data = await outgoing.get()
            await stream.send_bytes(data)
            counts[0] += len(data)

    async def down() -> str:
        while (message := await stream.receive()) is not None:
            data = message.encode() if isinstance(message, str) else message
            last[0] = time.monotonic()
            counts[1] += len(data)
            deliver(data)
        return "closed by the remote side"

    async def watch() -> str:
        await _idle_watch(last, idle)
        return f"idle for {idle:g} s"

    tasks = [asyncio.ensure_future(c) for c in (up(), down(), watch())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = done.pop()
        exc = first.exception()
        if exc is not None:
            return f"relay error: {exc}"
        return first.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _how(result: PipeResult) -> str:
    return f"{result.end.value}: {result.error}"


def _os_reason(exc: OSError) -> str:
    if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
        return "the address is already in use (another program listens there; pick another port)"
    if exc.errno in (99, 49, 10049):  # EADDRNOTAVAIL
        return "the address is not one of this machine's addresses"
    if exc.errno in (13, 10013):  # EACCES
        return "permission denied (ports below 1024 need privileges)"
    return exc.strerror or str(exc)


def _remove_stale_socket(path: str) -> None:
    """Remove a unix socket file nobody listens on any more (as ssh's ``StreamLocalBindUnlink``)."""
    if not os.path.exists(path):
        return
    if not stat.S_ISSOCK(os.stat(path).st_mode):
        raise ForwardError(f"cannot listen on {path}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody answers: stale
    else:
        raise ForwardError(f"cannot listen on {path}: another process is listening on that socket")
    finally:
        probe.close()


# ---------------------------------------------------------------------------------------------- remote side


class _UdpTarget(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[bytes], last: list[float]) -> None:
        self.queue = queue
        self.last = last

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.last[0] = time.monotonic()
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: UDP has no connection to fail, so just note it.
        logger.debug("! udp target: %s", exc)


class RemoteForwarder:
    """Serves one :class:`RemoteForward`: listens on the hybrid connection, pipes each stream to the target.

    Args:
        spec: the mapping.
        credentials: relay endpoint and a token provider with the Listen right.
        target_connect_timeout: seconds to reach the target before the sender is rejected with 502.
        bind_address: local source address for connections to the target (azbridge ``-b``).
        udp_idle_timeout: seconds after which a silent UDP session is closed.
        chunk_size: largest target read (one WebSocket message).
        listener_options: extra keyword arguments for :class:`HybridConnectionListener`
            (``reconnect_delays=``, ``keep_alive_interval=``, ...).

    Use ``async with`` or :meth:`start` / :meth:`close`.
    """

    def __init__(
        self,
        spec: RemoteForward,
        credentials: RelayCredentials,
        *,
        target_connect_timeout: float = DEFAULT_TARGET_CONNECT_TIMEOUT,
        bind_address: str | None = None,
        udp_idle_timeout: float = DEFAULT_UDP_IDLE_TIMEOUT,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        listener_options: dict[str, Any] | None = None,
    ) -> None:
        address, path = credentials.address_of(spec.relay_name)
        self.spec = spec
        self.prefix = f"-R {spec.relay_name} -> {spec.describe()}:"
        self.target_connect_timeout = target_connect_timeout
        self.bind_address = bind_address
        self.udp_idle_timeout = udp_idle_timeout
        self.chunk_size = chunk_size
        self.listener = HybridConnectionListener(
            address,
            credentials.token_provider,
            path=path,
            accept_handler=self._accept if spec.protocol is Protocol.TCP else None,
            on_online=self._state_changed,
            on_offline=self._state_changed,
            **credentials.client_options,
            **(listener_options or {}),
        )
        self._targets: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._serving: asyncio.Task[None] | None = None
        #: Streams served so far, and open now.
        self.total = 0
        self.active = 0
        self.error: HycoError | None = None

    def __repr__(self) -> str:
        return f"<RemoteForwarder {self.prefix.rstrip(':')} {self.listener.state.value}>"

    @property
    def is_online(self) -> bool:
        """Whether the control channel is connected (senders can reach this forwarder)."""
        return self.listener.is_online

    @property
    def state(self) -> ListenerState:
        """The listener's state (connecting, online, offline, closed)."""
        return self.listener.state

    def _state_changed(self, listener: HybridConnectionListener) -> None:
        if listener.is_online:
            logger.info("%s online", self.prefix)
        else:
            reason = f": {listener.last_error}" if listener.last_error else ""
            logger.warning("%s offline, reconnecting%s", self.prefix, reason)

    async def start(self) -> None:
        """Open the control channel and start serving.

        If the relay cannot be reached the forwarder starts offline and keeps reconnecting.

        Raises:
            AuthorizationFailed, Forbidden, EndpointNotFound: the relay refused outright (wrong key, no
                Listen right, no such hybrid connection).
        """
        await self.listener.open()
        self._serving = asyncio.ensure_future(self._serve())

    async def wait_online(self, timeout: float | None = None) -> None:
        """Wait until the control channel is connected.

        Raises:
            RelayTimeout: not online within ``timeout`` seconds.
        """
        await self.listener.wait_online(timeout)

    async def wait_closed(self) -> None:
        """Wait until the forwarder stops for good (closed, or its hybrid connection is gone).

        Raises:
            EndpointNotFound: the hybrid connection no longer exists.
        """
        if self._serving is not None:
            await asyncio.shield(self._serving)
        if self.error is not None:
            raise self.error

    async def close(self) -> None:
        """Stop listening and close every open stream and target connection. Idempotent."""
        await self.listener.close()
        if self._serving is not None:
            self._serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for ident in list(self._targets):
            self._drop_target(ident)

    async def __aenter__(self) -> RemoteForwarder:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _serve(self) -> None:
        try:
            async for stream in self.listener:
                task = asyncio.ensure_future(self._forward(stream))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except HycoError as exc:
            self.error = exc
            logger.error("%s stopped: %s", self.prefix, exc)

    # -- connecting to the target before accepting (so a refusal reaches the sender with its reason)

    async def _connect_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        spec = self.spec
        async with asyncio.timeout(self.target_connect_timeout):
            if spec.local_socket is not None:
                return await asyncio.open_unix_connection(spec.local_socket)
            local_addr = (self.bind_address, 0) if self.bind_address else None
            return await asyncio.open_connection(spec.host, spec.port, local_addr=local_addr)

    async def _accept(self, context: AcceptContext) -> bool:
        try:
            reader, writer = await self._connect_target()
        except (OSError, TimeoutError) as exc:
            reason = (
                f"timed out after {self.target_connect_timeout:g} s"
                if isinstance(exc, TimeoutError)
                else exc.strerror or str(exc)
            )
            description = f"hyco forward: cannot connect to {self.spec.describe()}: {reason}"
            logger.warning("%s %s rejected: %s", self.prefix, context.id, description)
            context.reject(TARGET_UNREACHABLE_STATUS, _printable(description))
            return False
        # Keep the target until the stream arrives; drop it if the rendezvous never completes.
        expiry = asyncio.get_running_loop().call_later(
            self.listener.accept_timeout + 5.0, self._drop_target, context.id
        )
        self._targets[context.id] = (reader, writer, expiry)
        return True

    def _drop_target(self, ident: str) -> None:
        entry = self._targets.pop(ident, None)
        if entry is not None:
            entry[2].cancel()
            entry[1].transport.abort()

    async def _forward(self, stream: HybridConnectionStream) -> None:
        self.total += 1
        self.active += 1
        who = stream.tracking_id
        if stream.remote_endpoint is not None:
            endpoint = stream.remote_endpoint
            who = f"{who} from {_peer_name((endpoint.address, endpoint.port))}"
        started = time.monotonic()
        try:
            if self.spec.protocol is Protocol.UDP:
                await self._forward_udp(stream, who, started)
                return
            entry = self._targets.pop(stream.tracking_id, None)
            if entry is None:  # the target connection expired before the stream arrived
                await stream.close()
                _log_end(self.prefix, who, 0, 0, time.monotonic() - started, "target connection expired")
                return
            reader, writer, expiry = entry
            expiry.cancel()
            logger.info("%s %s opened", self.prefix, who)
            result = await pipe(reader, writer, stream, chunk_size=self.chunk_size)
            # Seen from this side, "to relay" is what the target sent.
            how = result.end.value if result.error is None else _how(result)
            _log_end(self.prefix, who, result.to_relay, result.from_relay, time.monotonic() - started, how)
        except asyncio.CancelledError:
            with contextlib.suppress(HycoError, OSError):
                await stream.close()
            raise
        finally:
            self.active -= 1

    async def _forward_udp(self, stream: HybridConnectionStream, who: str, started: float) -> None:
        spec = self.spec
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue(_UDP_QUEUE)
        last = [time.monotonic()]
        counts = [0, 0]
        transport: asyncio.DatagramTransport | None = None
        how = "idle"
        try:
            try:
                local_addr = (self.bind_address, 0) if self.bind_address else None
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpTarget(queue, last),
                    remote_addr=(spec.host, spec.port or 0),
                    local_addr=local_addr,
                )
            except OSError as exc:
                how = f"cannot reach {spec.describe()}: {exc.strerror or exc}"
                return
            logger.info("%s %s opened (udp session)", self.prefix, who)
            target = transport
            how = await _udp_relay(
                stream, queue, lambda data: target.sendto(data), last, self.udp_idle_timeout, counts
            )
        finally:
            if transport is not None:
                transport.close()
            with contextlib.suppress(HycoError, OSError):
                await stream.close()
            _log_end(self.prefix, who, counts[0], counts[1], time.monotonic() - started, how)


def _printable(text: str) -> str:
    return "".join(c if ord(c) >= 32 else " " for c in text)[:512]


# ---------------------------------------------------------------------------------------------- many mappings


class Forwarder:
    """Runs many ``-L`` and ``-R`` mappings in one process.

    Args:
        local: the ``-L`` mappings.
        remote: the ``-R`` mappings.
        credentials: relay endpoint and tokens, shared by all mappings.
        connect_timeout, udp_idle_timeout, target_connect_timeout, bind_address, chunk_size: as for
            :class:`LocalForwarder` and :class:`RemoteForwarder`.
        listener_options: extra keyword arguments for every remote side's listener.

    Raises:
        InvalidInput: no mapping, or a relay name the credentials cannot serve.

    Example::

        creds = RelayCredentials.from_connection_string(os.environ["AZURE_BRIDGE_CONNECTIONSTRING"])
        async with Forwarder([LocalForward.parse("127.0.0.1:5432:db")], [], creds) as forwarder:
            await forwarder.wait_closed()
    """

    def __init__(
        self,
        local: Sequence[LocalForward],
        remote: Sequence[RemoteForward],
        credentials: RelayCredentials,
        *,
        connect_timeout: float | None = None,
        udp_idle_timeout: float = DEFAULT_UDP_IDLE_TIMEOUT,
        target_connect_timeout: float = DEFAULT_TARGET_CONNECT_TIMEOUT,
        bind_address: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        listener_options: dict[str, Any] | None = None,
    ) -> None:
        if not local and not remote:
            raise InvalidInput("nothing to forward: give at least one -L or -R mapping")
        self.local = [
            LocalForwarder(
                spec,
                credentials,
                connect_timeout=connect_timeout,
                udp_idle_timeout=udp_idle_timeout,
                chunk_size=chunk_size,
            )
            for spec in local
        ]
        self.remote = [
            RemoteForwarder(
                spec,
                credentials,
                target_connect_timeout=target_connect_timeout,
                bind_address=bind_address,
                udp_idle_timeout=udp_idle_timeout,
                chunk_size=chunk_size,
                listener_options=listener_options,
            )
            for spec in remote
        ]
        if any(f.listener.token_provider is None for f in self.remote):  # pragma: no cover - SDK refuses
            raise InvalidInput("a remote forwarder needs a key or SAS to listen")

    def _all(self) -> list[LocalForwarder | RemoteForwarder]:
        return [*self.local, *self.remote]

    async def start(self) -> None:
        """Start every mapping; if one cannot start, stop those already started and raise its error.

        Raises:
            ForwardError: a local port or socket cannot be bound.
            AuthorizationFailed, Forbidden, EndpointNotFound: the relay refused a remote mapping.
        """
        started: list[LocalForwarder | RemoteForwarder] = []
        try:
            for forwarder in self._all():
                await forwarder.start()
                started.append(forwarder)
        except BaseException:
            for forwarder in reversed(started):
                await forwarder.close()
            raise

    async def wait_closed(self) -> None:
        """Serve until a remote mapping stops for good (its hybrid connection is gone) or forever.

        Raises:
            EndpointNotFound: a remote mapping's hybrid connection no longer exists.
        """
        if not self.remote:
            await asyncio.Event().wait()
        waits = [asyncio.ensure_future(f.wait_closed()) for f in self.remote]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def close(self) -> None:
        """Stop every mapping and close all connections."""
        await asyncio.gather(*(f.close() for f in self._all()), return_exceptions=True)

    async def wait_online(self, timeout: float | None = None) -> None:
        """Wait until every remote mapping is online.

        Raises:
            RelayTimeout: not all online within ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                for forwarder in self.remote:
                    await forwarder.wait_online()
        except TimeoutError:
            raise RelayTimeout(f"the remote mappings were not online within {timeout} s") from None

    async def __aenter__(self) -> Forwarder:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
