"""Clients that break RFC 6455's framing rules get the connection failed as the RFC says (7.1.7): a Close with
the right code (1002 protocol error, 1007 for a Close reason that is not UTF-8), then the TCP close. The
spliced partner of a failed peer gets 1011, as for any peer that vanished. Every socket the relay accepts is
checked: the sender, the listener's control channel, its rendezvous dial, and its HTTP request rendezvous.

The clients are raw (``rawclient``), so the test sees every frame and the end of the TCP stream.
"""

from __future__ import annotations

import asyncio
import struct

import aiohttp
import pytest

from hyco.protocol.frames import Opcode, encode_frame, parse_close
from hyco.server import Relay
from tests.conftest import TIMEOUT
from tests.server.rawclient import RawStreamClient
from tests.server.test_splice_frames import raw_pair
from tests.server.wire import RawListener, listen_url, token_for, wait_for_health

UNMASKED = encode_frame(Opcode.TEXT, b'{"renewToken": {}}')  # no mask key: a server must refuse it (5.1)


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def close_code(client: RawStreamClient) -> int:
    """The code of the next Close frame the relay sends ``client`` (data frames before it are skipped)."""
    while True:
        frame = await asyncio.wait_for(client.frame(), TIMEOUT)
        if frame.opcode is Opcode.CLOSE:
            return parse_close(frame.payload)[0]


async def failed_with(client: RawStreamClient) -> int:
    """The code of the relay's Close to ``client``, checking that the relay then closed the connection
    without waiting for ``client`` to answer the Close."""
    code = await close_code(client)
    with pytest.raises(ConnectionError):  # EOF (or a reset): nothing comes after the Close
        await asyncio.wait_for(client.frame(), TIMEOUT)
    client.close()
    return code


# --- unmasked client frames -----------------------------------------------------------------------


@pytest.mark.parametrize("culprit", ["sender", "rendezvous"])
async def test_an_unmasked_frame_on_a_splice_fails_that_peer_with_1002_and_its_partner_gets_1011(
    relay: Relay, session, culprit
):
    sender, rendezvous = await raw_pair(session, relay)
    bad, partner = (sender, rendezvous) if culprit == "sender" else (rendezvous, sender)
    bad.writer.write(UNMASKED)
    assert await failed_with(bad) == 1002
    assert await close_code(partner) == 1011
    partner.close()


async def test_an_unmasked_frame_pipelined_behind_the_rendezvous_dial_fails_it_before_the_splice_links(
    relay: Relay, session
):
    sender, rendezvous = await raw_pair(session, relay, early=encode_frame(Opcode.BINARY, b"early"))
    assert await failed_with(rendezvous) == 1002
    assert await close_code(sender) == 1011
    sender.close()


@pytest.mark.parametrize("pipelined", [False, True], ids=["after", "with-the-upgrade"])
async def test_an_unmasked_frame_on_the_control_channel_fails_it_with_1002(relay: Relay, pipelined):
    auth = f"ServiceBusAuthorization: {token_for(relay.url, 'echo')}\r\n"
    url = listen_url(relay.url, "echo")
    channel = await RawStreamClient.connect(url, headers=auth, then=UNMASKED if pipelined else b"")
    if not pipelined:
        channel.writer.write(UNMASKED)
    assert await failed_with(channel) == 1002


async def http_rendezvous(
    session, relay: Relay
) -> tuple[asyncio.Future[aiohttp.ClientResponse], RawStreamClient]:
    """A pending HTTP request and the listener's raw rendezvous socket for it."""
    listener = await RawListener.open(session, relay.url, "open")
    request = asyncio.ensure_future(session.get(f"{relay.http_url}/open/x"))
    command = (await listener.next_command())["request"]
    return request, await RawStreamClient.connect(command["address"])


async def test_an_unmasked_frame_on_an_http_request_rendezvous_fails_it_with_1002(relay: Relay, session):
    request, rendezvous = await http_rendezvous(session, relay)
    rendezvous.writer.write(UNMASKED)
    assert await failed_with(rendezvous) == 1002
    async with await asyncio.wait_for(request, TIMEOUT) as resp:
        assert resp.status == 502
    await wait_for_health(session, relay.http_url, "http_requests_in_flight", 0)


# --- Close frames a peer may not send ------------------------------------------------------------

#: RFC 6455 7.4: below 1000 unused, 1004-1006 and 1015 reserved or for reports only, 1016-2999 reserved for
#: the RFC and its extensions, 5000 and up undefined.
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]
VALID_CODES = [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999]


def close_frame(payload: bytes) -> bytes:
    return encode_frame(Opcode.CLOSE, payload, mask=b"abcd")


@pytest.mark.parametrize("code", INVALID_CODES)
async def test_a_close_with_an_invalid_code_on_a_splice_fails_with_1002_and_the_partner_gets_1011(
    relay: Relay, session, code
):
    sender, rendezvous = await raw_pair(session, relay)
    sender.writer.write(close_frame(struct.pack("!H", code) + b"bye"))
    assert await failed_with(sender) == 1002
    assert await close_code(rendezvous) == 1011
    rendezvous.close()


@pytest.mark.parametrize("code", VALID_CODES)
async def test_a_close_with_a_valid_code_crosses_the_splice_unchanged(relay: Relay, session, code):
    sender, rendezvous = await raw_pair(session, relay)
    rendezvous.writer.write(close_frame(struct.pack("!H", code) + "au revoir é".encode()))
    frame = await asyncio.wait_for(sender.frame(), TIMEOUT)
    assert (frame.opcode, parse_close(frame.payload)) == (Opcode.CLOSE, (code, "au revoir é"))
    sender.close()
    rendezvous.close()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(b"\x03", 1002), (struct.pack("!H", 1000) + b"\xff\xfe", 1007)],
    ids=["one-byte", "reason-not-utf8"],
)
async def test_a_malformed_close_on_a_splice_fails_with_its_code(relay: Relay, session, payload, expected):
    sender, rendezvous = await raw_pair(session, relay)
    rendezvous.writer.write(close_frame(payload))
    assert await failed_with(rendezvous) == expected
    assert await close_code(sender) == 1011
    sender.close()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (struct.pack("!H", 5000), 1002),
        (struct.pack("!H", 1006), 1002),
        (struct.pack("!H", 2999), 1002),
        (b"\x03", 1002),
        (struct.pack("!H", 1000) + b"\xff\xfe", 1007),
    ],
    ids=["5000", "1006", "2999", "one-byte", "reason-not-utf8"],
)
async def test_a_malformed_close_on_the_control_channel_fails_it(relay: Relay, payload, expected):
    auth = f"ServiceBusAuthorization: {token_for(relay.url, 'echo')}\r\n"
    channel = await RawStreamClient.connect(listen_url(relay.url, "echo"), headers=auth)
    channel.writer.write(close_frame(payload))
    assert await failed_with(channel) == expected


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(struct.pack("!H", 5000), 1002), (struct.pack("!H", 1000) + b"\xff\xfe", 1007)],
    ids=["5000", "reason-not-utf8"],
)
async def test_a_malformed_close_on_an_http_request_rendezvous_fails_it(
    relay: Relay, session, payload, expected
):
    request, rendezvous = await http_rendezvous(session, relay)
    rendezvous.writer.write(close_frame(payload))
    assert await failed_with(rendezvous) == expected
    async with await asyncio.wait_for(request, TIMEOUT) as resp:
        assert resp.status == 502
