"""The SDK listener against a hostile relay: a small real aiohttp server in the test plays the relay.

Whatever the relay may not send (protocol.md 2.2) closes the control channel with a clear error, and the
listener reconnects. Token renewal runs on a FakeClock, so it is checked message by message, instantly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import WSMsgType, web

from hyco import HybridConnectionListener, ListenerState, RemoteProtocolError, TokenProvider
from hyco.client.http import RelayedHttpRequest, RelayedHttpResponse
from hyco.protocol.sas import create_token
from hyco.testing import FakeClock
from tests.client.test_reconnect import FAST, StateLog
from tests.conftest import KEY, KEY_NAME, TIMEOUT

Script = Callable[[web.WebSocketResponse, int], Awaitable[None]]


@dataclass
class Channel:
    """One control channel as the fake relay saw it."""

    texts: list[str] = field(default_factory=list)
    binaries: list[bytes] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""


class FakeRelay:
    """A real WebSocket server on 127.0.0.1 port 0 that runs ``script(ws, n)`` for the n-th listen."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.channels: list[Channel] = []
        self.texts: asyncio.Queue[str] = asyncio.Queue()
        self.url = ""

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoclose=False)
        await ws.prepare(request)
        channel = Channel()
        self.channels.append(channel)
        await self.script(ws, len(self.channels) - 1)
        while True:  # what the listener sends, until its Close (answered) or the connection's end
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                channel.texts.append(msg.data)
                self.texts.put_nowait(msg.data)
            elif msg.type is WSMsgType.BINARY:
                channel.binaries.append(msg.data)
            else:
                if msg.type is WSMsgType.CLOSE:
                    channel.close_code, channel.close_reason = msg.data, msg.extra or ""
                    await ws.close()
                break
        return ws


@pytest.fixture
async def fake_relay() -> AsyncIterator[Callable[[Script], Awaitable[FakeRelay]]]:
    runners: list[web.AppRunner] = []

    async def start(script: Script) -> FakeRelay:
        relay = FakeRelay(script)
        app = web.Application()
        app.router.add_get("/{tail:.*}", relay.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        relay.url = f"ws://{host}:{port}/echo"
        return relay

    yield start
    for runner in runners:
        await runner.cleanup()


def tp(clock: FakeClock | None = None) -> TokenProvider:
    if clock is None:
        return TokenProvider.from_shared_access_key(KEY_NAME, KEY)
    return TokenProvider.from_shared_access_key(KEY_NAME, KEY, clock=clock.time)


async def stay_open(ws: web.WebSocketResponse, n: int) -> None:
    """A well-behaved relay: sends nothing."""


REQUEST_WITH_BODY = json.dumps(
    {
        "request": {
            "address": "ws://127.0.0.1:1/$hc/echo?sb-hc-action=request&sb-hc-id=r1",
            "id": "r1",
            "requestTarget": "/echo",
            "method": "POST",
            "requestHeaders": {},
            "body": True,
        }
    }
)


@pytest.mark.parametrize(
    ("bad", "code", "expected"),
    [
        ("not json", 1008, "control message is not valid JSON"),
        ('{"injectFault":{}}', 1008, "unknown control command 'injectFault'"),
        (b"\x00stray", 1008, "unexpected binary message while waiting for a command"),
        ("x" * 2000, 1009, "2000-byte control message exceeds the 1024-byte limit"),
        (
            [REQUEST_WITH_BODY, REQUEST_WITH_BODY],
            1008,
            "unexpected request with body:true while waiting for the body",
        ),
        ('{"renewToken":{"token":"SharedAccessSignature sig=SECRET"}}', 1008, "unexpected renewToken"),
    ],
    ids=["bad-json", "unknown-command", "stray-binary", "oversize", "body-true-without-body", "renew-token"],
)
async def test_a_protocol_violation_closes_the_channel_and_the_listener_reconnects(
    fake_relay: Callable[[Script], Awaitable[FakeRelay]],
    bad: str | bytes | list[str],
    code: int,
    expected: str,
) -> None:
    async def script(ws: web.WebSocketResponse, n: int) -> None:
        if n == 0:
            for message in bad if isinstance(bad, list) else [bad]:
                await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))

    relay = await fake_relay(script)
    log = StateLog()
    listener = HybridConnectionListener(
        relay.url,
        tp(),
        reconnect_delays=FAST,
        on_online=log,
        on_offline=log,
        max_control_message_size=1024,
    )
    async with listener:
        await log.wait_for(ListenerState.ONLINE, times=2)  # it came back on a fresh channel
        error = log.errors[log.states.index(ListenerState.OFFLINE)]
        assert isinstance(error, RemoteProtocolError), error
        assert expected in str(error)
        assert error.close_code == code
        assert "SECRET" not in str(error)
        first = relay.channels[0]
        assert first.close_code == code
        cause = error.__cause__
        assert isinstance(cause, RemoteProtocolError)
        sent = f"protocol violation: {cause.reason}".encode()[:123].decode(errors="ignore")
        assert first.close_reason == sent  # the whole reason, cut only to fit the Close frame
    assert len(relay.channels) == 2


