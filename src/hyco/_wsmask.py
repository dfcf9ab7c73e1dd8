"""WebSocket payload masking (RFC 6455 5.3) by aiohttp's C routine, shared by the relay's and the SDK's
frame-streaming sockets (the one place either side touches it)."""

from __future__ import annotations

from aiohttp._websocket.helpers import websocket_mask

__all__ = ["apply_mask"]


def apply_mask(key: bytes, payload: bytes) -> bytes:
    """``payload`` XORed with the 4-byte ``key`` (masking and unmasking are the same operation)."""
    data = bytearray(payload)
    websocket_mask(key, data)
    return bytes(data)
