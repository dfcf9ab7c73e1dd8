"""The lean front door (server/door.py): what it serves itself answers as aiohttp's path does, and what it
hands over reaches aiohttp whole."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest

from hyco.server import Limits
from hyco.server.app import Relay
from tests.conftest import TIMEOUT
from tests.server.wire import RawListener, send_connect

GUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
#: A header that makes a head longer than the door reads (door.MAX_LEAN_HEAD): aiohttp then serves it.
LONG = "".join(f"X-Padding-{n}: {'p' * 7000}\r\n" for n in range(3))


def upgrade_head(target: str, extra: str = "") -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


async def exchange(relay: Relay, chunks: list[bytes]) -> bytes:
    """Send ``chunks`` (one write each) and read until the relay closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
        await writer.wait_closed()


def parse(response: bytes) -> tuple[str, dict[str, str], dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    return status, headers, json.loads(body)


async def test_a_refused_connect_is_answered_as_aiohttp_answers_it_then_closed(relay: Relay):
    target = f"/$hc/no-such-entity?sb-hc-action=connect&sb-hc-id={GUID}_x"
    lean = parse(await exchange(relay, [upgrade_head(target)]))
    # The same request with a head too long for the door goes through aiohttp's server (it answers with
    # keep-alive: the request is written with Connection: close so it closes too).
    served = parse(await exchange(relay, [upgrade_head(target, LONG + "Connection: close\r\n")]))
    for status, headers, body in (lean, served):
        assert status.startswith("HTTP/1.1 404 ")
        assert headers["trackingid"] == GUID
        assert headers["content-type"] == "application/json; charset=utf-8"
        error = body["error"]
        assert isinstance(error, dict) and error["code"] == 404
        assert f"TrackingId:{GUID}, SystemTracker:sb://relay.test/no-such-entity" in error["message"]
    assert lean[0].split(" Timestamp:")[0] == served[0].split(" Timestamp:")[0]  # the same reason phrase
    assert lean[1]["connection"] == "close"


async def test_a_head_that_arrives_a_byte_at_a_time_on_an_accepted_socket_is_served(relay: Relay):
    # A socket the relay did not accept itself (as a worker hands it over) gets the door's protocol; the
    # bytes are delivered one data_received call each (TCP would coalesce small writes), so the head's end
    # is found across calls.
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    _, door = await loop.connect_accepted_socket(relay.protocol_factory, theirs)
    head = upgrade_head(f"/$hc/no-such-entity?sb-hc-action=connect&sb-hc-id={GUID}")
    for i in range(len(head)):
        door.data_received(head[i : i + 1])
    reader, writer = await asyncio.open_connection(sock=ours)
    try:
        status, headers, _ = parse(await asyncio.wait_for(reader.read(), TIMEOUT))
    finally:
        writer.close()
        await writer.wait_closed()
    assert status.startswith("HTTP/1.1 404 ") and headers["trackingid"] == GUID


async def test_requests_handed_to_aiohttp_arrive_whole_pipelined_ones_included(relay: Relay):
    # Two requests in one packet, the second one closing: aiohttp gets every byte the door read.
    health = b"GET /$health HTTP/1.1\r\nHost: relay.test\r\n\r\n"
    closing = b"GET /$health HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n\r\n"
    response = await exchange(relay, [health + closing])
    assert response.count(b"HTTP/1.1 200 OK") == 2
    assert response.count(b'"status": "ready"') == 2


async def test_bytes_that_are_not_an_upgrade_go_to_aiohttp_at_once(relay: Relay):
    # A TLS ClientHello on the plain port has no head end for the door to wait for: aiohttp answers it at
    # once (the SDK reads that answer to tell the user the relay is plain ws://).
    response = await exchange(relay, [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"])
    assert response.startswith(b"HTTP/1.0 400 Bad Request") and b"HTTPS traffic" in response


async def test_shutdown_drops_a_sender_still_waiting_in_the_door(relay_factory):
    relay = await relay_factory(limits=Limits(accept_timeout=600))
    async with aiohttp.ClientSession() as session:
        listener = await RawListener.open(session, relay.url)
        sender = asyncio.ensure_future(send_connect(session, relay.url))
        await listener.next_command()  # the accept arrived: the sender waits in the door for an answer
        closing = asyncio.ensure_future(relay.close())
        assert (await listener.ws.receive(TIMEOUT)).type is aiohttp.WSMsgType.CLOSE  # answered: autoclose
        with pytest.raises(aiohttp.ClientError):  # dropped at once, not after the accept timeout
            await asyncio.wait_for(sender, TIMEOUT)
        await asyncio.wait_for(closing, TIMEOUT)
