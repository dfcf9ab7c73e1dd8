"""The SDK's lean stream data path against a scripted relay: a real WebSocket server on 127.0.0.1 port 0 that
answers the upgrade by hand, then writes exactly the frames a test scripts and records what the client sends.

What the relay in the other tests never does on its own is scripted here: bytes right behind the 101,
fragmented messages with a ping between the fragments, pings while data flows, a framing error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from hyco import HybridConnectionClient, StreamBroken
from hyco.client._wsconn import WsConnection
from hyco.protocol.frames import Frame, FrameParser, Opcode, encode_close, encode_frame
from tests.conftest import TIMEOUT, read_slowly

MiB = 1024 * 1024
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class ScriptedRelay:
    """One accepted connection: ``write`` sends raw bytes, ``frames`` gets what the client sent."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    parser: FrameParser = field(
        default_factory=lambda: FrameParser(max_frame_size=16 * MiB, expect_masked=True)
    )
    raw: bytearray = field(default_factory=bytearray)  # everything the client sent after the upgrade

    async def next_frame(self) -> Frame:
        """The client's next frame (every byte of it is also kept in ``raw``)."""
        pending: list[Frame] = getattr(self, "_pending", [])
        self._pending = pending
        while not pending:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("the client closed the connection")
            self.raw += data
            pending += self.parser.feed(data)
        return pending.pop(0)

    async def next_of(self, opcode: Opcode) -> Frame:
        """The client's next frame with ``opcode`` (others are skipped)."""
        while (frame := await self.next_frame()).opcode is not opcode:
            pass
        return frame


Script = Callable[[ScriptedRelay], Awaitable[None]]


