"""The local side of ``hyco forward`` (``-L``): each local connection or UDP peer gets its own relayed stream.

It listens on a local TCP port, UDP port or unix socket. For every connection it opens one relayed stream to
the hybrid connection (:meth:`HybridConnectionClient.connect`) and splices the two
(:func:`hyco.tools.pipe.splice_socket`).
When the remote side rejects the stream (its target is unreachable, protocol.md 3.3), the local connection
is dropped at once and the log line says why. For UDP, each client address is a session with its own stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from hyco.client.sender import HybridConnectionClient
from hyco.client.stream import HybridConnectionStream
from hyco.exceptions import ConnectionRejected, HycoError
from hyco.tools.forward._lifecycle import StartsAndCloses
from hyco.tools.forward._report import log_end, logger, peer_name
from hyco.tools.forward.credentials import RelayCredentials
from hyco.tools.forward.sockets import HeldConnection, listen_datagrams, listen_stream
from hyco.tools.forward.spec import LocalForward, Transport
from hyco.tools.forward.udp import DEFAULT_UDP_IDLE_TIMEOUT, Activity, new_queue, offer, relay_datagrams
from hyco.tools.pipe import DEFAULT_CHUNK_SIZE, PipeEnd, splice_socket

__all__ = ["LocalForwarder"]


@dataclass
class _UdpSession:
    peer: tuple[Any, ...]
    queue: asyncio.Queue[bytes] = field(default_factory=new_queue)
    activity: Activity = field(default_factory=Activity)


class LocalForwarder(StartsAndCloses):
    """Serves one :class:`LocalForward`: each local connection (or UDP peer) gets its own relayed stream.

    Args:
        spec: the mapping.
        credentials: relay endpoint and tokens.
        connect_timeout: seconds to wait for the remote side to accept (None: the SDK's 70 s).
        udp_idle_timeout: seconds after which a silent UDP session is closed.
        chunk_size: largest local read (one WebSocket message).

    Raises:
        InvalidInput: the credentials' connection string names another hybrid connection.

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
        if self.spec.protocol is Transport.UDP:
            self._udp = await listen_datagrams(self.spec, self._datagram, self.prefix)
        else:
            self._server = await listen_stream(self.spec, self._connected)
        bound = ", ".join(peer_name(a) if isinstance(a, tuple) else str(a) for a in self.addresses)
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

    def _track(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- TCP and unix sockets

    def _connected(self, held: HeldConnection) -> None:
        self._track(self._handle(held))

    async def _handle(self, held: HeldConnection) -> None:
        transport = held.transport
        assert transport is not None
        who = peer_name(transport.get_extra_info("peername"))
        self.total += 1
        self.active += 1
        started = time.monotonic()
        try:
            try:
                stream = await self.client.connect()
            except ConnectionRejected as exc:
                transport.abort()
                how = f"refused by the remote side: {exc.http_status} {exc.description}"
                log_end(self.prefix, who, 0, 0, time.monotonic() - started, how)
                return
            except HycoError as exc:
                transport.abort()
                log_end(self.prefix, who, 0, 0, time.monotonic() - started, f"relay error: {exc}")
                return
            except asyncio.CancelledError:
                transport.abort()
                raise
            logger.info("%s %s opened (stream %s)", self.prefix, who, stream.tracking_id)
            result = await splice_socket(
                transport, stream, received=bytes(held.received), eof=held.eof, chunk_size=self.chunk_size
            )
            log_end(
                self.prefix, who, result.to_relay, result.from_relay, time.monotonic() - started, result.how
            )
        except asyncio.CancelledError:
            log_end(self.prefix, who, 0, 0, time.monotonic() - started, PipeEnd.CANCELLED.value)
            raise
        finally:
            self.active -= 1

    # -- UDP

    def _datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        session = self._sessions.get(addr)
        if session is None:
            session = self._sessions[addr] = _UdpSession(addr)
            self._track(self._udp_session(session))
        session.activity.touch()
        offer(session.queue, data)

    async def _udp_session(self, session: _UdpSession) -> None:
        who = peer_name(session.peer)
        self.total += 1
        self.active += 1
        started = time.monotonic()
        how = "idle"
        stream: HybridConnectionStream | None = None
        try:
            try:
                stream = await self.client.connect()
            except HycoError as exc:
                how = f"relay error: {exc}"
                return
            logger.info("%s %s opened (udp session %s)", self.prefix, who, stream.tracking_id)
            how = await relay_datagrams(
                stream,
                session.queue,
                lambda data: self._send_to(data, session.peer),
                session.activity,
                self.udp_idle_timeout,
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
            activity = session.activity
            log_end(self.prefix, who, activity.to_relay, activity.from_relay, time.monotonic() - started, how)

    def _send_to(self, data: bytes, peer: tuple[Any, ...]) -> None:
        if self._udp is not None:
            self._udp.sendto(data, peer)
