"""End to end over real sockets: listener control channel, sender connect, accept, splice."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from hyco.server import Relay
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
