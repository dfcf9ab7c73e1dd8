"""The relay's control-channel driver over the in-memory Peer seam, with expiry on a FakeClock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from hyco.exceptions import AuthorizationFailed, ConnectionLost
from hyco.protocol.messages import Accept, Request, Response, encode
from hyco.protocol.sas import SasToken
from hyco.server.control import ControlChannel
from hyco.server.peer import MessageKind
from hyco.testing import FakeClock, MemoryPeer, memory_peer
from tests.conftest import TIMEOUT

GRACE = 300.0
ACCEPT = Accept("ws://r/$hc/echo?sb-hc-action=accept&sb-hc-id=a", "a")


def sas(expiry: float) -> SasToken:
    return SasToken(resource="http%3A%2F%2Fr%2Fecho", signature="s", expiry=int(expiry), key_name="k")


class Harness:
    """A ControlChannel on a MemoryPeer and a FakeClock; ``responded`` gets each response it delivered."""

    def __init__(self, capacity: int = 0, send_timeout: float = 30.0) -> None:
        self.clock = FakeClock()
        self.peer: MemoryPeer = memory_peer("listener", capacity)
        self.responses: list[tuple[Response, bytes | None]] = []
        self.responded: asyncio.Queue[Response] = asyncio.Queue()
        self.invalid: list[tuple[str, str]] = []
        self.known = {"r1"}

        def renew(text: str) -> SasToken:
            if text == "bad":
                raise AuthorizationFailed("InvalidSignature: the token's signature is wrong")
            return sas(float(text))

        def on_response(response: Response, body: bytes | None) -> bool:
            self.responses.append((response, body))
            self.responded.put_nowait(response)
            return response.request_id in self.known

        def on_invalid(request_id: str, reason: str) -> bool:
            self.invalid.append((request_id, reason))
            return request_id in self.known

        self.channel = ControlChannel(
            self.peer,
            path="echo",
            listener_id="l1",
            base_url="ws://r",
            token=sas(self.clock.time() + 3600),
            renew=renew,
            token_grace=GRACE,
            on_response=on_response,
            on_invalid_response=on_invalid,
            send_timeout=send_timeout,
            clock=self.clock,
        )
        self.task: asyncio.Future[None] | None = None

    async def close_frame(self) -> tuple[int, str]:
        message = await self.peer.remote_receive(TIMEOUT)
        assert message.kind is MessageKind.CLOSE, message
        return message.code, message.reason


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    h.task = task = asyncio.ensure_future(h.channel.run())
    yield h
    if not task.done():
        h.peer.remote_vanish()
    async with asyncio.timeout(TIMEOUT):
        await task


async def test_expiry_closes_1008_after_the_grace_window(harness: Harness) -> None:
    async with asyncio.timeout(TIMEOUT):
        await harness.clock.wait_for_sleepers(1)
        harness.clock.advance(3600 + GRACE - 1)  # expired, but within grace
        await harness.clock.wait_for_sleepers(1)
        assert harness.channel.open
        harness.clock.advance(1)
        code, reason = await harness.close_frame()
    assert code == 1008 and reason.startswith("ExpiredToken")
    assert not harness.channel.open and harness.channel.close_reason == "token expired"
    with pytest.raises(ConnectionLost):
        await harness.channel.send(ACCEPT)


async def test_a_renewal_moves_the_deadline(harness: Harness) -> None:
    renewed = harness.clock.time() + 7200
    harness.peer.remote_send(json.dumps({"renewToken": {"token": str(renewed)}}))
    harness.peer.remote_send(encode(Response("r1", 204)))  # read after the renewal, in order
    async with asyncio.timeout(TIMEOUT):
        await harness.responded.get()
        assert harness.channel.token_expiry == int(renewed)
        await harness.clock.wait_for_sleepers(1)
        harness.clock.advance(3600 + GRACE)  # past the first token's deadline: the renewed one holds
        await harness.clock.wait_for_sleepers(1)
        assert harness.channel.open
        await harness.channel.send(ACCEPT)
        assert (await harness.peer.remote_receive(TIMEOUT)).data == encode(ACCEPT).encode()
        harness.clock.advance(3600)
        assert (await harness.close_frame())[0] == 1008


async def test_a_refused_renewal_closes_1008_with_the_reason(harness: Harness) -> None:
    harness.peer.remote_send(json.dumps({"renewToken": {"token": "bad"}}))
    async with asyncio.timeout(TIMEOUT):
        assert await harness.close_frame() == (1008, "InvalidSignature: the token's signature is wrong")
        harness.peer.remote_close(1008)  # the listener answers; run() ends and hangs up
        assert harness.task is not None
        await harness.task
    assert harness.peer.aborted


async def test_responses_a_stray_binary_and_a_malformed_response(harness: Harness) -> None:
    peer = harness.peer
    peer.remote_send(encode(Response("r1", 200, body=True)))
    peer.remote_send(b"body")
    peer.remote_send(encode(Response("r1", 204, body=False)))
    peer.remote_send(b"")  # hyco-https's stray empty binary after a 204 (protocol.md 10)
    peer.remote_send('{"response":{"requestId":"r1","statusCode":"abc","body":true}}')
    peer.remote_send(b"dropped")
    peer.remote_send('{"response":{"requestId":"nobody","statusCode":"abc"}}')  # unknown: the channel goes
    async with asyncio.timeout(TIMEOUT):
        code, reason = await harness.close_frame()
    assert code == 1008 and reason.startswith("protocol violation: response.statusCode")
    assert harness.responses == [(Response("r1", 200, body=True), b"body"), (Response("r1", 204), None)]
    assert [request_id for request_id, _ in harness.invalid] == ["r1", "nobody"]


@pytest.mark.parametrize(
    ("text", "code"),
    [("not json", 1008), (encode(ACCEPT), 1008), ("x" * (1024 * 1024 + 1), 1009)],
)
async def test_a_violation_closes_the_channel(harness: Harness, text: str, code: int) -> None:
    harness.peer.remote_send(text)
    async with asyncio.timeout(TIMEOUT):
        got, reason = await harness.close_frame()
    assert got == code and reason.startswith("protocol violation: ")
    assert harness.channel.close_reason.startswith("protocol violation: ")


async def test_a_request_and_its_body_go_out_together(harness: Harness) -> None:
    request = Request("ws://r/x", "r1", "/echo", "POST", None, {}, True)
    await asyncio.gather(harness.channel.send_with_body(request, b"abc"), harness.channel.send(ACCEPT))
    got = [await harness.peer.remote_receive(TIMEOUT) for _ in range(3)]
    kinds = [(m.kind, m.data) for m in got]
    body_at = kinds.index((MessageKind.BINARY, b"abc"))
    assert kinds[body_at - 1] == (MessageKind.TEXT, encode(request).encode())


async def test_the_listener_closes_first_and_gets_its_code_back(harness: Harness) -> None:
    harness.peer.remote_close(1000, "bye")
    async with asyncio.timeout(TIMEOUT):
        assert await harness.close_frame() == (1000, "")
        assert harness.task is not None
        await harness.task
    assert harness.peer.aborted and not harness.channel.open


async def test_a_listener_that_stops_reading_is_dropped() -> None:
    h = Harness(capacity=1, send_timeout=0.01 * TIMEOUT)
    await h.channel.send(ACCEPT)  # fills the buffer
    with pytest.raises(ConnectionLost):
        await h.channel.send(ACCEPT)
    assert h.peer.aborted and h.channel.close_reason == "stopped reading" and not h.channel.open
