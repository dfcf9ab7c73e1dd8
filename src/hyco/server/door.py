"""The lean front door: the first protocol of every connection the relay accepts (docs/architecture.md).

A rendezvous costs the relay two WebSocket upgrades (a sender's ``connect``, a listener's ``accept`` dial).
Served by aiohttp's HTTP server, each one built a request object, a handler task, routing and a response
around a 101 that the engine writes itself anyway. Here a small asyncio protocol reads the request head of
each new connection with aiohttp's own C HTTP parser (so it accepts exactly what aiohttp accepts) and:

* serves a stream upgrade (``GET /$hc/{path}?sb-hc-action=connect|accept`` with ``Upgrade``) and a
  listener's control-channel upgrade (``sb-hc-action=listen``) itself: the
  :class:`~hyco.server.frontdoor.FrontDoor` runs the same classification, limits, auth and routing on a
  :class:`LeanHandshake`, whose :meth:`~LeanHandshake.accept_spliced` (:meth:`~LeanHandshake.accept`)
  writes the 101 and makes the connection's protocol a :class:`~hyco.server.framepeer.FramePeer` (a
  :class:`~hyco.server.controlpeer.ControlPeer`); refusals and answers are written as ``Connection: close``
  responses;
* gives a connection whose first bytes may start a small relayed HTTP request to
  :class:`~hyco.server.leanhttp.LeanHttpConnection`, which serves those itself;
* hands every other connection (plain HTTP, ``/$health``, management, dashboard, request rendezvous,
  anything malformed or unusual) to a fresh aiohttp ``RequestHandler`` with the bytes read so far,
  unchanged: aiohttp then serves it as if it had accepted it.

Connections are counted for their source as they arrive (``engine.ConnectionGate``, before a byte is read),
and a connection gets ``limits.idle_timeout`` seconds to send its complete head, as under aiohttp.
:class:`Door` is the one protocol factory for accepted sockets (a site's server, or
``loop.connect_accepted_socket``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import cast

from aiohttp import HttpVersion11, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser, RawRequestMessage
from aiohttp.tcp_helpers import tcp_keepalive

from hyco.exceptions import ConnectionLost, RelayError
from hyco.protocol.uri import query_params
from hyco.server.answer import HttpAnswer
from hyco.server.engine import ConnectionGate, ControlPeer, FramePeer, upgrade_response
from hyco.server.frontdoor import FrontDoor, is_websocket_path, reason_phrase, request_tracking_id
from hyco.server.leanhttp import LeanHttpConnection, bare_line_feed, may_be_lean

__all__ = ["Door", "LeanHandshake"]

log = logging.getLogger("hyco.relay")

#: Head bytes read without finding the head's end before the connection goes to aiohttp (which takes
#: longer heads, up to its line and header limits, and answers those it refuses).
MAX_LEAN_HEAD = 16 * 1024
#: Bytes a client may send after its upgrade request before its 101 (it should send none) before the
#: door stops reading from it.
MAX_EARLY_BYTES = 64 * 1024
#: How every head served here starts; a connection whose first bytes differ goes to aiohttp at once.
LEAN_PREFIX = b"GET /$hc/"
#: The ``sb-hc-action`` values served here: the two upgrades of a rendezvous, a listener's control channel.
LEAN_ACTIONS = frozenset({"connect", "accept", "listen"})
_JSON = "application/json; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"


def answer_bytes(answer: HttpAnswer, content_type: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response for ``answer`` (reason made safe here)."""
    body = answer.text.encode()
    lines = [f"HTTP/1.1 {answer.status} {reason_phrase(answer.reason)}"]
    lines += [f"{name}: {value}" for name, value in answer.headers.items()]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + body


class Door:
    """The protocol factory for the relay's accepted connections.

    Args:
        front: classifies and serves the upgrades (and writes refusals) for the lean path.
        server: aiohttp's server (``runner.server``), whose handlers get every other connection.
        gate: counts connections per source as they arrive.
        idle_timeout: seconds a connection may take to send its complete request head.
    """

    def __init__(
        self, front: FrontDoor, server: web.Server, gate: ConnectionGate, idle_timeout: float
    ) -> None:
        self.front = front
        self.server = server
        self.gate = gate
        self.idle_timeout = idle_timeout
        self.open: set[DoorProtocol | LeanHttpConnection] = set()
        self.lean_requests = 0  # relayed HTTP requests served by hyco.server.leanhttp (tests read it)
        self._payloads: BaseProtocol | None = None

    def __call__(self) -> DoorProtocol:
        """A protocol for one accepted connection."""
        return DoorProtocol(self)

    def parser(self) -> HttpRequestParser:
        """A request-head parser with aiohttp's server limits (its RequestHandler's defaults)."""
        loop = asyncio.get_running_loop()
        if self._payloads is None:
            self._payloads = BaseProtocol(loop)  # the parser wants one for bodies; heads only are fed
        return HttpRequestParser(self._payloads, loop, 2**16, max_line_size=8190, max_field_size=8190)

    def hand_over(self, transport: asyncio.Transport, data: bytes) -> None:
        """Give a connection to a fresh aiohttp handler, with the bytes read from it so far."""
        handler = self.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)  # the gate counted it already
        handler.data_received(data)

    def close(self) -> None:
        """Drop the connections still in the door's hands (heads, upgrades being served): shutdown."""
        for door in list(self.open):
            door.abort()


