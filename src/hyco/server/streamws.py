"""A server WebSocket that streams frames instead of whole messages (design.md, "Fragments").

Used for HTTP request rendezvous sockets (protocol.md 4.3), where a body of any size travels as one binary
message of many frames. The engine (``hyco.server.engine``) performs the handshake; after it, the socket's
bytes come here (:meth:`StreamingWebSocket.feed_data`) and go through a
:class:`~hyco.protocol.frames.FrameParser` instead of a reassembling reader, and frames are written straight
to the transport. Memory stays bounded: reading pauses once ``read_limit`` bytes of frames wait unconsumed,
each frame counting ``FRAME_OVERHEAD`` bytes on top of its payload (so a flood of empty frames pauses the peer
too); writes wait for the transport's buffer to drain. The reader yields to the event loop every
``FRAMES_PER_TURN`` frames, so one peer's flood of tiny frames cannot starve everyone else.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

from hyco.exceptions import ConnectionLost, RemoteProtocolError
from hyco.protocol.frames import (
    Frame,
    FrameParser,
    Opcode,
    binary_payloads,
    encode_close,
    encode_frame,
    read_close,
    read_text,
)
from hyco.server.engine import FrameTransport, Handshake, unmask

__all__ = ["StreamingWebSocket"]

#: Bytes of frame payload per written frame when streaming a body.
WRITE_CHUNK = 64 * 1024
#: What a received frame costs against ``read_limit`` beyond its payload (its bookkeeping in memory).
FRAME_OVERHEAD = 128
#: Frames handled before the reader lets other connections run.
FRAMES_PER_TURN = 64


class StreamingWebSocket:
    """One server-side WebSocket with frame-level reads and streamed writes.

    Create it, then :meth:`accept` a handshake with it; until then nothing can be read or written.

    Args:
        max_frame_size: largest frame payload accepted from the peer.
        read_limit: bytes of received frames (payload plus ``FRAME_OVERHEAD`` each) buffered before the
            socket stops reading.
    """

    def __init__(self, *, max_frame_size: int = 1024 * 1024, read_limit: int = 1024 * 1024) -> None:
        self._parser = FrameParser(max_frame_size=max_frame_size, expect_masked=True, unmask=unmask)
        self._frames: collections.deque[Frame] = collections.deque()
        self._buffered = 0
        self._read_limit = read_limit
        self._ready = asyncio.Event()
        self._eof = False
        self._error: Exception | None = None
        self._transport: FrameTransport | None = None
        self._paused = False
        self._since_yield = 0
        self._write_lock = asyncio.Lock()
        self.close_sent = False
        self.close_received: tuple[int, str] | None = None

    async def accept(self, handshake: Handshake) -> None:
        """Complete the handshake; frames flow from then on.

        Raises:
            ConnectionLost: the peer went away during the handshake.
        """
        self._transport = await handshake.accept_frames(self)

    # --- the engine's FrameSink interface ---

    def feed_data(self, data: bytes) -> None:
        """Bytes arrived from the peer."""
        if self._error is not None:
            return
        try:
            for frame in self._parser.feed(data):
                if frame.opcode is Opcode.CLOSE:
                    read_close(frame.payload)  # checked as it arrives: a bad Close fails the connection
                self._frames.append(frame)
                self._buffered += len(frame.payload) + FRAME_OVERHEAD
        except RemoteProtocolError as exc:
            self._fail(exc)
        self._ready.set()
        if self._buffered > self._read_limit and not self._paused:
            self._pause(True)

    def _fail(self, error: RemoteProtocolError) -> None:
        """The peer broke the rules: a Close with the error's code, then the TCP close (RFC 6455 7.1.7).

        Frames that came before stay readable; :meth:`receive_frame` raises ``error`` after them.
        """
        self._error = error
        if not self.close_sent and self._transport is not None:
            self.close_sent = True
            self._transport.close(encode_frame(Opcode.CLOSE, encode_close(error.close_code, error.reason)))

    def feed_eof(self) -> None:
        """The connection is gone."""
        self._eof = True
        self._ready.set()

    def _pause(self, paused: bool) -> None:
        if self._transport is None:
            return
        self._paused = paused
        self._transport.pause_reading(paused)

    # --- reading ---

    async def receive_frame(self) -> Frame:
        """The next data frame; pings are answered, a Close is recorded and raised.

        Raises:
            ConnectionLost: the peer closed (``close_received`` is set) or vanished.
            RemoteProtocolError: the peer broke the framing rules.
        """
        while True:
            if self._frames:
                self._since_yield += 1
                if self._since_yield >= FRAMES_PER_TURN:
                    # A flood of tiny frames is all in memory already; let other connections run.
                    self._since_yield = 0
                    await asyncio.sleep(0)
                frame = self._frames.popleft()
                self._buffered -= len(frame.payload) + FRAME_OVERHEAD
                if self._paused and self._buffered <= self._read_limit // 2:
                    self._pause(False)
                if frame.opcode is Opcode.PING:
                    await self._write(encode_frame(Opcode.PONG, frame.payload))
                    continue
                if frame.opcode is Opcode.PONG:
                    continue
                if frame.opcode is Opcode.CLOSE:
                    self.close_received = read_close(frame.payload)
                    raise ConnectionLost(f"the peer closed the socket ({self.close_received[0]})")
                return frame
            if self._error is not None:
                raise self._error
            if self._eof:
                raise ConnectionLost("the peer's connection was lost")
            self._since_yield = 0
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
        if self._transport is None:
            raise ConnectionLost("the socket was never accepted")
        await self._transport.write(data)

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
        if self._transport is not None:
            self._transport.close()
