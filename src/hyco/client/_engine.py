"""The SDK's WebSocket engine: the one client module that reaches into aiohttp's private WebSocket API.

aiohttp dials and checks every upgrade. A relayed stream then leaves aiohttp: :class:`TakenOverWebSocket`
(the session's ``ws_response_class``) hands the connection to the lean data path
(:class:`~hyco.client._wsconn.WsConnection`) the moment aiohttp accepted the 101, before aiohttp's frame
reader saw a byte of it; the bytes that came behind the 101 go with it. aiohttp has no public way to do
that, nor to read the handshake's response headers. (Half-close, which aiohttp's client lacks, design.md
"Known gaps of aiohttp", is the lean connection's own: it sends a Close and keeps reading.)
"""

from __future__ import annotations

from typing import Any

import aiohttp

from hyco.client._wsconn import WsConnection

__all__ = ["TakenOverWebSocket", "handshake_headers"]


class TakenOverWebSocket(aiohttp.ClientWebSocketResponse):
    """An upgraded connection whose frames are handled by :attr:`connection`, not by aiohttp.

    Only the handshake's results (``protocol``, :func:`handshake_headers`) are read from it afterwards.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # aiohttp hands the bytes behind the 101 (kept in the protocol's ``_tail``) to its frame reader
        # right after this constructor returns: take them, and the transport, first.
        raw: Any = self._response.connection
        protocol = raw.protocol
        received, protocol._tail = protocol._tail, b""
        self.connection = WsConnection.take_over(raw.transport, received, protocol.connection_lost)

    def release(self) -> None:
        """Tell aiohttp the connection is done with (after :attr:`connection` closed or dropped it)."""
        self._response.close()


def handshake_headers(ws: aiohttp.ClientWebSocketResponse) -> dict[str, str]:
    """The headers of the relay's ``101 Switching Protocols`` answer."""
    return dict(ws._response.headers)
