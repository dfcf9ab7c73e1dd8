"""A server WebSocket that streams frames instead of whole messages (design.md, "Fragments").

Used for HTTP request rendezvous sockets (protocol.md 4.3), where a body of any size travels as one binary
message of many frames. aiohttp performs the handshake; after it, the socket's bytes go to a
:class:`~hyco.protocol.frames.FrameParser` instead of aiohttp's reassembling reader, and frames are written
directly to the transport. Memory stays bounded: reading pauses the transport once ``read_limit`` bytes of
frames wait unconsumed, and writes wait for the transport's buffer to drain.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp._websocket.helpers import websocket_mask

from hyco.exceptions import ConnectionLost, RemoteProtocolError
from hyco.protocol.frames import (
    Frame,
    FrameParser,
    Opcode,
    binary_payloads,
    encode_close,
    encode_frame,
    parse_close,
    read_text,
)

__all__ = ["StreamingWebSocket"]

#: Bytes of frame payload per written frame when streaming a body.
WRITE_CHUNK = 64 * 1024


def _unmask(key: bytes, payload: bytes) -> bytes:
    data = bytearray(payload)
    websocket_mask(key, data)
    return bytes(data)


class _Response(web.WebSocketResponse):
    """aiohttp's handshake, then our parser instead of aiohttp's reader."""

    def __init__(self, owner: StreamingWebSocket, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._owner = owner

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        # Overrides aiohttp's hook that installs its reassembling reader (aiohttp 3.10+).
        self._ws_protocol = protocol
        self._writer = writer
        request.protocol.set_parser(self._owner)  # type: ignore[arg-type]
        request.protocol.keep_alive(False)


class StreamingWebSocket:
    """One server-side WebSocket with frame-level reads and streamed writes.

    Args:
        max_frame_size: largest frame payload accepted from the peer.
        read_limit: bytes of received frames buffered before the socket stops reading.
    """

    def __init__(self, *, max_frame_size: int = 1024 * 1024, read_limit: int = 1024 * 1024) -> None:
        self._parser = FrameParser(max_frame_size=max_frame_size, expect_masked=True, unmask=_unmask)
        self._frames: collections.deque[Frame] = collections.deque()
        self._buffered = 0
        self._read_limit = read_limit
        self._ready = asyncio.Event()
        self._eof = False
        self._error: Exception | None = None
        self._response = _Response(self, autoclose=False, compress=False)
        self._request: web.BaseRequest | None = None
        self._paused = False
        self._write_lock = asyncio.Lock()
        self.close_sent = False
        self.close_received: tuple[int, str] | None = None

    async def prepare(self, request: web.BaseRequest) -> web.WebSocketResponse:
        """Complete the handshake; returns the response object the handler must return."""
        self._request = request
        await self._response.prepare(request)
        return self._response

    # --- parser interface called by aiohttp's protocol (feed_data/feed_eof) ---

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """Called by aiohttp with received bytes."""
        if self._error is not None:
            return False, b""
        try:
            for frame in self._parser.feed(data):
                self._frames.append(frame)
                self._buffered += len(frame.payload)
        except RemoteProtocolError as exc:
            self._error = exc
        self._ready.set()
        if self._buffered > self._read_limit and not self._paused:
            self._pause(True)
        return False, b""

    def feed_eof(self) -> None:
        """Called by aiohttp when the connection is gone."""
        self._eof = True
        self._ready.set()

    def _pause(self, paused: bool) -> None:
        transport = self._request.transport if self._request else None
        if transport is None:
            return
        self._paused = paused
        with contextlib.suppress(RuntimeError, AttributeError):
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # --- reading ---

    async def receive_frame(self) -> Frame:
        """The next data frame; pings are answered, a Close is recorded and raised.

        Raises:
            ConnectionLost: the peer closed (``close_received`` is set) or vanished.
            RemoteProtocolError: the peer broke the framing rules.
        """
        while True:
            if self._frames:
                frame = self._frames.popleft()
                self._buffered -= len(frame.payload)
                if self._paused and self._buffered <= self._read_limit // 2:
                    self._pause(False)
                if frame.opcode is Opcode.PING:
                    await self._write(encode_frame(Opcode.PONG, frame.payload))
                    continue
                if frame.opcode is Opcode.PONG:
                    continue
                if frame.opcode is Opcode.CLOSE:
                    self.close_received = parse_close(frame.payload)
                    raise ConnectionLost(f"the peer closed the socket ({self.close_received[0]})")
                return frame
            if self._error is not None:
                raise self._error
            if self._eof:
                raise ConnectionLost("the peer's connection was lost")
            self._ready.clear()
            await self._ready.wait()

    async def receive_text(self) -> str:
        """Read one whole text message (a small JSON command); raises as :func:`read_text`."""
        return await read_text(self.receive_frame)

    def receive_binary_stream(self) -> AsyncIterator[bytes]:
        """The payloads of the next binary message's frames as they arrive; see :func:`binary_payloads`."""
        return binary_payloads(self.receive_frame)

    # --- writing ---

    async def _write(self, data: bytes) -> None:
        request = self._request
        transport = request.transport if request else None
        if transport is None or transport.is_closing():
            raise ConnectionLost("the peer's connection is closed")
        transport.write(data)
        # The response's stream writer knows whether the transport is paused; aiohttp has no public drain.
        writer = self._response._payload_writer
        if writer is not None:
            await writer.drain()

    async def send_text(self, text: str) -> None:
        """Send one text message."""
        async with self._write_lock:
            await self._write(encode_frame(Opcode.TEXT, text.encode()))

    async def send_binary_stream(self, chunks: AsyncIterator[bytes]) -> int:
        """Send one binary message whose frames are ``chunks`` as they come, ending with an empty final frame.

        Returns:
            The number of payload bytes sent.
        """
        total = 0
        async with self._write_lock:
            opcode = Opcode.BINARY
            async for chunk in chunks:
                for start in range(0, len(chunk), WRITE_CHUNK):
                    piece = chunk[start : start + WRITE_CHUNK]
                    await self._write(encode_frame(opcode, piece, fin=False))
                    opcode = Opcode.CONTINUATION
                    total += len(piece)
            await self._write(encode_frame(opcode, b"", fin=True))
        return total

    async def send_binary(self, data: bytes) -> None:
        """Send one binary message in a single frame."""
        async with self._write_lock:
            await self._write(encode_frame(Opcode.BINARY, data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a Close (once) and drop the connection; does not wait for the peer's answer."""
        if not self.close_sent:
            self.close_sent = True
            with contextlib.suppress(ConnectionLost, ConnectionError, RuntimeError):
                await self._write(encode_frame(Opcode.CLOSE, encode_close(code, reason)))
        transport = self._request.transport if self._request else None
        if transport is not None and not transport.is_closing():
            transport.close()
