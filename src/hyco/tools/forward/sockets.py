"""The local sockets of ``hyco forward``: listening for ``-L`` and connecting to ``-R`` targets.

TCP ports and unix sockets are byte streams (piped with :func:`hyco.tools.pipe.pipe`); UDP ports are datagram
endpoints (see :mod:`hyco.tools.forward.udp`). Failures to listen become a :class:`ForwardError` that says
what to do; failures to reach a target are left to the remote side, which turns them into a rejection.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import Any

from hyco.tools.forward._report import ForwardError, os_reason
from hyco.tools.forward.spec import LocalForward, RemoteForward
from hyco.tools.forward.udp import DatagramHandler

__all__ = [
    "ForwardError",
    "connect_datagrams",
    "connect_stream",
    "listen_datagrams",
    "listen_stream",
    "remove_stale_socket",
]

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def listen_stream(spec: LocalForward, handler: StreamHandler) -> asyncio.Server:
    """Listen on the mapping's TCP port or unix socket; ``handler`` serves each connection.

    Raises:
        ForwardError: the port is in use, the address is not local, or the socket path is unusable.
    """
    try:
        if spec.local_socket is not None:
            remove_stale_socket(spec.local_socket)
            return await asyncio.start_unix_server(handler, spec.local_socket)
        return await asyncio.start_server(handler, spec.bind_address or None, spec.port)
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


async def connect_stream(
    spec: RemoteForward, bind_address: str | None, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the mapping's TCP target or unix socket.

    Raises:
        OSError: the target refused or cannot be reached.
        TimeoutError: no connection within ``timeout`` seconds.
    """
    async with asyncio.timeout(timeout):
        if spec.local_socket is not None:
            return await asyncio.open_unix_connection(spec.local_socket)
        local_addr = (bind_address, 0) if bind_address else None
        return await asyncio.open_connection(spec.host, spec.port, local_addr=local_addr)


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
