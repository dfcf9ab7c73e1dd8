"""``hyco.tools.pipe``: real local sockets piped to relayed streams through an in-process relay.

Also runs the stream conformance check (``hyco.testing.streams``) against :class:`HybridConnectionStream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from hyco import HybridConnectionStream, StreamBroken
from hyco.testing.streams import check_relay_stream
from hyco.tools.pipe import PipeEnd, PipeResult, pipe, pipe_files
from tests.conftest import TIMEOUT
from tests.tools.conftest import StreamPair

Sock = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def socket_pair() -> AsyncIterator[tuple[Sock, Sock]]:
    """Two ends of one real TCP connection on 127.0.0.1: (ours to pipe, the test's)."""
    accepted: asyncio.Future[Sock] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    async with server:
        client = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        inner = await accepted
        try:
            yield inner, client
        finally:
            client[1].close()
            inner[1].close()


async def test_bytes_each_way_and_half_close_both_ways(stream_pair: StreamPair) -> None:
    sender, accepted = await stream_pair()
    up, down = os.urandom(300_000), os.urandom(200_000)
    async with socket_pair() as (inner, (reader, writer)), asyncio.timeout(TIMEOUT):
        running = asyncio.ensure_future(pipe(*inner, accepted))
        writer.write(up)
        writer.write_eof()  # local EOF -> the relayed peer sees the end of data (shutdown)
        got = bytearray()
        while data := await sender.read():
            got += data
        assert bytes(got) == up
        await sender.write(down)  # the other direction still flows
        await sender.shutdown()  # relayed Close -> local EOF
        assert await reader.read() == down
        result = await running
    assert result == PipeResult(len(up), len(down), result.duration, PipeEnd.CLEAN)
    assert result.clean
    assert "clean" in result.describe()
    assert accepted.closed


async def test_relay_side_ends_first_then_local(stream_pair: StreamPair) -> None:
    sender, accepted = await stream_pair()
    async with socket_pair() as (inner, (reader, writer)), asyncio.timeout(TIMEOUT):
        running = asyncio.ensure_future(pipe(*inner, accepted))
        await sender.write(b"banner\n")
        await sender.shutdown()
        assert await reader.read() == b"banner\n"  # EOF while our side can still send
        writer.write(b"request")
        writer.write_eof()
        assert await sender.read() == b"request"
        assert await sender.read() == b""
        result = await running
    assert result.end is PipeEnd.CLEAN
    assert (result.to_relay, result.from_relay) == (7, 7)


async def test_local_reset_closes_the_relayed_stream(stream_pair: StreamPair) -> None:
    sender, accepted = await stream_pair()
    async with socket_pair() as (inner, (_, writer)), asyncio.timeout(TIMEOUT):
        running = asyncio.ensure_future(pipe(*inner, accepted))
        writer.write(b"partial")
        await writer.drain()
        assert await sender.readexactly(7) == b"partial"
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # with SO_LINGER 0: a reset, not a FIN
        result = await running
        assert result.end is PipeEnd.LOCAL_ERROR
        assert isinstance(result.error, ConnectionError)
        # The stream was dropped in turn, without waiting: the relay tells the sender with 1011.
        with pytest.raises(StreamBroken) as broken:
            await sender.read()
        assert broken.value.close_code == 1011
    assert accepted.closed


async def test_relayed_peer_vanishing_closes_the_local_socket(stream_pair: StreamPair) -> None:
    sender, accepted = await stream_pair()
    async with socket_pair() as (inner, (reader, _)), asyncio.timeout(TIMEOUT):
        running = asyncio.ensure_future(pipe(*inner, accepted))
        await sender.write(b"x")
        assert await reader.readexactly(1) == b"x"
        await sender.abort(
            code=None
        )  # the peer drops its TCP connection without a Close: the relay sends 1011
        result = await running
        assert result.end is PipeEnd.RELAY_ERROR
        assert isinstance(result.error, StreamBroken)
        assert result.error.close_code == 1011
        assert await reader.read() == b""  # the local socket was closed in turn (nothing was left unread)


async def test_cancelling_closes_both(stream_pair: StreamPair) -> None:
    sender, accepted = await stream_pair()
    async with socket_pair() as (inner, (reader, _)), asyncio.timeout(TIMEOUT):
        running = asyncio.ensure_future(pipe(*inner, accepted))
        await sender.write(b"x")
        assert await reader.readexactly(1) == b"x"
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        assert running.cancelled()
        assert accepted.closed
        assert await reader.read() == b""  # the local socket was closed
        with pytest.raises(StreamBroken) as broken:  # and the relayed stream dropped: 1011 for the sender
            await sender.read()
        assert broken.value.close_code == 1011


async def test_large_transfer_is_byte_exact(stream_pair: StreamPair) -> None:
    sender, accepted = await stream_pair()
    payload = os.urandom(8 * 1024 * 1024 + 3)
    async with socket_pair() as (inner, (reader, writer)), asyncio.timeout(TIMEOUT):
        running = asyncio.ensure_future(pipe(*inner, accepted, chunk_size=10_000))

        async def upload() -> None:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        async def echo() -> None:
            while data := await sender.read():
                await sender.write(data)
            await sender.shutdown()

        _, _, echoed = await asyncio.gather(upload(), echo(), reader.read())
        result = await running
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert result.to_relay == result.from_relay == len(payload)


async def test_files_are_piped_both_ways_like_nc(stream_pair: StreamPair) -> None:
    # hyco send / hyco listen: stdin and stdout are blocking files; the same loops move their bytes.
    sender, accepted = await stream_pair()
    up, down = os.urandom(200_000), os.urandom(100_000)
    sink = io.BytesIO()
    async with asyncio.timeout(TIMEOUT):
        running = asyncio.ensure_future(pipe_files(io.BytesIO(up), sink, accepted, chunk_size=10_000))
        got = bytearray()
        while data := await sender.read():  # the source's end of data half-closes the stream
            got += data
        assert bytes(got) == up
        await sender.write(down)
        await sender.shutdown()
        result = await running
    assert (result.end, result.to_relay, result.from_relay) == (PipeEnd.CLEAN, len(up), len(down))
    assert sink.getvalue() == down
    assert accepted.closed and not sink.closed  # the files stay the caller's


class BrokenSink(io.BytesIO):
    def write(self, data: object) -> int:
        raise BrokenPipeError("the reader of stdout went away")


async def test_a_failing_file_is_a_local_error(stream_pair: StreamPair) -> None:
    sender, accepted = await stream_pair()
    async with asyncio.timeout(TIMEOUT):
        running = asyncio.ensure_future(pipe_files(io.BytesIO(b"up"), BrokenSink(), accepted))
        await sender.write(b"down")
        result = await running
    assert result.end is PipeEnd.LOCAL_ERROR
    assert isinstance(result.error, BrokenPipeError)
    assert accepted.closed


async def test_hybrid_connection_stream_conformance(stream_pair: StreamPair) -> None:
    async def reset(stream: HybridConnectionStream) -> None:
        await stream.abort(code=None)  # drop the TCP connection without a Close frame

    await check_relay_stream(stream_pair, reset, timeout=TIMEOUT)
