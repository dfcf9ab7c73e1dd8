"""A minimal WebSocket client over a raw TCP stream that reads and writes frame by frame.

Tests use it where aiohttp's client would hold a whole message in memory (gigabyte bodies), so what is
measured is the relay, not the test's own buffers.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from hyco.protocol.frames import Frame, FrameParser, Opcode, encode_frame


class RawStreamClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser(max_frame_size=64 * 1024 * 1024, expect_masked=False)
        self.frames: list[Frame] = []

    @classmethod
    async def connect(
        cls, url: str, *, headers: str = "", then: bytes = b"", sock: socket.socket | None = None
    ) -> RawStreamClient:
        """Open a WebSocket to ``url``; ``headers`` are extra header lines (each ending CRLF) and ``then`` is
        written in the same packet as the upgrade request (frames pipelined behind it). ``sock``: a socket
        already connected to ``url``'s host (with options of the test's choosing)."""
        parts = urlsplit(url)
        assert parts.scheme == "ws", "plain ws only"
        if sock is not None:
            reader, writer = await asyncio.open_connection(sock=sock)
        else:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        writer.write(
            (
                f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"{headers}\r\n"
            ).encode()
            + then
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self) -> Frame:
        while not self.frames:
            data = await self.reader.read(256 * 1024)
            if not data:
                raise ConnectionError("closed")
            self.frames.extend(self.parser.feed(data))
        return self.frames.pop(0)

    async def text(self) -> str:
        frame = await self.frame()
        assert frame.opcode is Opcode.TEXT and frame.fin, frame.opcode
        return frame.payload.decode()

    async def binary_chunks(self) -> AsyncIterator[bytes]:
        frame = await self.frame()
        assert frame.opcode is Opcode.BINARY
        yield frame.payload
        while not frame.fin:
            frame = await self.frame()
            yield frame.payload

    async def send_text(self, text: str) -> None:
        self.writer.write(encode_frame(Opcode.TEXT, text.encode(), mask=os.urandom(4)))
        await self.writer.drain()

    async def send_binary_stream(self, chunks: AsyncIterator[bytes]) -> None:
        opcode = Opcode.BINARY
        async for chunk in chunks:
            self.writer.write(encode_frame(opcode, chunk, fin=False, mask=os.urandom(4)))
            await self.writer.drain()
            opcode = Opcode.CONTINUATION
        self.writer.write(encode_frame(opcode, b"", mask=os.urandom(4)))
        await self.writer.drain()

    async def send_frame(self, opcode: Opcode, payload: bytes = b"", *, fin: bool = True) -> None:
        """Write one masked frame as given (fragments, control frames, odd sizes)."""
        self.writer.write(encode_frame(opcode, payload, fin=fin, mask=os.urandom(4)))
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()
