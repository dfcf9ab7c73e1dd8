"""The aiohttp side of the WebSocket seam: server sockets as :class:`~hyco.server.splice.Peer` objects."""

from __future__ import annotations

import struct

from aiohttp import WSMsgType, web
from aiohttp.client_exceptions import ClientConnectionResetError

from hyco.server.peer import Message, MessageKind, PeerGone

__all__ = ["WebSocketPeer", "new_websocket"]

_DATA_KINDS = {WSMsgType.TEXT: MessageKind.TEXT, WSMsgType.BINARY: MessageKind.BINARY}
_OPCODES = {MessageKind.TEXT: WSMsgType.TEXT, MessageKind.BINARY: WSMsgType.BINARY}
#: Close reasons must fit a control frame (125 bytes with the 2-byte code).
_MAX_REASON = 123


def new_websocket(
    *, protocol: str | None, max_message_size: int, heartbeat: float | None = None
) -> web.WebSocketResponse:
    """A server WebSocket set up for relaying.

    ``autoclose=False`` lets the relay forward a Close instead of echoing it (half-close); compression is off
    because the relay forwards payloads untouched and negotiates no extension end to end (protocol.md 3.2).
    """
    return web.WebSocketResponse(
        protocols=(protocol,) if protocol else (),
        autoclose=False,
        autoping=True,
        compress=False,
        max_msg_size=max_message_size,
        heartbeat=heartbeat,
        decode_text=False,
    )


class WebSocketPeer:
    """A prepared aiohttp server WebSocket behind the splice's Peer seam."""

    def __init__(self, name: str, ws: web.WebSocketResponse, request: web.BaseRequest) -> None:
        self.name = name
        self._ws = ws
        self._request = request

    async def receive(self) -> Message:
        """Next message; CLOSING/CLOSED/ERROR become GONE."""
        try:
            msg = await self._ws.receive()
        except (RuntimeError, ConnectionError):
            return Message(MessageKind.GONE)
        kind = _DATA_KINDS.get(msg.type)
        if kind is not None:
            data = msg.data
            return Message(kind, data if isinstance(data, bytes) else data.encode())
        if msg.type is WSMsgType.CLOSE:
            return Message(MessageKind.CLOSE, code=int(msg.data or 1000), reason=msg.extra or "")
        return Message(MessageKind.GONE)

    async def send(self, message: Message) -> None:
        """Send one data message, waiting while the transport's buffer is full."""
        try:
            await self._ws.send_frame(message.data, _OPCODES[message.kind])
        except (ClientConnectionResetError, ConnectionError, RuntimeError) as exc:
            raise PeerGone(self.name) from exc

    async def send_close(self, code: int, reason: str) -> None:
        """Send a Close frame and return without waiting for the peer's Close."""
        payload = struct.pack("!H", code) + reason.encode()[:_MAX_REASON]
        try:
            await self._ws.send_frame(payload, WSMsgType.CLOSE)
        except (ClientConnectionResetError, ConnectionError, RuntimeError) as exc:
            raise PeerGone(self.name) from exc

    def abort(self) -> None:
        """Close the TCP connection (after both Close frames, the server closes first: RFC 6455 7.1.1)."""
        transport = self._request.transport
        if transport is not None and not transport.is_closing():
            transport.close()