@contextlib.asynccontextmanager
async def scripted_relay(script: Script, *, behind_101: bytes = b"") -> AsyncIterator[str]:
    """Serve one WebSocket upgrade, then run ``script``; yields the ``ws://`` address for the client.

    ``behind_101`` is written in the same write as the 101 response (bytes the client reads with it).
    """
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            key = next(
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n")
                if line.lower().startswith("sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
            writer.write(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
                ).encode()
                + behind_101
            )
            await script(ScriptedRelay(reader, writer))
            done.set_result(None)
        except BaseException as exc:
            if not done.done():
                done.set_exception(exc)
            raise
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/lean"
        async with asyncio.timeout(TIMEOUT):
            await done  # the script's own assertions


def data_frames(chunks: list[bytes], opcode: Opcode = Opcode.BINARY) -> bytes:
    """One message split into unmasked frames (as the relay forwards a fragmented message)."""
    frames = b""
    for index, chunk in enumerate(chunks):
        frames += encode_frame(
            opcode if index == 0 else Opcode.CONTINUATION, chunk, fin=index == len(chunks) - 1
        )
    return frames


async def test_bytes_behind_the_101_and_fragmented_messages_are_received_whole() -> None:
    text = "héllo wörld, fragmented"
    encoded = text.encode()

    async def script(relay: ScriptedRelay) -> None:
        # A ping between the fragments of a message (RFC 6455 5.4) is answered with its payload.
        relay.writer.write(
            encode_frame(Opcode.BINARY, b"one ", fin=False)
            + encode_frame(Opcode.PING, b"between")
            + encode_frame(Opcode.CONTINUATION, b"binary ", fin=False)
            + encode_frame(Opcode.CONTINUATION, b"message")
            + data_frames([encoded[:3], encoded[3:9], encoded[9:]], Opcode.TEXT)
        )
        pong = await relay.next_of(Opcode.PONG)
        assert pong.payload == b"between"
        relay.writer.write(encode_frame(Opcode.CLOSE, encode_close(1000)))
        await relay.next_of(Opcode.CLOSE)

    first = encode_frame(Opcode.BINARY, b"right behind the 101")
    async with scripted_relay(script, behind_101=first) as url:
        stream = await HybridConnectionClient(url, connect_timeout=TIMEOUT).connect()
        async with asyncio.timeout(TIMEOUT), stream:
            assert await stream.receive() == b"right behind the 101"
            assert await stream.receive() == b"one binary message"
            assert await stream.receive() == text
            assert await stream.receive() is None  # the clean Close


async def test_every_frame_is_masked_with_a_fresh_key() -> None:
    count = 50

    async def script(relay: ScriptedRelay) -> None:
        payloads = [(await relay.next_of(Opcode.BINARY)).payload for _ in range(count)]
        assert payloads == [f"message {i}".encode() for i in range(count)]  # unmasked correctly
        # Each small frame is: 2 header bytes (mask bit set), 4 key bytes, the masked payload.
        keys, pos = [], 0
        for payload in payloads:
            assert relay.raw[pos + 1] & 0x80, "a client frame without the mask bit"
            keys.append(bytes(relay.raw[pos + 2 : pos + 6]))
            pos += 6 + len(payload)
        assert len(set(keys)) == count, "a masking key was used twice"
        relay.writer.write(encode_frame(Opcode.CLOSE, encode_close(1000)))
        await relay.next_of(Opcode.CLOSE)

    async with scripted_relay(script) as url:
        stream = await HybridConnectionClient(url, connect_timeout=TIMEOUT).connect()
        async with asyncio.timeout(TIMEOUT), stream:
            for i in range(count):
                await stream.write(f"message {i}".encode())
            assert await stream.read() == b""


async def test_pings_are_answered_while_data_flows() -> None:
    rounds = 40
    block = os.urandom(256 * 1024)

    async def script(relay: ScriptedRelay) -> None:
        for i in range(rounds):
            relay.writer.write(encode_frame(Opcode.BINARY, block) + encode_frame(Opcode.PING, b"%d" % i))
            await relay.writer.drain()
        # Every ping got its pong, in order, although the client was busy reading data all along.
        pongs = [(await relay.next_of(Opcode.PONG)).payload for _ in range(rounds)]
        assert pongs == [b"%d" % i for i in range(rounds)]
        relay.writer.write(encode_frame(Opcode.CLOSE, encode_close(1000)))
        await relay.next_of(Opcode.CLOSE)

    async with scripted_relay(script) as url:
        stream = await HybridConnectionClient(url, connect_timeout=TIMEOUT).connect()
        async with asyncio.timeout(TIMEOUT), stream:
            received = bytearray()
            while data := await stream.read():
                received += data
            assert received == block * rounds


@pytest.mark.slow
async def test_a_slow_reader_bounds_memory() -> None:
    total = 96 * MiB
    block = os.urandom(MiB)

    async def script(relay: ScriptedRelay) -> None:
        frame = encode_frame(Opcode.BINARY, block)
        for _ in range(total // MiB):
            relay.writer.write(frame)
            await relay.writer.drain()  # the scripted relay itself never buffers more than a frame
        relay.writer.write(encode_frame(Opcode.CLOSE, encode_close(1000)))
        await relay.next_of(Opcode.CLOSE)

    async with scripted_relay(script) as url:
        stream = await HybridConnectionClient(url, connect_timeout=TIMEOUT).connect()
        async with stream:
            received, growth = await read_slowly(stream.read, {8 * MiB, 40 * MiB, 72 * MiB}, TIMEOUT * 6)
    assert received == total
    assert growth < 16 * MiB, f"memory grew by {growth / MiB:.1f} MiB while a slow reader received 96 MiB"


async def test_a_framing_error_from_the_relay_breaks_the_stream_with_1002() -> None:
    async def script(relay: ScriptedRelay) -> None:
        relay.writer.write(
            encode_frame(Opcode.BINARY, b"fine") + encode_frame(Opcode.BINARY, b"masked", mask=b"abcd")
        )
        close = await relay.next_of(Opcode.CLOSE)
        assert close.payload[:2] == (1002).to_bytes(2, "big")

    async with scripted_relay(script) as url:
        stream = await HybridConnectionClient(url, connect_timeout=TIMEOUT).connect()
        async with asyncio.timeout(TIMEOUT), stream:
            assert await stream.read() == b"fine"
            with pytest.raises(StreamBroken) as broken:
                await stream.read()
            assert broken.value.close_code == 1006
            assert "masked frame" in str(broken.value)


class Recorder:
    """A frame sink that keeps what the connection delivers."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bool, bool]] = []
        self.closed: tuple[int, str] | None = None

    def frame(self, payload: bytes | bytearray | memoryview, text: bool, fin: bool) -> None:
        self.frames.append((bytes(payload), text, fin))

    def closed_by_peer(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def lost(self, error: BaseException | None) -> None:
        pass

    def send_paused(self) -> None:
        pass

    def send_resumed(self) -> None:
        pass

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("piece", [1, 5, 1000, 16397, 70000])
async def test_frames_split_anywhere_between_reads_are_delivered_intact(piece: int) -> None:
    # Every way a read can cut the frame stream: inside a header, inside a small payload, inside a large
    # payload (which gets a buffer of its own), right at the boundaries; and more frames in one read than
    # are handled per loop turn.
    sizes = [0, 1, 125, 126, 16383, 16384, 65535, 65536, 20000]
    payloads = [os.urandom(n) for n in sizes]
    wire = b"".join(
        encode_frame(Opcode.BINARY, p, fin=i % 3 != 0)
        if i % 3 == 0
        else encode_frame(Opcode.CONTINUATION, p, fin=i % 3 == 2)
        for i, p in enumerate(payloads)
    )
    wire = encode_frame(Opcode.PING, b"p") * 150 + wire  # past the per-turn frame budget in one read
    wire += encode_frame(Opcode.TEXT, b"done") + encode_frame(Opcode.CLOSE, encode_close(1000, "bye"))
    expected = [(p, False, i % 3 == 2) for i, p in enumerate(payloads)] + [(b"done", True, True)]

    accepted: list[asyncio.StreamWriter] = []

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # closed at the end (the client's pongs go there unread)

    server = await asyncio.start_server(keep, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, "127.0.0.1", port)
        connection = WsConnection.take_over(transport, b"", lambda exc: None)  # type: ignore[arg-type]
        recorder = Recorder()
        connection.attach(recorder)
        for start in range(0, len(wire), piece):
            connection.data_received(wire[start : start + piece])
        async with asyncio.timeout(TIMEOUT):
            while recorder.closed is None:  # the per-turn frame budget leaves frames for later loop turns
                await asyncio.sleep(0)
        assert recorder.frames == expected
        assert recorder.closed == (1000, "bye")
        transport.close()
        for writer in accepted:
            writer.close()
