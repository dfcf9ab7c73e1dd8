"""The local sockets of ``hyco forward``: listening for ``-L`` and connecting to ``-R`` targets.

TCP ports and unix sockets are byte streams: each connection is a :class:`HeldConnection` that keeps what
arrives until its relayed stream is ready, then is spliced to it (:func:`hyco.tools.pipe.splice_socket`);
UDP ports are datagram endpoints (see :mod:`hyco.tools.forward.udp`). Failures to listen become a
:class:`ForwardError` that says what to do; failures to reach a target are left to the remote side, which
turns them into a rejection.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Callable
from typing import Any, cast

from hyco.tools.forward._report import ForwardError, os_reason
from hyco.tools.forward.spec import LocalForward, RemoteForward
from hyco.tools.forward.udp import DatagramHandler

__all__ = [
    "ForwardError",
    "HeldConnection",
    "connect_datagrams",
    "connect_stream",
    "listen_datagrams",
    "listen_stream",
    "remove_stale_socket",
]

#: Bytes a held connection keeps before it stops reading (until its relayed stream is ready).
HELD_LIMIT = 256 * 1024


class HeldConnection(asyncio.Protocol):
    """A local connection whose bytes are kept until it is spliced to a relayed stream.

    Attributes:
        transport: the connection (set once connected).
        received: bytes that arrived so far (reading pauses past ``HELD_LIMIT``).
        eof: whether its end of data arrived.
        lost: whether the connection is gone.
    """

    def __init__(self, connected: Callable[[HeldConnection], None] | None = None) -> None:
        self._connected = connected
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.eof = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport and tell the listener."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        if self._connected is not None:
            self._connected(self)

    def data_received(self, data: bytes) -> None:
        """Keep the bytes (reading pauses past ``HELD_LIMIT``)."""
        self.received += data
        if len(self.received) > HELD_LIMIT and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        """Note the end of data."""
        self.eof = True
        return True  # the other direction stays open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        """Note the loss (the splice then finds the transport closed)."""
        self.lost = True


async def listen_stream(spec: LocalForward, connected: Callable[[HeldConnection], None]) -> asyncio.Server:
    """Listen on the mapping's TCP port or unix socket; ``connected`` is called with each new connection.

    Raises:
        ForwardError: the port is in use, the address is not local, or the socket path is unusable.
    """
    loop = asyncio.get_running_loop()
    try:
        if spec.local_socket is not None:
            remove_stale_socket(spec.local_socket)
            return await loop.create_unix_server(lambda: HeldConnection(connected), spec.local_socket)
        return await loop.create_server(
            lambda: HeldConnection(connected), spec.bind_address or None, spec.port or 0
        )
    except OSError as exc:
        raise ForwardError(f"cannot listen on {spec.describe()}: {os_reason(exc)}") from exc


async def listen_datagrams(
    spec: LocalForward, received: Callable[[bytes, Any], None], name: str
) -> asyncio.DatagramTransport:
    """Bind the mapping's UDP port; ``received(data, addr)`` gets every datagram.

    Raises:
        ForwardError: the port is in use or the address is not local.
    """
    try:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: DatagramHandler(received, name),
            local_addr=(spec.bind_address or "0.0.0.0", spec.port or 0),  # noqa: S104 - "" means all
        )
    except OSError as exc:
        raise ForwardError(f"cannot listen on {spec.describe()}: {os_reason(exc)}") from exc
    return transport


async def connect_stream(spec: RemoteForward, bind_address: str | None, timeout: float) -> HeldConnection:
    """Connect to the mapping's TCP target or unix socket.

    Raises:
        OSError: the target refused or cannot be reached.
        TimeoutError: no connection within ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        if spec.local_socket is not None:
            _, held = await loop.create_unix_connection(HeldConnection, spec.local_socket)
        else:
            local_addr = (bind_address, 0) if bind_address else None
            _, held = await loop.create_connection(
                HeldConnection, spec.host, spec.port or 0, local_addr=local_addr
            )
    return held


async def connect_datagrams(
    spec: RemoteForward, bind_address: str | None, received: Callable[[bytes, Any], None]
) -> asyncio.DatagramTransport:
    """A UDP endpoint connected to the mapping's target; ``received(data, addr)`` gets its answers.

    Raises:
        OSError: the target address cannot be resolved or used.
    """
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: DatagramHandler(received, "udp target"),
        remote_addr=(spec.host, spec.port or 0),
        local_addr=(bind_address, 0) if bind_address else None,
    )
    return transport


def remove_stale_socket(path: str) -> None:
    """Remove a unix socket file nobody listens on any more (as ssh's ``StreamLocalBindUnlink``).

    Raises:
        ForwardError: the path is not a socket, or another process listens on it.
    """
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
