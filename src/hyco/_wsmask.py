"""WebSocket payload masking (RFC 6455 5.3) by aiohttp's C routine, shared by the relay's and the SDK's
frame-streaming sockets (the one place either side touches it)."""

from __future__ import annotations

from aiohttp._websocket.helpers import websocket_mask

__all__ = ["apply_mask", "mask_in_place"]


def apply_mask(key: bytes, payload: bytes) -> bytes:
    """``payload`` XORed with the 4-byte ``key`` (masking and unmasking are the same operation)."""
    data = bytearray(payload)
    websocket_mask(key, data)
    return bytes(data)


def mask_in_place(key: bytes, data: bytearray) -> None:
    """XOR ``data`` with the 4-byte ``key`` in place (no copy: the relay's splice unmasks its own buffer)."""
    websocket_mask(key, data)
