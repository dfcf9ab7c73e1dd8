"""The relay's WebSocket engine: the one module that knows the WebSocket library (aiohttp) and its internals.

Everything above this module talks to small seams instead:

* :class:`Handshake`: a WebSocket upgrade request on its way in. The front door reads what it needs from it
  (path, query, headers, the client's address) and a handler completes it with :meth:`Handshake.accept`
  (a :class:`ControlPeer`, the lean message-level socket of a listener's control channel),
  :meth:`Handshake.accept_spliced` (a :class:`FramePeer`, the lean frame-forwarding socket of a splice) or
  :meth:`Handshake.accept_frames` (a :class:`FrameTransport` for the frame-streaming socket of HTTP request
  rendezvous, ``hyco.server.streamws``).
* :class:`SpliceHandshake`: what a sender's or listener's stream upgrade needs (``hyco.server.streams``),
  and :class:`ListenHandshake`: what a listener's control-channel upgrade needs (``hyco.server.listeners``);
  :class:`Handshake` is both, served by aiohttp, and the lean front door's (``hyco.server.door``) too.
* :class:`ConnectionGate`: counts connections per client address as the kernel hands them over, and refuses
  those over the limit before a byte is read (``hyco.server.sources``).
* :class:`FactorySite`: a TCP site whose connections start with a protocol factory of the relay's choosing.
* :func:`bound_address`: where a started site listens.

A faster engine replaces this module (and only this module): the Peer and FrameTransport seams stay.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError

from hyco._wsmask import apply_mask
from hyco.exceptions import ConnectionLost, RelayError
from hyco.server.backlog import BacklogDrain
from hyco.server.controlpeer import ControlPeer
from hyco.server.framepeer import FramePeer

__all__ = [
    "ConnectionGate",
    "ControlPeer",
    "FactorySite",
    "FramePeer",
    "FrameSink",
    "FrameTransport",
    "Handshake",
    "ListenHandshake",
    "SpliceHandshake",
    "answer_and_close",
    "bound_address",
    "unmask",
]

_SOCKET_ERRORS = (ClientConnectionResetError, ConnectionError, RuntimeError)


def unmask(key: bytes, payload: bytes) -> bytes:
    """``payload`` unmasked with ``key`` (RFC 6455 5.3)."""
    return apply_mask(key, payload)


class FrameSink(Protocol):
    """Receives a frame socket's raw bytes after the handshake (``hyco.server.streamws``)."""

    def feed_data(self, data: bytes) -> None:
        """Bytes arrived."""
        ...

    def feed_eof(self) -> None:
        """The connection is gone."""
        ...


class _SinkParser:
    """Adapts a FrameSink to the parser interface aiohttp's request protocol calls after an upgrade."""

    def __init__(self, sink: FrameSink) -> None:
        self._sink = sink

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._sink.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self._sink.feed_eof()


#: Where ConnectionGate.install leaves itself on aiohttp's server, for connections the engine detaches.
_GATE_ATTRIBUTE = "hyco_connection_gate"
#: RFC 6455 4.2.2: the GUID appended to the client's key for Sec-WebSocket-Accept.
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def upgrade_response(headers: Mapping[str, str], connection_upgrade: bool, protocol: str | None) -> bytes:
    """The complete 101 response to a WebSocket upgrade request.

    Makes the checks aiohttp's handshake makes, with its answers: ``Upgrade: websocket``, ``Connection:
    upgrade`` (``connection_upgrade``, from the HTTP parser), a supported version, a 16-byte key. ``protocol``
    is echoed when the client offered it.

    Raises:
        web.HTTPBadRequest: not a valid upgrade (400, as aiohttp answers it).
    """
    upgrade = headers.get("Upgrade", "")
    if upgrade.lower().strip() != "websocket":
        raise web.HTTPBadRequest(
            text=f'No WebSocket UPGRADE hdr: {upgrade}\n Can "Upgrade" only to "WebSocket".'
        )
    if not connection_upgrade:
        raise web.HTTPBadRequest(text=f"No CONNECTION upgrade hdr: {headers.get('Connection')}")
    version = headers.get("Sec-WebSocket-Version", "")
    if version not in ("13", "8", "7"):
        raise web.HTTPBadRequest(text=f"Unsupported version: {version}")
    key = headers.get("Sec-WebSocket-Key")
    try:
        if not key or len(base64.b64decode(key)) != 16:
            raise web.HTTPBadRequest(text=f"Handshake error: {key!r}")
    except binascii.Error:
        raise web.HTTPBadRequest(text=f"Handshake error: {key!r}") from None
    accept = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest())  # noqa: S324 (RFC 6455)
    offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",")]
    chosen = f"Sec-WebSocket-Protocol: {protocol}\r\n".encode() if protocol and protocol in offered else b""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n" + chosen + b"\r\n"
    )


