"""Hostile and unlucky clients: each test reproduces one defect found by the hostile probe (issue 13) through
real sockets or the in-memory seam, and checks the relay's answer and that its accounting returns to zero."""

from __future__ import annotations

import asyncio
import json
import socket
import struct

import aiohttp
import pytest

from hyco.exceptions import ConnectionLost, EndpointNotFound
from hyco.protocol.uri import parse_websocket_target
from hyco.server import Limits, Relay
from hyco.server.capacity import Capacity
from hyco.server.registry import Registry
from hyco.server.router import LocalRouter
from hyco.server.splice import Splice
from hyco.server.streams import StreamForwarder
from hyco.testing import memory_peer
from tests.conftest import TIMEOUT, test_config
from tests.server.wire import (
    RawListener,
    handshake_error,
    recording_session,
    send_connect,
    token_for,
    wait_for_health,
)


@pytest.fixture
async def session():
    async with recording_session() as s:
        yield s


# --- admission slots are released on every path (defect 1) ---------------------------------------


class _Handshake:
    """Just what StreamForwarder.connect reads before the upgrade."""

    headers: dict[str, str] = {}
    peername = ("127.0.0.1", 1)
    remote = "127.0.0.1"


class _Channel:
    """A listener whose control channel breaks, or never takes the command, as the test says."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.listener_id = "00000000-0000-0000-0000-000000000001"
        self.base_url = "ws://127.0.0.1:1"
        self.started = asyncio.Event()

    async def send(self, command: object) -> None:
        await self.send_with_body(command, None)

    async def send_with_body(self, command: object, body: bytes | None) -> None:
        self.started.set()
        if self.behaviour == "broken":
            raise ConnectionLost("the listener's control channel broke")
        await asyncio.Event().wait()  # "stuck": the send never completes (a listener that stopped reading)


@pytest.mark.parametrize("behaviour", ["broken", "stuck"])
async def test_a_failed_or_abandoned_offer_gives_its_slot_back(behaviour):
    capacity = Capacity(2)
    forwarder = StreamForwarder(LocalRouter(), Limits(accept_timeout=TIMEOUT), capacity, lambda *a: None)
    registry = Registry(test_config().hybrid_connections, create_on_listen=False, max_hybrid_connections=10)
    hc, suffix = registry.find("open")
    channel = _Channel(behaviour)
    hc.reserve(25)
    hc.add_listener(channel)
    target = parse_websocket_target("/$hc/open", "sb-hc-action=connect")
    for _ in range(5):  # more attempts than slots: a leak would turn the later ones away with 503
        task = asyncio.ensure_future(forwarder.connect(_Handshake(), target, hc, suffix, "t"))  # type: ignore[arg-type]
        await asyncio.wait_for(channel.started.wait(), TIMEOUT)
        channel.started.clear()
        if behaviour == "stuck":
            task.cancel()  # the sender hung up while the relay was still offering it
        with pytest.raises((EndpointNotFound, asyncio.CancelledError)):
            await task
        assert len(capacity) == 0
        assert forwarder.waiting == 0


# --- one connection cannot hold the event loop (defect 2) ----------------------------------------


async def _unread_counts_seen_while_spliced(messages: list[bytes]) -> list[int]:
    """Buffer ``messages`` on one peer, splice it to another and return ``unread`` of the far side as a
    bystander task saw it at each of its turns until every message was moved."""
    a, b = memory_peer("a"), memory_peer("b")
    for message in messages:
        a.remote_send(message)  # all buffered already: receive() never has to wait
    a.remote_close()
    seen: list[int] = []

    async def bystander() -> None:
        while True:
            seen.append(b.unread)
            await asyncio.sleep(0)

    watcher = asyncio.ensure_future(bystander())
    await asyncio.sleep(0)
    run = asyncio.ensure_future(Splice(a, b, close_timeout=TIMEOUT).run())
    while b.unread < len(messages):
        await asyncio.sleep(0)
    watcher.cancel()
    b.remote_close()
    await asyncio.wait_for(run, TIMEOUT)
    return seen


async def test_a_flood_of_tiny_messages_lets_other_tasks_run():
    flood = 2000  # many times the messages a pump may move per turn
    seen = await _unread_counts_seen_while_spliced([b""] * flood)
    # The bystander ran while the flood was being moved, not only before and after it.
    assert any(0 < n < flood for n in seen), seen[:5]


async def test_a_sender_at_full_speed_lets_other_tasks_run_every_few_messages():
    # Defect 12: 64 buffered 64 KiB messages per turn held the loop for 4 MiB of copying at a time.
    count = 64  # one turn's worth under a message count alone
    seen = await _unread_counts_seen_while_spliced([bytes(64 * 1024)] * count)
    assert len({n for n in seen if 0 < n < count}) >= 8, sorted(set(seen))


async def test_a_ping_flood_lets_other_tasks_run(relay: Relay, session):
    from hyco.protocol.frames import Opcode, encode_frame
    from tests.server.rawclient import RawStreamClient

    listener = await RawListener.open(session, relay.url, "open")
    connecting = asyncio.ensure_future(RawStreamClient.connect(f"{relay.url}/$hc/open?sb-hc-action=connect"))
    rendezvous = await session.ws_connect((await listener.next_command())["accept"]["address"])
    flooder = await asyncio.wait_for(connecting, TIMEOUT)
    flood = 20_000
    flooder.writer.write(encode_frame(Opcode.PING, mask=b"abcd") * flood)  # one write: all buffered at once
    pongs = 2 * flood  # the relay's Pong frames are two bytes each
    received = 0
    seen: list[int] = []

    async def bystander() -> None:
        while True:
            seen.append(received)
            await asyncio.sleep(0)

    watcher = asyncio.ensure_future(bystander())
    async with asyncio.timeout(TIMEOUT):
        while received < pongs:
            received += len(await flooder.reader.read(1 << 16))
    watcher.cancel()
    # The bystander ran again and again while the pings were being answered, not only between socket reads.
    assert len({n for n in seen if 0 < n < pongs}) >= 20, sorted(set(seen))[:10]
    flooder.close()
    await rendezvous.close()


# --- slow and silent clients are cut (defects 3 and 4) --------------------------------------------


async def test_a_client_that_never_completes_its_request_head_is_disconnected(relay_factory):
    relay = await relay_factory(limits=Limits(idle_timeout=0.3))
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"GET /$health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # a slowloris never finishes
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed by the relay
    writer.close()
    await writer.wait_closed()


async def test_connections_the_relay_cuts_for_idling_give_their_source_slot_back(relay_factory, session):
    # The soak found it: each slowloris the relay cut kept its per-source count, so after 1,000 cuts the
    # address was refused (503 or a reset) forever.
    relay = await relay_factory(limits=Limits(idle_timeout=0.2, max_connections_per_source=2))
    for _ in range(3):  # more cuts than the limit
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"GET /$health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # cut by the relay
        writer.close()
        await writer.wait_closed()
    async with session.get(f"{relay.http_url}/$health") as resp:  # a new connection fits under the limit
        assert resp.status == 200


async def test_an_idle_kept_alive_connection_is_closed_after_a_404(relay_factory):
    relay = await relay_factory(limits=Limits(idle_timeout=0.3))
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"GET /no-such-entity HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n"), TIMEOUT)
    assert b" 404 " in head
    rest = await asyncio.wait_for(reader.read(), TIMEOUT)  # then EOF: the relay closed the idle socket
    assert b"Endpoint does not exist" in rest
    writer.close()
    await writer.wait_closed()


async def test_a_stalled_small_body_ends_with_408_and_frees_its_slot(relay_factory, session):
    relay = await relay_factory(limits=Limits(body_timeout=0.3, max_pending=1))
    listener = await RawListener.open(session, relay.url, "open")
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"POST /open HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n"), TIMEOUT)
    assert b" 408 " in head
    writer.close()
    await writer.wait_closed()
    await wait_for_health(session, relay.http_url, "http_requests_in_flight", 0)
    # The slot is free again: the next request reaches the listener.
    request = asyncio.ensure_future(session.get(f"{relay.http_url}/open/again"))
    command = await listener.next_command()
    assert command["request"]["requestTarget"] == "/open/again"
    await listener.ws.send_json({"response": {"requestId": command["request"]["id"], "statusCode": 204}})
    async with await asyncio.wait_for(request, TIMEOUT) as resp:
        assert resp.status == 204


async def test_after_a_408_the_relay_reads_nothing_more_from_the_connection(relay_factory, session):
    # aiohttp keeps reading an unanswered body for 10 s after the answer (its lingering close) and then serves
    # the next request on the connection: a stalled body's connection must close right after its 408.
    relay = await relay_factory(limits=Limits(body_timeout=0.3))
    await RawListener.open(session, relay.url, "open")
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"POST /open HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert b" 408 " in head.split(b"\r\n")[0]
    assert b"\r\nConnection: close\r\n" in head
    # The rest of the body, then a second request on the same connection: it must never be answered.
    try:
        writer.write(b"x" * 90 + b"GET /$health HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)  # up to EOF: the relay closed the connection
    except ConnectionResetError:  # the relay closed with our bytes unread: the kernel resets instead
        rest = b""
    assert b"HTTP/1.1 200" not in rest
    writer.close()
    await wait_for_health(session, relay.http_url, "http_requests_in_flight", 0)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_sender_that_hangs_up_while_its_upload_waits_is_released_at_once(relay: Relay, session, how):
    # request_timeout is 60 s: an exchange that outlives TIMEOUT was held for the listener, not released.
    listener = await RawListener.open(session, relay.url, "open")
    _, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"POST /open/up HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n")
    # More than the relay buffers before it stops reading (twice its 64 KiB read size), less than the
    # sockets hold: the rest of the body waits in the kernel, unread, as the sender leaves.
    writer.write(bytes(384 * 1024))
    await writer.drain()
    stub = (await listener.next_command())["request"]  # the listener is told, but does not dial yet
    await wait_for_health(session, relay.http_url, "http_requests_in_flight", 1)
    if how == "reset":
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    await writer.wait_closed()
    await wait_for_health(session, relay.http_url, "http_requests_in_flight", 0)
    # The exchange is over: the listener's late dial is refused.
    err = await handshake_error(session.ws_connect(stub["address"]))
    assert err.status == 403
    await listener.ws.close()


# --- conformance of the rendezvous (defect 11) ----------------------------------------------------


@pytest.mark.parametrize("status", [100, 101, 199, 600])
async def test_a_reject_with_an_impossible_status_gives_the_sender_502(relay: Relay, session, status):
    listener = await RawListener.open(session, relay.url)
    task = asyncio.ensure_future(send_connect(session, relay.url))
    address = (await listener.next_command())["accept"]["address"]
    err = await handshake_error(session.ws_connect(f"{address}&sb-hc-statusCode={status}"))
    assert err.status == 410
    sender_err = await handshake_error(task)
    assert sender_err.status == 502
    assert f"invalid status {status}" in sender_err.message


async def test_a_rendezvous_id_dialed_under_another_path_is_refused(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    task = asyncio.ensure_future(send_connect(session, relay.url))
    address = (await listener.next_command())["accept"]["address"]
    elsewhere = address.replace("/$hc/echo?", "/$hc/open?")
    assert elsewhere != address
    err = await handshake_error(session.ws_connect(elsewhere))
    assert err.status == 403
    # The entry is still there for the right dial.
    rendezvous = await session.ws_connect(address)
    sender = await asyncio.wait_for(task, TIMEOUT)
    await sender.send_str("through")
    assert (await rendezvous.receive(TIMEOUT)).data == "through"
    await asyncio.gather(sender.close(), rendezvous.close())


async def test_a_frozen_spliced_peer_is_cut_by_the_relays_pings(relay_factory, session):
    relay = await relay_factory(limits=Limits(ping_interval=0.3))
    listener = await RawListener.open(session, relay.url)
    task = asyncio.ensure_future(send_connect(session, relay.url))
    address = (await listener.next_command())["accept"]["address"]
    # autoping=False and never reading: this listener answers no ping, like a SIGSTOPped process.
    frozen = await session.ws_connect(address, autoping=False)
    sender = await asyncio.wait_for(task, TIMEOUT)
    msg = await sender.receive(TIMEOUT)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == 1011
    await wait_for_health(session, relay.http_url, "active_connections", 0)
    await frozen.close()


async def test_senders_get_their_slot_back_after_every_outcome(relay_factory, session):
    relay = await relay_factory(limits=Limits(max_pending=1, accept_timeout=0.3))
    listener = await RawListener.open(session, relay.url)
    # timed out (the listener never dials)
    timed_out = await handshake_error(send_connect(session, relay.url))
    assert timed_out.status == 404
    await listener.next_command()
    # rejected
    task = asyncio.ensure_future(send_connect(session, relay.url))
    address = (await listener.next_command())["accept"]["address"]
    await handshake_error(session.ws_connect(address + "&sb-hc-statusCode=409"))
    assert (await handshake_error(task)).status == 409
    # spliced and ended
    task = asyncio.ensure_future(send_connect(session, relay.url, headers={"X": "y"}))
    rendezvous = await session.ws_connect((await listener.next_command())["accept"]["address"])
    sender = await asyncio.wait_for(task, TIMEOUT)
    await asyncio.gather(sender.close(), rendezvous.close())
    await wait_for_health(session, relay.http_url, "pending_connections", 0)
    # With max_pending = 1, a leaked slot would refuse this one with 503.
    task = asyncio.ensure_future(
        send_connect(session, relay.url, token=token_for(relay.url, "echo"), headers={})
    )
    rendezvous = await session.ws_connect((await listener.next_command())["accept"]["address"])
    sender = await asyncio.wait_for(task, TIMEOUT)
    await asyncio.gather(sender.close(), rendezvous.close())


# --- a listener that breaks its response mid-body (defect 9) --------------------------------------


async def test_a_framing_error_mid_response_body_cuts_only_that_sender(relay: Relay, session, caplog):
    from hyco.protocol.frames import Opcode, encode_frame
    from tests.server.rawclient import RawStreamClient

    listener = await RawListener.open(session, relay.url, "open")
    sender = aiohttp.ClientSession()
    request = asyncio.ensure_future(sender.get(f"{relay.http_url}/open/big"))
    command = (await listener.next_command())["request"]
    rendezvous = await RawStreamClient.connect(command["address"])
    response = {"response": {"requestId": command["id"], "statusCode": 200, "body": True}}
    await rendezvous.send_text(json.dumps(response))
    rendezvous.writer.write(encode_frame(Opcode.BINARY, b"partial", fin=False, mask=b"abcd"))
    await rendezvous.writer.drain()
    async with await asyncio.wait_for(request, TIMEOUT) as resp:
        assert resp.status == 200  # the body started; now the listener breaks the framing (RFC 6455 5.4)
        rendezvous.writer.write(encode_frame(Opcode.TEXT, b"not allowed here", mask=b"abcd"))
        await rendezvous.writer.drain()
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(resp.read(), TIMEOUT)
    await sender.close()
    rendezvous.close()
    await wait_for_health(session, relay.http_url, "http_requests_in_flight", 0)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    async with session.get(f"{relay.http_url}/$health") as health:
        assert health.status == 200
    await listener.ws.close()


# --- the relay runs on an injected clock ------------------------------------------------------------


async def test_a_relay_on_a_fake_clock_closes_an_expired_channel_when_the_clock_says_so(session):
    import time

    from hyco.protocol.sas import create_token
    from hyco.server import serve
    from hyco.testing import FakeClock
    from tests.conftest import KEY, KEY_NAME

    clock = FakeClock(start=time.time())
    config = test_config(limits=Limits(token_grace=60))
    async with serve(config, clock=clock) as relay:
        host = relay.url.split("://", 1)[1].split(":")[0]
        token = create_token(f"http://{host}/echo/", KEY_NAME, KEY, int(clock.time()) + 10)
        listener = await RawListener.open(session, relay.url, token=token)
        await clock.wait_for_sleepers()
        clock.advance(69)  # expiry + grace - 1 s: still open
        await clock.wait_for_sleepers()
        assert len(relay.connected_listeners()) == 1
        clock.advance(2)
        msg = await listener.ws.receive(TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 1008
