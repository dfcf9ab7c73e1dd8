"""The splice moves frames, not messages: fragments, pings and early frames over real sockets, frame by frame.

Both ends are raw WebSocket clients (``rawclient``) so the test sees every frame the relay writes.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from hyco.protocol.frames import Frame, Opcode, encode_frame, parse_close
from hyco.server import Limits, Relay
from tests.conftest import TIMEOUT
from tests.server.rawclient import RawStreamClient
from tests.server.wire import RawListener, connect_url, token_for


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def raw_pair(session, relay: Relay, *, early: bytes = b"") -> tuple[RawStreamClient, RawStreamClient]:
    """A spliced (sender, listener) pair of raw clients; ``early`` is pipelined behind the listener's dial."""
    listener = await RawListener.open(session, relay.url)
    auth = f"ServiceBusAuthorization: {token_for(relay.url, 'echo')}\r\n"
    sending = asyncio.ensure_future(RawStreamClient.connect(connect_url(relay.url, "echo"), headers=auth))
    address = (await listener.next_command())["accept"]["address"]
    rendezvous = await RawStreamClient.connect(address, then=early)
    sender = await asyncio.wait_for(sending, TIMEOUT)
    return sender, rendezvous


async def next_frame(client: RawStreamClient) -> Frame:
    return await asyncio.wait_for(client.frame(), TIMEOUT)


async def test_fragments_cross_as_fragments_with_type_and_fin_both_ways(relay: Relay, session):
    sender, rendezvous = await raw_pair(session, relay)
    await rendezvous.send_frame(Opcode.TEXT, b"he", fin=False)
    await rendezvous.send_frame(Opcode.PING, b"between fragments")
    await rendezvous.send_frame(Opcode.CONTINUATION, b"ll", fin=False)
    await rendezvous.send_frame(Opcode.CONTINUATION, b"o", fin=True)
    got = [await next_frame(sender) for _ in range(3)]
    assert got == [
        Frame(Opcode.TEXT, b"he", fin=False),
        Frame(Opcode.CONTINUATION, b"ll", fin=False),
        Frame(Opcode.CONTINUATION, b"o", fin=True),
    ]
    # The ping was answered to the listener, not forwarded.
    assert await next_frame(rendezvous) == Frame(Opcode.PONG, b"between fragments")
    big = bytes(range(256)) * 300  # 76,800 bytes: a 64-bit length header, masked in odd offsets
    await sender.send_frame(Opcode.BINARY, big[:1000], fin=False)
    await sender.send_frame(Opcode.CONTINUATION, big[1000:], fin=True)
    assert await next_frame(rendezvous) == Frame(Opcode.BINARY, big[:1000], fin=False)
    assert await next_frame(rendezvous) == Frame(Opcode.CONTINUATION, big[1000:], fin=True)
    sender.close()
    rendezvous.close()


async def test_frames_pipelined_behind_the_listeners_dial_arrive_first(relay: Relay, session):
    early = encode_frame(Opcode.BINARY, b"sent with the upgrade", mask=b"abcd")
    sender, rendezvous = await raw_pair(session, relay, early=early)
    await rendezvous.send_frame(Opcode.BINARY, b"sent after it")
    assert await next_frame(sender) == Frame(Opcode.BINARY, b"sent with the upgrade")
    assert await next_frame(sender) == Frame(Opcode.BINARY, b"sent after it")
    sender.close()
    rendezvous.close()


async def test_a_fragmented_message_over_the_limit_is_refused_1009_and_the_peer_gets_1011(
    relay_factory, session
):
    relay = await relay_factory(limits=Limits(max_message_size=4096))
    sender, rendezvous = await raw_pair(session, relay)
    await sender.send_frame(Opcode.BINARY, b"x" * 3000, fin=False)
    await sender.send_frame(Opcode.CONTINUATION, b"x" * 3000, fin=True)  # 6,000 bytes in all: too big
    closing = await next_frame(sender)
    assert (closing.opcode, parse_close(closing.payload)[0]) == (Opcode.CLOSE, 1009)
    frame = await next_frame(rendezvous)
    while frame.opcode is not Opcode.CLOSE:  # the fragment within the limit may have been forwarded
        assert frame == Frame(Opcode.BINARY, b"x" * 3000, fin=False)
        frame = await next_frame(rendezvous)
    assert parse_close(frame.payload)[0] == 1011
    sender.close()
    rendezvous.close()


async def test_an_invalid_close_code_is_a_protocol_error_1002(relay: Relay, session):
    sender, rendezvous = await raw_pair(session, relay)
    await sender.send_frame(Opcode.CLOSE, (1004).to_bytes(2, "big"))  # reserved, never valid on the wire
    closing = await next_frame(sender)
    assert (closing.opcode, parse_close(closing.payload)[0]) == (Opcode.CLOSE, 1002)
    closing = await next_frame(rendezvous)
    assert (closing.opcode, parse_close(closing.payload)[0]) == (Opcode.CLOSE, 1011)
    sender.close()
    rendezvous.close()


async def test_a_large_frame_arriving_in_pieces_crosses_whole_and_byte_exact(relay: Relay, session):
    sender, rendezvous = await raw_pair(session, relay)
    payload = bytes(i * 7 % 251 for i in range(300_000))
    frame = encode_frame(Opcode.BINARY, payload, mask=b"\x01\x02\x03\x04") + encode_frame(
        Opcode.TEXT, b"next", mask=b"wxyz"
    )
    for start in range(0, len(frame), 70_001):  # pieces that split the large payload
        sender.writer.write(frame[start : start + 70_001])
        await sender.writer.drain()
    assert await next_frame(rendezvous) == Frame(Opcode.BINARY, payload)
    assert await next_frame(rendezvous) == Frame(Opcode.TEXT, b"next")
    sender.close()
    rendezvous.close()