def _detach(handler: Any, transport: asyncio.Transport) -> Callable[[Exception | None], None]:
    """Make aiohttp's server forget a connection whose transport now belongs to the engine.

    The server stops tracking the handler (bypassing the ConnectionGate's hook, so the connection stays
    counted for its source), and the handler loses its transport, so its request loop ends without closing
    it. Returns what to call when the connection is lost: the gate's uncount, as the hook would have.
    """
    server = handler._manager
    gate: ConnectionGate | None = getattr(server, _GATE_ATTRIBUTE, None)
    type(server).connection_lost(server, handler, None)
    if gate is not None:
        gate.forget(handler)
    handler.transport = None

    def lost(_: Exception | None) -> None:
        if gate is not None:
            gate.uncount(transport)

    return lost


class _Upgraded(web.StreamResponse):
    """What the handler returns to aiohttp after the engine wrote the 101 itself: aiohttp writes nothing."""

    def __init__(self) -> None:
        super().__init__(status=101)

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class _FrameResponse(web.WebSocketResponse):
    """aiohttp's handshake, then the sink instead of aiohttp's reassembling reader."""

    def __init__(self, sink: FrameSink, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sink = sink

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        # Overrides aiohttp's hook that installs its reassembling reader (aiohttp 3.10+).
        self._ws_protocol = protocol
        self._writer = writer
        request.protocol.set_parser(_SinkParser(self._sink))  # type: ignore[arg-type]
        request.protocol.keep_alive(False)


class FrameTransport:
    """The raw connection under a frame-streaming socket: write bytes (waiting for the buffer to drain),
    pause and resume reading, close."""

    def __init__(self, request: web.BaseRequest, response: web.WebSocketResponse) -> None:
        self._request = request
        self._response = response

    async def write(self, data: bytes) -> None:
        """Write ``data`` and wait while the transport's buffer is above its high-water mark.

        Raises:
            ConnectionLost: the connection is closed.
        """
        transport = self._request.transport
        if transport is None or transport.is_closing():
            raise ConnectionLost("the peer's connection is closed")
        transport.write(data)
        # The response's stream writer knows whether the transport is paused; aiohttp has no public drain.
        writer = self._response._payload_writer
        if writer is not None:
            try:
                await writer.drain()
            except _SOCKET_ERRORS as exc:
                raise ConnectionLost("the peer's connection broke") from exc

    def pause_reading(self, paused: bool) -> None:
        """Stop (True) or resume (False) reading from the socket."""
        transport = self._request.transport
        if transport is None or transport.is_closing():
            return
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def close(self, last: bytes = b"") -> None:
        """Drop the connection after writing ``last`` (a Close frame), without waiting. Idempotent."""
        transport = self._request.transport
        if transport is not None and not transport.is_closing():
            if last:
                transport.write(last)
            transport.close()  # the buffered bytes are still sent


class SpliceHandshake(Protocol):
    """A stream upgrade (a sender's ``connect``, a listener's ``accept`` dial) on its way in.

    The front door sets :attr:`on_upgrade` before a handler sees it; the handler refuses it (raises a
    :class:`~hyco.exceptions.RelayError` or returns an answer) or completes it with :meth:`accept_spliced`.
    """

    on_upgrade: Callable[[], None] | None

    @property
    def headers(self) -> Mapping[str, str]:
        """The request headers (case-insensitive; repeated names iterate once per value)."""
        ...

    @property
    def host(self) -> str:
        """The Host header the client sent."""
        ...

    @property
    def remote(self) -> str:
        """The client's IP address, for logs (``?`` if unknown)."""
        ...

    @property
    def peername(self) -> tuple[str, int] | None:
        """The client's ``(address, port)``."""
        ...

    @property
    def offered_protocol(self) -> str | None:
        """The first sub-protocol the client offered, if any."""
        ...

    @property
    def transport(self) -> asyncio.BaseTransport | None:
        """The client's connection (None once it is gone)."""
        ...

    @property
    def upgraded(self) -> bool:
        """Whether the 101 was sent."""
        ...

    async def accept_spliced(
        self, name: str, *, protocol: str | None, max_message_size: int, heartbeat: float | None = None
    ) -> FramePeer:
        """Complete the upgrade and hand the connection to a :class:`FramePeer`."""
        ...


class ListenHandshake(SpliceHandshake, Protocol):
    """A listener's control-channel upgrade (``sb-hc-action=listen``) on its way in."""

    @property
    def secure(self) -> bool:
        """Whether the connection is TLS."""
        ...

    async def accept(
        self, name: str, *, protocol: str | None, max_message_size: int, heartbeat: float | None = None
    ) -> ControlPeer:
        """Complete the upgrade and hand the connection to a :class:`ControlPeer`."""
        ...


class Handshake:
    """A WebSocket upgrade request (``/$hc/...``) waiting to be accepted or refused.

    The handler that serves it calls :meth:`accept` or :meth:`accept_frames` at most once, or raises a
    :class:`~hyco.exceptions.RelayError` (or returns an HTTP answer) to refuse it; :attr:`response` is what
    the front door hands back to aiohttp.
    """

    def __init__(self, request: web.BaseRequest, *, on_upgrade: Callable[[], None] | None = None) -> None:
        self._request = request
        self.on_upgrade = on_upgrade
        self.response: web.StreamResponse | None = None

    @property
    def upgraded(self) -> bool:
        """Whether the upgrade was completed (:attr:`response` is then what aiohttp gets back)."""
        return self.response is not None

    @property
    def transport(self) -> asyncio.BaseTransport | None:
        """The client's connection (None once aiohttp let go of it)."""
        return self._request.transport

    @property
    def headers(self) -> Mapping[str, str]:
        """The request headers (case-insensitive)."""
        return self._request.headers

    @property
    def host(self) -> str:
        """The Host header the client sent."""
        return self._request.host

    @property
    def secure(self) -> bool:
        """Whether the connection is TLS."""
        return self._request.secure

    @property
    def remote(self) -> str:
        """The client's IP address, for logs (``?`` if unknown)."""
        return self._request.remote or "?"

    @property
    def peername(self) -> tuple[str, int] | None:
        """The client's ``(address, port)`` (the ``remoteEndpoint`` of protocol.md 2.2)."""
        transport = self._request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return (str(peer[0]), int(peer[1])) if peer else None

    @property
    def offered_protocol(self) -> str | None:
        """The first sub-protocol the client offered, if any."""
        offered = self._request.headers.get("Sec-WebSocket-Protocol", "")
        return offered.split(",")[0].strip() or None

    async def accept(
        self,
        name: str,
        *,
        protocol: str | None,
        max_message_size: int,
        heartbeat: float | None = None,
    ) -> ControlPeer:
        """Complete the upgrade and hand the connection to a message-level :class:`ControlPeer` (a listener's
        control channel), as :meth:`accept_spliced` does with a :class:`FramePeer`.

        Raises:
            ConnectionLost: the client went away during the handshake.
            web.HTTPBadRequest: not a valid WebSocket upgrade (aiohttp's 400).
        """
        peer = ControlPeer(name, max_message_size, heartbeat)
        self._take_over(peer, protocol)
        return peer

    async def accept_spliced(
        self,
        name: str,
        *,
        protocol: str | None,
        max_message_size: int,
        heartbeat: float | None = None,
    ) -> FramePeer:
        """Complete the upgrade and hand the connection to a lean frame-forwarding :class:`FramePeer`.

        The engine writes the 101 response itself; then the transport's protocol becomes the FramePeer, which
        moves frames by itself once a splice links it to its partner (``hyco.server.framepeer``), and aiohttp
        forgets the connection: the handler may return at once (aiohttp writes nothing more), and the
        connection stays counted for its source until it is lost.

        Raises:
            ConnectionLost: the client went away during the handshake.
            web.HTTPBadRequest: not a valid WebSocket upgrade (aiohttp's 400).
        """
        peer = FramePeer(name, max_message_size, heartbeat)
        self._take_over(peer, protocol)
        return peer

    def _take_over(self, peer: FramePeer, protocol: str | None) -> None:
        request = self._request
        response = upgrade_response(request.headers, request._message.upgrade, protocol)
        # One write, no response machinery, and aiohttp lets go of the connection (its request, parser and
        # tasks are freed when the handler returns: memory per connection is a budget).
        handler, transport = request.protocol, request.transport
        if transport is None or transport.is_closing():
            raise ConnectionLost("the client went away during the WebSocket handshake")
        transport.write(response)
        handler.set_parser(_SinkParser(peer))  # type: ignore[arg-type]  # bytes that came with the request
        handler.keep_alive(False)
        self.response = _Upgraded()
        if self.on_upgrade is not None:
            self.on_upgrade()
        peer.attach(transport, _detach(handler, transport))

    async def accept_frames(self, sink: FrameSink) -> FrameTransport:
        """Complete the upgrade; from then on the socket's bytes go to ``sink``.

        Raises:
            ConnectionLost: the client went away during the handshake.
        """
        ws = _FrameResponse(sink, autoclose=False, compress=False)
        await self._prepare(ws)
        return FrameTransport(self._request, ws)

    async def _prepare(self, ws: web.WebSocketResponse) -> None:
        try:
            await ws.prepare(self._request)
        except _SOCKET_ERRORS as exc:
            raise ConnectionLost("the client went away during the WebSocket handshake") from exc
        self.response = ws
        if self.on_upgrade is not None:
            self.on_upgrade()


def _raw_refusal(refusal: RelayError) -> bytes:
    """A complete HTTP/1.1 response for a connection refused before its request was read."""
    body = json.dumps({"error": {"code": refusal.http_status, "message": refusal.description}}).encode()
    head = (
        f"HTTP/1.1 {refusal.http_status} {refusal.description[:200]}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1", "replace") + body


class ConnectionGate:
    """Counts the relay's open connections per client IP, at the connection level.

    aiohttp's server tells its manager about every connection it makes and loses; :meth:`install` hooks those
    two calls on a runner's server. ``admit(ip)`` decides as the connection arrives: None counts it
    (``release(ip)`` is called exactly once, when it ends or stops counting), a RelayError refuses it: the
    relay writes that error as a complete ``Connection: close`` response and closes the socket without reading
    from it (a client that already sent its request may see the connection reset instead of the response).

    Args:
        admit: counts a connection from an IP, or returns the refusal.
        release: a counted connection from an IP ended.
    """

    def __init__(self, admit: Callable[[str], RelayError | None], release: Callable[[str], None]) -> None:
        self._admit = admit
        self._release = release
        self._counted: dict[asyncio.BaseTransport, str] = {}
        # aiohttp's handler forgets its transport when it closes the connection itself (idle and keep-alive
        # timeouts: force_close) before it reports the loss: remember which transport each handler had.
        self._transports: dict[Any, asyncio.BaseTransport] = {}

    def install(self, runner: web.BaseRunner) -> None:
        """Hook the gate into ``runner``'s server (after ``runner.setup()``, before a site starts)."""
        server = runner.server
        assert server is not None, "runner.setup() first"
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._transports[handler] = transport
            if transport not in self._counted:  # the lean front door (hyco.server.door) counted it already
                self.admit(transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self.uncount(self._transports.pop(handler, None))
            lost(handler, exc)

        # aiohttp's Server has no public hook for this; its handlers call these two methods on it.
        setattr(server, "connection_made", connection_made)  # noqa: B010
        setattr(server, "connection_lost", connection_lost)  # noqa: B010
        setattr(server, _GATE_ATTRIBUTE, self)  # connections the engine detaches are uncounted by it

    def forget(self, handler: Any) -> None:
        """Drop ``handler`` without uncounting its connection: the engine took the transport from it (and
        uncounts it when the connection ends). Without this the gate would keep every detached handler, and
        through it the transport, parser and peer, for the relay's life."""
        self._transports.pop(handler, None)

    def admit(self, transport: asyncio.Transport) -> bool:
        """Count a new connection, or refuse it: write the refusal, close it and return False."""
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if peer else "?"
        refusal = self._admit(source)
        if refusal is None:
            self._counted[transport] = source
            return True
        transport.write(_raw_refusal(refusal))
        transport.close()
        return False

    def uncount(self, transport: asyncio.BaseTransport | None) -> None:
        """Stop counting ``transport``'s connection (idempotent; unknown transports are ignored)."""
        source = self._counted.pop(transport, None) if transport is not None else None
        if source is not None:
            self._release(source)


async def answer_and_close(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Send ``response`` with ``Connection: close``, then close the connection, reading nothing more from it.

    For an answer to a request whose body will never come (408): aiohttp would otherwise go on reading the
    unread body for up to 10 s after the answer (its lingering close) and then serve the connection's next
    request. The handler returns ``response`` afterwards as usual (aiohttp writes nothing more).
    """
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    # The handler's force_close skips the lingering read; the transport still sends what was written.
    request.protocol.force_close()


def bound_address(site: web.TCPSite) -> tuple[str, int]:
    """The ``(host, port)`` a started site listens on (useful with port 0)."""
    # aiohttp has no public accessor for the bound socket; asyncio and uvloop servers both have .sockets
    server = site._server
    sockets: list[socket.socket] = list(getattr(server, "sockets", None) or ())
    host, port = sockets[0].getsockname()[:2]
    return str(host), int(port)


class FactorySite(web.TCPSite):
    """A TCP site whose accepted connections start with ``factory``'s protocol instead of aiohttp's.

    The runner still owns the site's lifecycle (``stop``, ``cleanup``); the factory decides which requests
    aiohttp's server sees (``hyco.server.door``). With ``drain``, every connection the loop accepts lets the
    drain accept the rest of the queue (``hyco.server.backlog``: uvloop accepts one per loop iteration).
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        factory: Callable[[], asyncio.BaseProtocol],
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
        drain: BacklogDrain | None = None,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, backlog=backlog)
        self._factory = factory
        self._drain = drain

    async def start(self) -> None:
        """Register with the runner and listen (as ``web.TCPSite.start`` does, with the factory)."""
        await web.BaseSite.start(self)
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol if self._drain is not None else self._factory,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._drain is not None:
            self._drain.watch(self._server.sockets)

    async def stop(self) -> None:
        """Stop listening (the drain's copies of the listening sockets too)."""
        if self._drain is not None:
            self._drain.close()
        await super().stop()

    def _protocol(self) -> asyncio.BaseProtocol:
        assert self._drain is not None
        self._drain.accepted()
        return self._factory()