class DoorProtocol(asyncio.Protocol):
    """One accepted connection until it is upgraded, answered, or handed to aiohttp."""

    __slots__ = ("_buf", "_door", "_early", "_serving", "_timer", "peername", "transport")

    def __init__(self, door: Door) -> None:
        self._door = door
        self.transport: asyncio.Transport | None = None
        self.peername: tuple[str, int] | None = None
        self._buf = bytearray()
        self._early = bytearray()  # bytes after the head of an upgrade being served
        self._serving: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection for its source (or refuse it) and start the head timeout."""
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peername = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        if not self._door.gate.admit(transport):
            return
        tcp_keepalive(transport)  # as aiohttp's handler does: relayed connections live long
        self._door.open.add(self)
        self._timer = asyncio.get_running_loop().call_later(self._door.idle_timeout, self.abort)

    def data_received(self, data: bytes) -> None:
        """Collect the head; serve it, or hand the connection to aiohttp."""
        if self._serving is not None:
            self._early += data
            if len(self._early) > MAX_EARLY_BYTES and self.transport is not None:
                self.transport.pause_reading()
            return
        start = max(0, len(self._buf) - 3)
        self._buf += data
        known = min(len(self._buf), len(LEAN_PREFIX))
        if self._buf[:known] != LEAN_PREFIX[:known]:
            if may_be_lean(self._buf):
                self._to_lean_http()  # relayed HTTP, perhaps: hyco.server.leanhttp decides on the head
            else:
                self._hand_over()  # at once: not served here (or not HTTP: TLS to a plain port)
            return
        end = self._buf.find(b"\r\n\r\n", start)
        if end < 0:
            if len(self._buf) > MAX_LEAN_HEAD or bare_line_feed(self._buf):
                self._hand_over()
            return
        head_end = end + 4
        message = self._lean_upgrade(bytes(self._buf[:head_end]))
        if message is None:
            self._hand_over()
            return
        self._early = self._buf[head_end:]
        self._buf = bytearray()
        self._cancel_timer()
        self._serving = asyncio.ensure_future(self._serve(message))

    def eof_received(self) -> bool | None:
        """The client stopped sending: the connection closes (as under aiohttp)."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop serving (a sender that hung up stops waiting for a listener) and stop counting it."""
        self._cancel_timer()
        self._door.open.discard(self)
        self._door.gate.uncount(self.transport)
        if self._serving is not None:
            self._serving.cancel()

    def abort(self) -> None:
        """Drop the connection (head timeout, shutdown)."""
        if self.transport is not None:
            self.transport.close()

    def on_lost(self) -> Callable[[Exception | None], None]:
        """What the upgraded connection's FramePeer calls when it ends: stop counting it for its source (a
        closure, so the door's protocol is not kept for the connection's lifetime)."""
        gate, transport = self._door.gate, self.transport
        return lambda _: gate.uncount(transport)

    def take_early_bytes(self) -> bytes:
        """The bytes that came after the head, and stop taking any (the connection is being upgraded)."""
        early, self._early = bytes(self._early), bytearray()
        self._door.open.discard(self)
        if self.transport is not None and len(early) > MAX_EARLY_BYTES:
            self.transport.resume_reading()
        return early

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _lean_upgrade(self, head: bytes) -> RawRequestMessage | None:
        """The parsed head if it is a well-formed stream upgrade served here, else None."""
        try:
            messages, upgraded, _ = self._door.parser().feed_data(head)
        except HttpProcessingError:
            return None  # aiohttp answers it
        if len(messages) != 1 or not upgraded:
            return None
        message: RawRequestMessage = messages[0][0]
        if message.method != "GET" or message.version != HttpVersion11 or "Host" not in message.headers:
            return None
        url = message.url
        if not is_websocket_path(url.raw_path):
            return None
        action = query_params(url.raw_query_string).get("sb-hc-action", "")
        return message if action.lower() in LEAN_ACTIONS else None

    def _hand_over(self) -> None:
        """Give the connection to a fresh aiohttp handler, with what was read so far."""
        transport = self.transport
        assert transport is not None
        self._cancel_timer()
        self._door.open.discard(self)
        data, self._buf = bytes(self._buf), bytearray()
        self._door.hand_over(transport, data)

    def _to_lean_http(self) -> None:
        """Give the connection to the lean HTTP path with what was read so far (same head deadline)."""
        transport, timer = self.transport, self._timer
        assert transport is not None and timer is not None
        self._cancel_timer()
        self._door.open.discard(self)
        data, self._buf = bytes(self._buf), bytearray()
        LeanHttpConnection.take(self._door, transport, timer.when(), data)

    async def _serve(self, message: RawRequestMessage) -> None:
        transport = self.transport
        assert transport is not None
        front = self._door.front
        handshake = LeanHandshake(self, message)
        raw_path, raw_query = message.url.raw_path, message.url.raw_query_string
        tracking_id = request_tracking_id(raw_query)
        content_type = _TEXT
        try:
            front.check_open()
            answer = await front.upgrade(handshake, raw_path, raw_query, tracking_id)
        except RelayError as exc:
            answer = front.refusal(
                exc, tracking_id, message.method, raw_path, handshake.host, handshake.remote
            )
            content_type = _JSON
        except web.HTTPException as exc:  # not a valid WebSocket upgrade: aiohttp's own 400
            answer = HttpAnswer(exc.status, exc.reason, text=exc.text or "")
        except Exception:  # a bug: answered as aiohttp answers a handler's exception
            log.exception("serving %s failed", raw_path[:200])
            answer = HttpAnswer(500, "Internal Server Error")
        if answer is not None and not handshake.upgraded:
            transport.write(answer_bytes(answer, content_type))
            transport.close()


