"""A listener's control channel on the lean door, over real sockets, frame by frame.

The listener is a raw WebSocket client (``rawclient``), so the test writes fragments, pipelined frames and
stops reading exactly when it says.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import aiohttp
import pytest

from hyco.protocol.frames import Frame, Opcode, encode_frame, parse_close
from hyco.server import Limits, Relay, serve
from tests.conftest import TIMEOUT, test_config
from tests.server.rawclient import RawStreamClient
from tests.server.wire import listen_url, send_connect, token_for, wait_for_health


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def auth(relay: Relay, path: str = "echo") -> str:
    return f"ServiceBusAuthorization: {token_for(relay.url, path)}\r\n"


def kernel_send_buffer_limit() -> int:
    """The most a TCP socket's send buffer grows to here (Linux: the third field of tcp_wmem)."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


async def next_frame(client: RawStreamClient) -> Frame:
    return await asyncio.wait_for(client.frame(), TIMEOUT)


async def test_a_fragmented_response_is_read_as_one_message(relay: Relay, session):
    listener = await RawStreamClient.connect(listen_url(relay.url, "open"), headers=auth(relay, "open"))
    getting = asyncio.ensure_future(session.get(f"{relay.http_url}/open/x"))
    request = json.loads((await next_frame(listener)).payload)["request"]
    response = json.dumps({"response": {"requestId": request["id"], "statusCode": 203, "body": False}})
    await listener.send_frame(Opcode.TEXT, response[:10].encode(), fin=False)
    await listener.send_frame(Opcode.PING, b"between fragments")
    await listener.send_frame(Opcode.CONTINUATION, response[10:20].encode(), fin=False)
    await listener.send_frame(Opcode.CONTINUATION, response[20:].encode(), fin=True)
    assert await next_frame(listener) == Frame(Opcode.PONG, b"between fragments")
    async with await asyncio.wait_for(getting, TIMEOUT) as got:
        assert got.status == 203
    listener.close()


async def test_a_ping_pipelined_behind_the_listen_upgrade_is_answered(relay: Relay):
    ping = encode_frame(Opcode.PING, b"with the upgrade", mask=b"abcd")
    listener = await RawStreamClient.connect(listen_url(relay.url, "echo"), headers=auth(relay), then=ping)
    assert await next_frame(listener) == Frame(Opcode.PONG, b"with the upgrade")
    listener.close()


async def test_a_listener_that_stops_reading_is_dropped_after_the_send_timeout(relay_factory):
    relay = await relay_factory(limits=Limits(accept_timeout=0.1 * TIMEOUT, handshake_rate_per_source=10_000))
    # A small receive buffer, and the listener never reads after its 101: the relay's commands pile up.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", relay.port))
    listener = await RawStreamClient.connect(listen_url(relay.url, "echo"), headers=auth(relay), sock=sock)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:  # all at once
        await wait_for_health(session, relay.http_url, "listeners", 1)
        big = {f"X-Filler-{i}": "x" * 7500 for i in range(8)}  # a 60 KB accept each
        senders = (kernel_send_buffer_limit() + 2 * 1024 * 1024) // 60_000  # more than every buffer holds

        async def sender() -> int:
            try:
                ws = await send_connect(session, relay.url, headers=big)
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
            await ws.close()
            return 101

        statuses = await asyncio.wait_for(asyncio.gather(*(sender() for _ in range(senders))), TIMEOUT)
        assert set(statuses) == {404}  # nobody dialed back; the listener was dropped on the way
        # Dropped: its connection is cut, although its buffers are full (a graceful close would wait forever).
        await wait_for_health(session, relay.http_url, "listeners", 0)
        listener.close()


async def test_shutdown_drops_a_listener_that_never_answers_its_close():
    async with serve(test_config(limits=Limits(shutdown_timeout=0.02 * TIMEOUT))) as relay:
        listener = await RawStreamClient.connect(listen_url(relay.url, "echo"), headers=auth(relay))
        assert len(relay.connected_listeners()) == 1
        await relay.close()
        # The relay did not wait for the answer (its hang-up would take 10 s): the channel is gone.
        assert relay.connected_listeners() == []
        close = await next_frame(listener)
        assert (close.opcode, parse_close(close.payload)[0]) == (Opcode.CLOSE, 1001)
        listener.close()
