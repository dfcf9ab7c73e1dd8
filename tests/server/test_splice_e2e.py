"""End to end over real sockets: listener control channel, sender connect, accept, splice."""

from __future__ import annotations

import asyncio
import gc

import aiohttp
import pytest
from aiohttp.web_protocol import RequestHandler

from hyco.server import Relay
from hyco.server.framepeer import FramePeer
from tests.conftest import TIMEOUT
from tests.server.wire import RawListener, send_connect


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_text_and_binary_cross_the_splice_both_ways(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    sender_task = asyncio.ensure_future(send_connect(session, relay.url))
    rendezvous = await listener.accept()
    sender = await asyncio.wait_for(sender_task, TIMEOUT)

    await sender.send_str("héllo")
    await sender.send_bytes(bytes(range(256)))
    msg = await rendezvous.receive(TIMEOUT)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "héllo")
    msg = await rendezvous.receive(TIMEOUT)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, bytes(range(256)))

    await rendezvous.send_bytes(b"\x00" * 100_000)
    await rendezvous.send_str("back")
    msg = await sender.receive(TIMEOUT)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"\x00" * 100_000)
    msg = await sender.receive(TIMEOUT)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "back")
    await asyncio.gather(sender.close(), rendezvous.close())


def _server_side_objects() -> int:
    """aiohttp request handlers and lean frame peers alive in this process (only the relay makes them)."""
    gc.collect()
    return sum(isinstance(o, RequestHandler | FramePeer) for o in gc.get_objects())


async def test_ended_relayed_connections_leave_no_handler_or_peer_behind(relay: Relay, session):
    # A leak found by the 30-minute soak: the connection gate kept every detached handler (and through it the
    # transport, parser and FramePeer) for the life of the relay, ~4 MiB a minute under churn.
    listener = await RawListener.open(session, relay.url)
    baseline = _server_side_objects()
    for _ in range(20):
        sender_task = asyncio.ensure_future(send_connect(session, relay.url))
        rendezvous = await listener.accept()
        sender = await asyncio.wait_for(sender_task, TIMEOUT)
        await sender.send_bytes(b"ping")
        assert (await rendezvous.receive(TIMEOUT)).data == b"ping"
        await asyncio.gather(sender.close(), rendezvous.close())
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while (left := _server_side_objects()) > baseline and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)  # the relay closes its ends after ours: wait for it, within a bound
    assert left <= baseline, f"{left - baseline} handlers or peers outlived 20 ended connections"
