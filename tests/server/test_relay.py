"""The relay end to end over real sockets: control channel, connect, accept, reject, splice."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from hyco.protocol.sas import create_token
from hyco.server import Limits, Relay
from tests.conftest import (
    KEY,
    KEY_NAME,
    LISTEN_KEY,
    LISTEN_KEY_NAME,
    SEND_KEY,
    SEND_KEY_NAME,
    TIMEOUT,
)
from tests.server.wire import (
    HEADERS,
    RawListener,
    connect_url,
    handshake_error,
    listen_url,
    recording_session,
    send_connect,
    token_for,
    wait_for_health,
)

WSMsgType = aiohttp.WSMsgType


@pytest.fixture
async def session():
    async with recording_session() as s:
        yield s


async def connected_pair(session, relay, path="echo", **sender_kwargs):
    listener = await RawListener.open(session, relay.url, path)
    sender_task = asyncio.ensure_future(send_connect(session, relay.url, path, **sender_kwargs))
    command = (await listener.next_command())["accept"]
    rendezvous = await session.ws_connect(command["address"], autoclose=False)
    sender = await asyncio.wait_for(sender_task, TIMEOUT)
    return listener, sender, rendezvous, command


# --- readiness ------------------------------------------------------------------------------------


async def test_health_answers_200_with_counts(relay: Relay, session):
    async with session.get(f"{relay.http_url}/$health") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ready"
    assert body["listeners"] == 0


# --- control channel: authorization (protocol.md 2.1, 5.4) ---------------------------------------


async def test_listen_without_token_is_401_with_reason(relay: Relay, session):
    err = await handshake_error(session.ws_connect(listen_url(relay.url, "echo")))
    assert err.status == 401
    assert "RelaySecurityTokenRequired" in err.message


@pytest.mark.parametrize(
    ("token_args", "status", "text"),
    [
        ({"key": "wrong-key"}, 401, "invalid signature"),
        ({"ttl": -10}, 401, "expired"),
        ({"key_name": "nobody"}, 401, "UnknownKeyName"),
        ({"key_name": SEND_KEY_NAME, "key": SEND_KEY}, 403, "Listen"),
    ],
)
async def test_listen_with_bad_token_is_refused(relay: Relay, session, token_args, status, text):
    token = token_for(relay.url, "echo", **token_args)
    err = await handshake_error(RawListener.open(session, relay.url, token=token))
    assert err.status == status
    assert text.lower() in err.message.lower()


async def test_listen_with_malformed_token_is_401(relay: Relay, session):
    for token in ("garbage", "SharedAccessSignature sr=x&sig=y", "Bearer eyJhbGciOi"):
        err = await handshake_error(RawListener.open(session, relay.url, token=token))
        assert err.status == 401


async def test_token_for_another_host_is_401_invalid_audience(relay: Relay, session):
    token = create_token("http://elsewhere.example/echo/", KEY_NAME, KEY, int(time.time()) + 60)
    err = await handshake_error(RawListener.open(session, relay.url, token=token))
    assert err.status == 401
    assert "InvalidAudience" in err.message


async def test_token_for_another_entity_is_401(relay: Relay, session):
    token = create_token("http://127.0.0.1/echo2/", KEY_NAME, KEY, int(time.time()) + 60)
    err = await handshake_error(RawListener.open(session, relay.url, token=token))
    assert err.status == 401


@pytest.mark.parametrize(
    "audience",
    [
        "http://127.0.0.1/echo/",  # .NET
        "http://127.0.0.1:443/echo",  # Node with a port
        "sb://127.0.0.1/echo",  # Java listener
        "http://127.0.0.1/",  # namespace-wide
    ],
)
async def test_listen_accepts_every_official_audience_form(relay: Relay, session, audience):
    token = create_token(audience, KEY_NAME, KEY, int(time.time()) + 60)
    listener = await RawListener.open(session, relay.url, token=token)
    assert not listener.ws.closed
    await listener.ws.close()


async def test_token_in_query_parameter_works(relay: Relay, session):
    from urllib.parse import quote

    token = token_for(relay.url, "echo")
    url = listen_url(relay.url, "echo") + "&sb-hc-token=" + quote(token, safe="")
    ws = await session.ws_connect(url)
    assert not ws.closed
    await ws.close()


async def test_listen_only_rule_can_listen_but_not_send(relay: Relay, session):
    token = token_for(relay.url, "echo", LISTEN_KEY_NAME, LISTEN_KEY)
    listener = await RawListener.open(session, relay.url, token=token)
    err = await handshake_error(send_connect(session, relay.url, token=token))
    assert err.status == 403
    await listener.ws.close()


async def test_unknown_path_is_404_when_creation_is_off(relay: Relay, session):
    err = await handshake_error(RawListener.open(session, relay.url, "nosuch"))
    assert err.status == 404
    assert "Endpoint does not exist" in err.message


async def test_create_on_listen_makes_the_entity_usable(relay_factory, session):
    from hyco.server import ServerConfig

    relay = await relay_factory(server=ServerConfig(host="127.0.0.1", port=0, create_on_listen=True))
    _, sender, rendezvous, _ = await connected_pair(session, relay, "fresh/one")
    await sender.send_str("hi")
    assert (await rendezvous.receive(TIMEOUT)).data == "hi"
    err = await handshake_error(RawListener.open(session, relay.url, "bad$name"))
    assert err.status == 404


async def test_26th_listener_is_refused_with_a_clear_reason(relay_factory, session):
    relay = await relay_factory(limits=Limits(max_listeners=3))
    listeners = [await RawListener.open(session, relay.url) for _ in range(3)]
    err = await handshake_error(RawListener.open(session, relay.url))
    assert err.status == 403
    assert "MaximumListenersPerEndpoint" in err.message
    await listeners[0].ws.close()
    # A freed slot can be taken again.
    again = await RawListener.open(session, relay.url)
    assert not again.ws.closed


# --- sender connect (protocol.md 3.1, 3.4) ------------------------------------------------------


async def test_connect_without_listener_is_404_no_listeners(relay: Relay, session):
    err = await handshake_error(send_connect(session, relay.url))
    assert err.status == 404
    assert "no listeners connected" in err.message


async def test_connect_to_unknown_path_is_404(relay: Relay, session):
    err = await handshake_error(send_connect(session, relay.url, "nosuch"))
    assert err.status == 404
    assert "does not exist" in err.message


async def test_connect_needs_send_rights(relay: Relay, session):
    await RawListener.open(session, relay.url)
    err = await handshake_error(session.ws_connect(connect_url(relay.url, "echo")))
    assert err.status == 401


async def test_entity_send_rule_lets_a_sender_in(relay: Relay, session):
    token = token_for(relay.url, "echo", SEND_KEY_NAME, SEND_KEY)
    _, sender, rendezvous, _ = await connected_pair(session, relay, token=token)
    await sender.send_bytes(b"x")
    assert (await rendezvous.receive(TIMEOUT)).data == b"x"


async def test_open_entity_needs_no_token_and_strips_a_given_one(relay: Relay, session):
    listener = await RawListener.open(session, relay.url, "open")
    task = asyncio.ensure_future(session.ws_connect(connect_url(relay.url, "open")))
    command = (await listener.next_command())["accept"]
    rendezvous = await session.ws_connect(command["address"])
    sender = await asyncio.wait_for(task, TIMEOUT)
    await asyncio.gather(sender.close(), rendezvous.close())
    # A token sent anyway (even a bad one) is ignored and never forwarded.
    task = asyncio.ensure_future(send_connect(session, relay.url, "open", token="garbage"))
    command = (await listener.next_command())["accept"]
    assert "ServiceBusAuthorization" not in command["connectHeaders"]
    rendezvous = await session.ws_connect(command["address"])
    sender = await asyncio.wait_for(task, TIMEOUT)
    await asyncio.gather(sender.close(), rendezvous.close())


async def test_accept_carries_address_headers_endpoint_and_id(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    task = asyncio.ensure_future(
        send_connect(
            session,
            relay.url,
            "echo/sub/deeper",
            query="x=1&sb-hc-custom=2&y",
            headers={"X-App": "v", "sb-hc-id": "ignored"},
        )
    )
    command = await listener.next_command()
    assert list(command) == ["accept"]
    accept = command["accept"]
    assert list(accept) == ["address", "id", "connectHeaders", "remoteEndpoint"]
    address = accept["address"]
    assert address.startswith(f"{relay.url}/$hc/echo/sub/deeper?x=1&y&sb-hc-action=accept&sb-hc-id=")
    headers = {k.lower(): v for k, v in accept["connectHeaders"].items()}
    assert headers["x-app"] == "v"
    assert headers["sec-websocket-key"]
    assert headers["sec-websocket-version"] == "13"
    assert headers["host"] == relay.url.split("://")[1]
    assert "servicebusauthorization" not in headers
    assert accept["remoteEndpoint"]["address"] == "127.0.0.1"
    assert isinstance(accept["remoteEndpoint"]["port"], int)
    # The accept's id is the sender's tracking id; the rendezvous id adds a secret the sender never learns.
    tracking, secret = address.split("sb-hc-id=")[1].rsplit("_", 1)
    assert accept["id"] == tracking
    assert secret not in json.dumps(accept["connectHeaders"])
    rendezvous = await session.ws_connect(address)
    sender = await asyncio.wait_for(task, TIMEOUT)
    sender_view = [h for url, h in HEADERS.items() if "sb-hc-action=connect" in url]
    assert sender_view  # the sender's handshake answer was recorded ...
    assert all(secret not in json.dumps(h) for h in sender_view)  # ... and carries no trace of the secret
    await asyncio.gather(sender.close(), rendezvous.close())


async def test_rendezvous_ids_are_unguessable_and_distinct(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    ids = set()
    for _ in range(3):
        task = asyncio.ensure_future(send_connect(session, relay.url, headers={}))
        address = (await listener.next_command())["accept"]["address"]
        secret = address.split("sb-hc-id=")[1].rsplit("_", 1)[1]
        assert len(secret) == 32  # 128 bits, hex
        ids.add(secret)
        rendezvous = await session.ws_connect(address)
        sender = await asyncio.wait_for(task, TIMEOUT)
        await asyncio.gather(sender.close(), rendezvous.close())
    assert len(ids) == 3


# --- reject (protocol.md 3.3) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "status", "reason"),
    [
        ("&sb-hc-statusCode=401&sb-hc-statusDescription=Go+away%2C+please", 401, "Go away, please"),
        ("&statusCode=418&statusDescription=I%27m%20a%20teapot", 418, "I'm a teapot"),
        ("&sb-hc-statusCode=400", 400, "Rejected by the listener"),
    ],
)
async def test_reject_gives_sender_the_listeners_status_and_listener_410(
    relay: Relay, session, suffix, status, reason
):
    listener = await RawListener.open(session, relay.url)
    task = asyncio.ensure_future(send_connect(session, relay.url))
    address = (await listener.next_command())["accept"]["address"]
    err = await handshake_error(session.ws_connect(address + suffix))
    assert err.status == 410
    sender_err = await handshake_error(task)
    assert sender_err.status == status
    assert sender_err.message == reason


async def test_rendezvous_address_is_single_use(relay: Relay, session):
    _, sender, rendezvous, command = await connected_pair(session, relay)
    err = await handshake_error(session.ws_connect(command["address"]))
    assert err.status == 403
    await sender.send_str("still fine")
    assert (await rendezvous.receive(TIMEOUT)).data == "still fine"


async def test_listener_that_never_dials_gives_sender_404_and_late_dial_403(relay_factory, session):
    relay = await relay_factory(limits=Limits(accept_timeout=0.3))
    listener = await RawListener.open(session, relay.url)
    task = asyncio.ensure_future(send_connect(session, relay.url))
    address = (await listener.next_command())["accept"]["address"]
    err = await handshake_error(task)
    assert err.status == 404
    assert "within the allowed timeout" in err.message
    late = await handshake_error(session.ws_connect(address))
    assert late.status == 403


async def test_sender_that_vanishes_while_waiting_frees_its_rendezvous(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    async with aiohttp.ClientSession() as doomed:
        task = asyncio.ensure_future(send_connect(doomed, relay.url))
        address = (await listener.next_command())["accept"]["address"]
        task.cancel()
    # The sender's connection is gone; the relay forgets it and refuses the listener's dial.
    await wait_for_health(session, relay.http_url, "pending_connections", 0)
    err = await handshake_error(session.ws_connect(address))
    assert err.status == 403


# --- routing (protocol.md 2.8) ---------------------------------------------------------------------


async def test_allowed_and_disallowed_listeners_route_by_listener_id(relay: Relay, session):
    a = await RawListener.open(session, relay.url, listener_id="aaaaaaaa-0000-0000-0000-000000000001")
    b = await RawListener.open(session, relay.url, listener_id="bbbbbbbb-0000-0000-0000-000000000002_G1")
    for _ in range(4):
        task = asyncio.ensure_future(
            send_connect(
                session,
                relay.url,
                headers={"Microsoft-Relay-AllowedListeners": "BBBBBBBB-0000-0000-0000-000000000002"},
            )
        )
        address = (await b.next_command())["accept"]["address"]
        rendezvous = await session.ws_connect(address)
        sender = await asyncio.wait_for(task, TIMEOUT)
        await asyncio.gather(sender.close(), rendezvous.close())
    task = asyncio.ensure_future(
        send_connect(
            session,
            relay.url,
            headers={"Microsoft-Relay-DisallowedListeners": "bbbbbbbb-0000-0000-0000-000000000002"},
        )
    )
    address = (await a.next_command())["accept"]["address"]
    await session.ws_connect(address)
    await asyncio.wait_for(task, TIMEOUT)
    err = await handshake_error(
        send_connect(session, relay.url, headers={"Microsoft-Relay-AllowedListeners": "nobody"})
    )
    assert err.status == 404
    assert "AllowedListeners" in err.message


async def test_senders_are_spread_over_listeners(relay: Relay, session):
    listeners = [await RawListener.open(session, relay.url) for _ in range(3)]
    counts = [0, 0, 0]

    async def serve(i: int) -> None:
        while True:
            command = await listeners[i].next_command()
            counts[i] += 1
            await session.ws_connect(command["accept"]["address"])

    servers = [asyncio.ensure_future(serve(i)) for i in range(3)]
    for _ in range(30):
        sender = await asyncio.wait_for(send_connect(session, relay.url), TIMEOUT)
        await sender.close()
    for s in servers:
        s.cancel()
    assert sum(counts) == 30
    assert all(c > 0 for c in counts), counts


# --- renewToken, expiry, bad input on the control channel (protocol.md 2.6) -----------------------


async def test_renew_token_keeps_channel_and_bad_renewal_closes_1008(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    good = token_for(relay.url, "echo")
    await listener.ws.send_str(json.dumps({"renewToken": {"token": good}}))
    # The channel still routes senders after a good renewal.
    task = asyncio.ensure_future(send_connect(session, relay.url))
    address = (await listener.next_command())["accept"]["address"]
    await session.ws_connect(address)
    await asyncio.wait_for(task, TIMEOUT)
    bad = token_for(relay.url, "echo", key="wrong")
    await listener.ws.send_str(json.dumps({"renewToken": {"token": bad}}))
    msg = await listener.ws.receive(TIMEOUT)
    assert msg.type is WSMsgType.CLOSE
    assert listener.ws.close_code == 1008
    assert "signature" in msg.extra


# Expiry after the grace window and renewals that move it run on a FakeClock in tests/server/test_control.py.


@pytest.mark.parametrize(
    "garbage",
    ["not json", "[]", '{"accept": {"address": "x", "id": "y"}}', '{"bogus": {}}', '{"a":1,"b":2}'],
)
async def test_garbage_on_control_channel_closes_only_that_channel(relay: Relay, session, garbage):
    bad = await RawListener.open(session, relay.url, listener_id="bad")
    good = await RawListener.open(session, relay.url, listener_id="good")
    await bad.ws.send_str(garbage)
    msg = await bad.ws.receive(TIMEOUT)
    assert msg.type is WSMsgType.CLOSE
    assert bad.ws.close_code == 1008
    assert "protocol violation" in msg.extra
    task = asyncio.ensure_future(send_connect(session, relay.url))
    address = (await good.next_command())["accept"]["address"]
    await session.ws_connect(address)
    await asyncio.wait_for(task, TIMEOUT)


async def test_oversize_control_message_closes_that_channel_1009(relay_factory, session):
    relay = await relay_factory(limits=Limits(max_control_message_size=1024))
    listener = await RawListener.open(session, relay.url)
    await listener.ws.send_str("x" * 5000)
    msg = await listener.ws.receive(TIMEOUT)
    assert msg.type is WSMsgType.CLOSE
    assert listener.ws.close_code == 1009


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/$hc/echo?sb-hc-action=dance", 400),
        ("/$hc/?sb-hc-action=listen", 400),
        ("/$hc/echo?sb-hc-action=listen&sb-hc-id=" + "x" * 500, 400),
        ("/$hc/echo?sb-hc-action=accept&sb-hc-statusCode=abc", 400),
    ],
)
async def test_malformed_websocket_targets_are_400(relay: Relay, session, path, status):
    err = await handshake_error(session.ws_connect(relay.url + path))
    assert err.status == status
    assert "Bad request" in err.message


async def test_plain_get_on_hc_url_is_400(relay: Relay, session):
    async with session.get(f"{relay.http_url}/$hc/echo?sb-hc-action=connect") as resp:
        assert resp.status == 400
        assert "WebSocket" in (await resp.json())["error"]["message"]


# --- splice (protocol.md 3.5, design.md half-close) ----------------------------------------------


async def test_close_code_and_reason_propagate_both_ways(relay: Relay, session):
    _, sender, rendezvous, _ = await connected_pair(session, relay)
    closing = asyncio.ensure_future(rendezvous.close(code=4000, message=b"bye now"))
    msg = await sender.receive(TIMEOUT)
    assert msg.type is WSMsgType.CLOSE
    assert (msg.data, msg.extra) == (4000, "bye now")
    await asyncio.wait_for(closing, TIMEOUT)
    # The other direction: a fresh pair, the sender closes with its own code.
    _, sender, rendezvous, _ = await connected_pair(session, relay)
    closing = asyncio.ensure_future(sender.close(code=4001, message=b"sender done"))
    msg = await rendezvous.receive(TIMEOUT)
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4001, "sender done")
    await rendezvous.close(code=4001)
    await asyncio.wait_for(closing, TIMEOUT)
    assert sender.close_code == 4001


async def test_half_close_keeps_the_other_direction_flowing(relay: Relay, session):
    _, sender, rendezvous, _ = await connected_pair(session, relay)
    await sender.send_str("request")
    # The sender shuts down its side (.NET Shutdown(): Close 1000) and keeps reading.
    await sender._writer.close(1000, b"Shutdown")
    assert (await rendezvous.receive(TIMEOUT)).data == "request"
    msg = await rendezvous.receive(TIMEOUT)
    assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1000, "Shutdown")
    # The listener answers after seeing the sender's shutdown; the answer still arrives.
    for i in range(3):
        await rendezvous.send_bytes(b"answer %d" % i)
    await rendezvous.close()
    received = [(await sender.receive(TIMEOUT)).data for _ in range(3)]
    assert received == [b"answer 0", b"answer 1", b"answer 2"]
    assert (await sender.receive(TIMEOUT)).type is WSMsgType.CLOSE


async def test_listener_vanishing_mid_splice_closes_sender_1011(relay: Relay, session):
    async with aiohttp.ClientSession() as doomed:
        listener = await RawListener.open(doomed, relay.url)
        task = asyncio.ensure_future(send_connect(session, relay.url))
        address = (await listener.next_command())["accept"]["address"]
        rendezvous = await doomed.ws_connect(address)
        sender = await asyncio.wait_for(task, TIMEOUT)
        rendezvous._response.connection.transport.abort()  # no Close frame: the peer just vanishes
    msg = await sender.receive(TIMEOUT)
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == 1011


async def test_sender_vanishing_mid_splice_closes_listener_1011(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    async with aiohttp.ClientSession() as doomed:
        task = asyncio.ensure_future(send_connect(doomed, relay.url))
        address = (await listener.next_command())["accept"]["address"]
        rendezvous = await session.ws_connect(address, autoclose=False)
        sender = await asyncio.wait_for(task, TIMEOUT)
        sender._response.connection.transport.abort()
    msg = await rendezvous.receive(TIMEOUT)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1011)


async def test_oversize_message_in_splice_is_refused_1009_and_peer_told(relay_factory, session):
    relay = await relay_factory(limits=Limits(max_message_size=4096))
    _, sender, rendezvous, _ = await connected_pair(session, relay)
    await sender.send_bytes(b"x" * 10_000)
    msg = await sender.receive(TIMEOUT)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1009)
    msg = await rendezvous.receive(TIMEOUT)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1011)


async def test_subprotocol_chosen_by_listener_reaches_sender(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    task = asyncio.ensure_future(send_connect(session, relay.url, protocols=("chat", "superchat")))
    command = (await listener.next_command())["accept"]
    assert command["connectHeaders"]["Sec-WebSocket-Protocol"] == "chat,superchat"
    rendezvous = await session.ws_connect(command["address"], protocols=("superchat",))
    sender = await asyncio.wait_for(task, TIMEOUT)
    assert rendezvous.protocol == "superchat"
    assert sender.protocol == "superchat"


async def test_slow_reader_slows_the_writer_instead_of_growing_memory(relay: Relay, session):
    _, sender, rendezvous, _ = await connected_pair(session, relay)
    chunk = b"\xab" * 65536
    total = 256 * 1024 * 1024
    sent = 0

    async def write_all() -> None:
        nonlocal sent
        while sent < total:
            await sender.send_bytes(chunk)
            sent += len(chunk)

    writer = asyncio.ensure_future(write_all())
    # Wait until the writer is stuck: progress stops because nobody reads at the far end.
    last = -1
    while sent != last:
        last = sent
        await asyncio.sleep(0.3)
    assert not writer.done()
    assert sent < 64 * 1024 * 1024, f"{sent} bytes were buffered without a reader"
    received = 0
    while received < total:
        msg = await rendezvous.receive(TIMEOUT)
        received += len(msg.data)
    await asyncio.wait_for(writer, TIMEOUT)
    assert received == total


# --- load and shutdown -----------------------------------------------------------------------------


async def test_storm_of_bad_attempts_does_not_disturb_others(relay_factory, session, caplog):
    # Every client here is 127.0.0.1: lift the per-source rate, which would otherwise answer the storm (and
    # the good sender among it) with 429 (tests/server/test_sources.py).
    relay = await relay_factory(limits=Limits(handshake_rate_per_source=1_000_000))
    listener = await RawListener.open(session, relay.url)
    bad_token = token_for(relay.url, "echo", key="wrong")
    statuses: list[int] = []

    async def attempt() -> None:
        try:
            ws = await session.ws_connect(
                listen_url(relay.url, "echo"), headers={"ServiceBusAuthorization": bad_token}
            )
            await ws.close()
            statuses.append(101)
        except aiohttp.WSServerHandshakeError as exc:
            statuses.append(exc.status)

    async def storm() -> None:
        for _ in range(20):
            await asyncio.gather(*(attempt() for _ in range(50)))

    storming = asyncio.ensure_future(storm())
    # A good sender still gets through while the storm runs.
    task = asyncio.ensure_future(send_connect(session, relay.url))
    address = (await listener.next_command())["accept"]["address"]
    rendezvous = await session.ws_connect(address)
    sender = await asyncio.wait_for(task, TIMEOUT)
    await sender.send_str("through the storm")
    assert (await rendezvous.receive(TIMEOUT)).data == "through the storm"
    await asyncio.wait_for(storming, 6 * TIMEOUT)
    assert statuses == [401] * 1000
    # The log says what happened without a line per attempt.
    refusals = [r for r in caplog.records if r.getMessage().startswith("refused")]
    assert 1 <= len(refusals) < 50
    assert "InvalidSignature" in refusals[0].getMessage()


async def test_shutdown_closes_control_channels_and_splices_with_1001(relay_factory, session):
    from hyco.server import serve
    from tests.conftest import test_config

    async with serve(test_config()) as relay:
        _, sender, rendezvous, _ = await connected_pair(session, relay)
        other = await RawListener.open(session, relay.url)
        closing = asyncio.ensure_future(relay.close())
        msg = await other.ws.receive(TIMEOUT)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1001)
        msg = await sender.receive(TIMEOUT)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1001)
        msg = await rendezvous.receive(TIMEOUT)
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1001)
        await rendezvous.close()
        await asyncio.wait_for(closing, TIMEOUT)


# --- public_url, logs, raw garbage ------------------------------------------------------------------


async def test_rendezvous_addresses_use_public_url_and_its_host_is_a_valid_audience(relay_factory, session):
    from hyco.server import ServerConfig

    relay = await relay_factory(
        server=ServerConfig(host="127.0.0.1", port=0, public_url="wss://relay.example:8443")
    )
    token = create_token("http://relay.example/echo/", KEY_NAME, KEY, int(time.time()) + 60)
    listener = await RawListener.open(session, relay.url, token=token)
    task = asyncio.ensure_future(send_connect(session, relay.url, "echo/x", token=token, query="q=1"))
    address = (await listener.next_command())["accept"]["address"]
    assert address.startswith("wss://relay.example:8443/$hc/echo/x?q=1&sb-hc-action=accept&sb-hc-id=")
    # Reach the same node by its real address (a test has no DNS for relay.example).
    local = address.replace("wss://relay.example:8443", relay.url)
    await session.ws_connect(local)
    await asyncio.wait_for(task, TIMEOUT)


async def test_logs_never_contain_tokens_or_keys(relay: Relay, session, caplog):
    caplog.set_level("DEBUG")
    good = token_for(relay.url, "echo")
    bad = token_for(relay.url, "echo", key="wrong")
    await handshake_error(RawListener.open(session, relay.url, token=bad))
    await handshake_error(RawListener.open(session, relay.url, token="SharedAccessSignature garbage"))
    listener = await RawListener.open(session, relay.url, token=good)
    await listener.ws.send_str(json.dumps({"renewToken": {"token": good}}))
    await listener.ws.send_str(json.dumps({"renewToken": {"token": bad}}))
    await listener.ws.receive(TIMEOUT)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused" in text
    for secret in (KEY, good, bad, good.split("sig=")[1].split("&")[0], bad.split("sig=")[1].split("&")[0]):
        assert secret not in text


async def test_garbage_bytes_on_a_spliced_socket_close_it_and_tell_the_peer(relay: Relay, session):
    import base64
    import os

    listener = await RawListener.open(session, relay.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    token = token_for(relay.url, "echo")
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /$hc/echo?sb-hc-action=connect HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{relay.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"ServiceBusAuthorization: {token}\r\n\r\n"
        ).encode()
    )
    address = (await listener.next_command())["accept"]["address"]
    rendezvous = await session.ws_connect(address, autoclose=False)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101")
    writer.write(b"\xff\xff\xff\xff garbage that is no WebSocket frame")  # reserved opcode, unmasked
    msg = await rendezvous.receive(TIMEOUT)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1011)
    writer.close()
    # The relay still serves others.
    task = asyncio.ensure_future(send_connect(session, relay.url))
    address = (await listener.next_command())["accept"]["address"]
    await session.ws_connect(address)
    await asyncio.wait_for(task, TIMEOUT)


async def test_pings_are_answered_and_silent_listeners_are_dropped(relay_factory, session):
    relay = await relay_factory(limits=Limits(ping_interval=0.2))
    alive = await RawListener.open(session, relay.url)
    commands: asyncio.Queue = asyncio.Queue()

    async def read_alive() -> None:  # aiohttp answers pings while the application reads
        async for msg in alive.ws:
            commands.put_nowait(json.loads(msg.data))

    reader = asyncio.ensure_future(read_alive())
    await alive.ws.ping(b"are you there")
    silent = await RawListener.open(session, relay.url, autoping=False)
    while True:
        msg = await silent.ws.receive(TIMEOUT)
        if msg.type is not WSMsgType.PING:
            break
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    # The listener that answers pings is still there and still routed to.
    task = asyncio.ensure_future(send_connect(session, relay.url))
    command = await asyncio.wait_for(commands.get(), TIMEOUT)
    await session.ws_connect(command["accept"]["address"])
    await asyncio.wait_for(task, TIMEOUT)
    reader.cancel()


async def test_waiting_senders_are_bounded_by_max_pending(relay_factory, session):
    relay = await relay_factory(limits=Limits(max_pending=1, accept_timeout=5))
    listener = await RawListener.open(session, relay.url)
    first = asyncio.ensure_future(send_connect(session, relay.url))
    address = (await listener.next_command())["accept"]["address"]
    # One sender is parked; the next one (WebSocket or HTTP) is refused at once with 503.
    err = await handshake_error(send_connect(session, relay.url))
    assert err.status == 503
    assert "ServerBusy" in err.message
    async with session.get(
        f"{relay.http_url}/echo", headers={"ServiceBusAuthorization": token_for(relay.url, "echo")}
    ) as resp:
        assert resp.status == 503
    await session.ws_connect(address)
    await asyncio.wait_for(first, TIMEOUT)
    # Once the first is spliced, there is room again.
    task = asyncio.ensure_future(send_connect(session, relay.url))
    address = (await listener.next_command())["accept"]["address"]
    await session.ws_connect(address)
    await asyncio.wait_for(task, TIMEOUT)


async def test_unauthenticated_listens_create_nothing_and_idle_entities_make_room(relay_factory, session):
    from hyco.server import ServerConfig

    relay = await relay_factory(
        server=ServerConfig(host="127.0.0.1", port=0, create_on_listen=True),
        limits=Limits(max_hybrid_connections=4),  # 3 configured + room for exactly one more
    )
    for i in range(10):
        err = await handshake_error(session.ws_connect(listen_url(relay.url, f"junk{i}")))
        assert err.status == 401
    listener = await RawListener.open(session, relay.url, "fresh")  # would be 403 if junk had been created
    await listener.ws.close()
    await wait_for_health(session, relay.http_url, "listeners", 0)
    # The entity stays known while idle: a sender learns that no listener is there, not that it is a typo.
    err = await handshake_error(send_connect(session, relay.url, "fresh"))
    assert err.status == 404
    assert "no listeners connected" in err.message
    # Its slot goes to another new entity when needed; then "fresh" is unknown again.
    other = await RawListener.open(session, relay.url, "another")
    await other.ws.close()
    err = await handshake_error(send_connect(session, relay.url, "fresh"))
    assert err.status == 404
    assert "does not exist" in err.message


async def test_client_tracking_ids_with_control_characters_are_replaced(relay: Relay, session):
    url = f"{relay.url}/$hc/open?sb-hc-action=connect&sb-hc-id=abc%0d%0aX-Injected:1"
    err = await handshake_error(session.ws_connect(url))
    assert err.status == 404
    async with session.get(f"{relay.http_url}/open?sb-hc-id=abc%0d%0aX:1") as resp:
        assert resp.status == 502
        assert "\r" not in resp.headers["TrackingId"] and "X:1" not in resp.headers["TrackingId"]
        assert "X-Injected" not in resp.headers
