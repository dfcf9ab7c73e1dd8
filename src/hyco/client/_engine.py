"""The SDK's WebSocket engine: the one client module that reaches into aiohttp's private WebSocket API.

aiohttp has no public way to send a Close without entering its closing state (half-close, design.md "Known
gaps of aiohttp"), to drop a connection without the closing handshake, or to read the handshake's response
headers. Everything else in ``hyco.client`` uses aiohttp's public API only; a faster engine replaces this
module.
"""

from __future__ import annotations

from typing import Any

import aiohttp

__all__ = ["drop", "handshake_headers", "send_close_frame"]

#: Close reasons must fit a control frame (125 bytes with the 2-byte code, RFC 6455 5.5).
MAX_CLOSE_REASON = 123


def handshake_headers(ws: aiohttp.ClientWebSocketResponse) -> dict[str, str]:
    """The headers of the relay's ``101 Switching Protocols`` answer."""
    return dict(ws._response.headers)


async def send_close_frame(ws: aiohttp.ClientWebSocketResponse, code: int, reason: str) -> None:
    """Write a Close frame and return: the socket keeps reading (the peer's data and its Close still come)."""
    await ws._writer.close(code, reason.encode()[:MAX_CLOSE_REASON])


def drop(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Mark the socket closed and drop its TCP connection without further frames."""
    raw: Any = ws
    raw._set_closed()
    raw._response.close()