async def test_a_request_and_its_body_are_served(
    fake_relay: Callable[[Script], Awaitable[FakeRelay]],
) -> None:
    """The good path the hostile cases break: body:true, then one binary message; the answer comes inline."""

    async def script(ws: web.WebSocketResponse, n: int) -> None:
        await ws.send_str(REQUEST_WITH_BODY)
        await ws.send_bytes(b"ping")

    async def echo(request: RelayedHttpRequest) -> RelayedHttpResponse:
        return RelayedHttpResponse(200, body=b"got " + await request.read())

    relay = await fake_relay(script)
    async with HybridConnectionListener(relay.url, tp(), reconnect_delays=FAST, request_handler=echo):
        async with asyncio.timeout(TIMEOUT):
            response = json.loads(await relay.texts.get())["response"]
    assert response["requestId"] == "r1" and response["statusCode"] == 200 and response["body"] is True
    assert relay.channels[0].binaries == [b"got ping"]
    assert relay.channels[0].close_code == 1000
    assert len(relay.channels) == 1


async def test_renewal_runs_on_the_listeners_clock(
    fake_relay: Callable[[Script], Awaitable[FakeRelay]],
) -> None:
    clock = FakeClock()
    relay = await fake_relay(stay_open)
    log = StateLog()
    async with HybridConnectionListener(
        relay.url, tp(clock), reconnect_delays=FAST, on_offline=log, clock=clock
    ) as listener:
        async with asyncio.timeout(TIMEOUT):
            for renewal in (1, 2):
                await clock.wait_for_sleepers(1)  # the renewer waits for the token's renew-at time
                assert len(relay.channels[0].texts) == renewal - 1
                clock.advance(3600)  # an hour: past renew-at (5 min before expiry)
                text = await relay.texts.get()
                token = json.loads(text)["renewToken"]["token"]
                assert token.startswith("SharedAccessSignature ")
                assert f"se={int(clock.time()) + 3600}" in token  # minted now, on the fake clock
                assert listener.token_renewals == renewal
        assert log.states == []  # never offline
        assert len(relay.channels) == 1


async def test_the_same_token_again_is_not_sent_and_asked_for_later(
    fake_relay: Callable[[Script], Awaitable[FakeRelay]],
) -> None:
    clock = FakeClock()
    fixed = create_token("http://127.0.0.1/echo/", KEY_NAME, KEY, int(clock.time()) + 600)
    calls: list[float] = []

    def mint(audience: str, valid_for: float) -> str:
        calls.append(clock.time())
        return fixed

    provider = TokenProvider.from_callable(mint, clock=clock.time)
    relay = await fake_relay(stay_open)
    async with HybridConnectionListener(relay.url, provider, reconnect_delays=FAST, clock=clock) as listener:
        async with asyncio.timeout(TIMEOUT):
            await clock.wait_for_sleepers(1)
            clock.advance(600)
            while len(calls) < 2:  # the renewer asked; the answer is the same token
                await clock.wait_for_sleepers(1)
            clock.advance(29)
            assert clock.sleepers == 1  # still waiting: it asks again only after 30 s
            assert len(calls) == 2
            clock.advance(1)
            while len(calls) < 3:
                await clock.wait_for_sleepers(1)
        assert listener.token_renewals == 0
        assert relay.channels[0].texts == []