class LeanHandshake:
    """An upgrade read by the lean door (an :class:`~hyco.server.engine.SpliceHandshake` and a
    :class:`~hyco.server.engine.ListenHandshake`)."""

    __slots__ = ("_door", "_message", "on_upgrade", "upgraded")

    def __init__(self, door: DoorProtocol, message: RawRequestMessage) -> None:
        self._door = door
        self._message = message
        self.on_upgrade: Callable[[], None] | None = None
        self.upgraded = False

    @property
    def headers(self) -> Mapping[str, str]:
        """The request headers (case-insensitive; repeated names iterate once per value)."""
        return self._message.headers

    @property
    def host(self) -> str:
        """The Host header the client sent."""
        return self._message.headers["Host"]

    @property
    def remote(self) -> str:
        """The client's IP address, for logs (``?`` if unknown)."""
        peer = self._door.peername
        return peer[0] if peer else "?"

    @property
    def peername(self) -> tuple[str, int] | None:
        """The client's ``(address, port)``."""
        return self._door.peername

    @property
    def offered_protocol(self) -> str | None:
        """The first sub-protocol the client offered, if any."""
        return self._message.headers.get("Sec-WebSocket-Protocol", "").split(",")[0].strip() or None

    @property
    def transport(self) -> asyncio.BaseTransport | None:
        """The client's connection."""
        return self._door.transport

    @property
    def secure(self) -> bool:
        """Whether the connection is TLS."""
        transport = self._door.transport
        return transport is not None and transport.get_extra_info("sslcontext") is not None

    async def accept(
        self, name: str, *, protocol: str | None, max_message_size: int, heartbeat: float | None = None
    ) -> ControlPeer:
        """Write the 101 and make a :class:`ControlPeer` (a listener's control channel) the connection's
        protocol.

        Raises:
            ConnectionLost: the client went away during the handshake.
            web.HTTPBadRequest: not a valid WebSocket upgrade (aiohttp's 400).
        """
        peer = ControlPeer(name, max_message_size, heartbeat)
        self._take_over(peer, protocol)
        return peer

    async def accept_spliced(
        self, name: str, *, protocol: str | None, max_message_size: int, heartbeat: float | None = None
    ) -> FramePeer:
        """Write the 101 and make a :class:`FramePeer` the connection's protocol.

        Raises:
            ConnectionLost: the client went away during the handshake.
            web.HTTPBadRequest: not a valid WebSocket upgrade (aiohttp's 400).
        """
        peer = FramePeer(name, max_message_size, heartbeat)
        self._take_over(peer, protocol)
        return peer

    def _take_over(self, peer: FramePeer, protocol: str | None) -> None:
        response = upgrade_response(self._message.headers, self._message.upgrade, protocol)
        transport = self._door.transport
        if transport is None or transport.is_closing():
            raise ConnectionLost("the client went away during the WebSocket handshake")
        transport.write(response)
        early = self._door.take_early_bytes()
        if early:
            peer.feed_data(early)
        self.upgraded = True
        if self.on_upgrade is not None:
            self.on_upgrade()
        peer.attach(transport, self._door.on_lost())
