"""Relayed plain HTTP end to end (protocol.md 4), with a hand-written listener speaking the wire format."""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp
import pytest

from hyco.protocol.sas import Right
from hyco.server import AuthorizationRule, HybridConnectionConfig, Relay, Secret
from tests.conftest import KEY, KEY_NAME, TIMEOUT
from tests.server.wire import RawListener, token_for, wait_for_health

WSMsgType = aiohttp.WSMsgType


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def auth(relay: Relay, path: str = "echo") -> dict[str, str]:
    return {"ServiceBusAuthorization": token_for(relay.url, path)}


async def respond(ws, request_id, status=200, description=None, headers=None, body: bytes | None = b""):
    response = {"requestId": request_id, "body": body is not None, "statusCode": status}
    if description is not None:
        response["statusDescription"] = description
    if headers is not None:
        response["responseHeaders"] = headers
    await ws.send_str(json.dumps({"response": response}))
    if body is not None:
        await ws.send_bytes(body)


async def read_body(ws) -> bytes:
    msg = await ws.receive(TIMEOUT)
    assert msg.type is WSMsgType.BINARY, msg
    return msg.data


async def test_small_get_goes_inline_with_the_documented_request(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    headers = {**auth(relay), "X-App": "v", "X-Multi": "a"}
    call = asyncio.ensure_future(
        session.get(f"{relay.http_url}/echo/a/b?x=1&sb-hc-token=zzz&y", headers=headers)
    )
    command = await listener.next_command()
    request = command["request"]
    assert list(request) == [
        "address",
        "id",
        "requestTarget",
        "method",
        "remoteEndpoint",
        "requestHeaders",
        "body",
    ]
    assert request["requestTarget"] == "/echo/a/b?x=1&y"
    assert request["method"] == "GET"
    assert request["body"] is False
    assert "sb-hc-action=request" in request["address"]
    sent = {k.lower(): v for k, v in request["requestHeaders"].items()}
    assert sent["x-app"] == "v"
    assert sent["host"] == relay.http_url.split("://")[1]
    assert sent["via"] == f"1.1 {sent['host']}"
    assert "servicebusauthorization" not in sent
    assert "content-length" not in sent
    await respond(
        listener.ws, request["id"], 201, "Made It", {"X-Reply": "r", "Content-Type": "text/plain"}, b"hello"
    )
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert (resp.status, resp.reason) == (201, "Made It")
        assert await resp.read() == b"hello"
        assert resp.headers["X-Reply"] == "r"
        assert resp.headers["Via"].startswith("1.1 ")


async def test_post_small_body_inline_and_status_code_as_string(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    body = bytes(range(256)) * 4
    call = asyncio.ensure_future(session.post(f"{relay.http_url}/echo", data=body, headers=auth(relay)))
    request = (await listener.next_command())["request"]
    assert request["body"] is True
    assert await read_body(listener.ws) == body
    await listener.ws.send_str(
        json.dumps({"response": {"requestId": request["id"], "statusCode": "202", "body": True}})
    )
    await listener.ws.send_bytes(body[::-1])
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert (resp.status, resp.reason) == (202, "Accepted")
        assert await resp.read() == body[::-1]


@pytest.mark.parametrize("size", [65537, 200 * 1024, 3 * 1024 * 1024])
async def test_large_body_goes_by_stub_and_rendezvous(relay: Relay, session, size):
    listener = await RawListener.open(session, relay.url)
    body = bytes(i % 251 for i in range(size))
    call = asyncio.ensure_future(
        session.put(f"{relay.http_url}/echo/up", data=io.BytesIO(body), headers=auth(relay))
    )
    stub = (await listener.next_command())["request"]
    assert set(stub) == {"address", "id"}  # .NET/Java detect a stub by the missing body, Node by method
    rendezvous = await session.ws_connect(stub["address"], max_msg_size=0)
    full = json.loads((await rendezvous.receive(TIMEOUT)).data)["request"]
    assert (full["method"], full["body"], full["id"]) == ("PUT", True, stub["id"])
    assert await read_body(rendezvous) == body
    await respond(rendezvous, full["id"], 200, "OK", {"X-Size": str(size)}, body[:1000])
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert resp.status == 200
        assert resp.headers["X-Size"] == str(size)
        assert await resp.read() == body[:1000]
    msg = await rendezvous.receive(TIMEOUT)
    assert msg.type is WSMsgType.CLOSE  # the relay closes the rendezvous after the response


async def test_chunked_upload_of_unknown_length_goes_by_rendezvous(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)

    async def chunks():
        for i in range(5):
            yield b"%d" % i * 1000

    call = asyncio.ensure_future(session.post(f"{relay.http_url}/echo", data=chunks(), headers=auth(relay)))
    stub = (await listener.next_command())["request"]
    rendezvous = await session.ws_connect(stub["address"])
    full = json.loads((await rendezvous.receive(TIMEOUT)).data)["request"]
    assert "transfer-encoding" not in {k.lower() for k in full["requestHeaders"]}
    assert await read_body(rendezvous) == b"".join([b"%d" % i * 1000 for i in range(5)])
    await respond(rendezvous, full["id"], 200, body=b"ok")
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert await resp.read() == b"ok"


async def test_listener_may_answer_an_inline_request_over_its_rendezvous(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    call = asyncio.ensure_future(session.get(f"{relay.http_url}/echo/big", headers=auth(relay)))
    request = (await listener.next_command())["request"]
    # hyco-https dials the request address itself when its response is over 64 KiB.
    rendezvous = await session.ws_connect(request["address"])
    big = b"\x01\x02" * 300_000
    await respond(rendezvous, request["id"], 200, body=big)
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert await resp.read() == big


async def test_many_requests_in_flight_answered_in_reverse_order(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    calls = [
        asyncio.ensure_future(session.get(f"{relay.http_url}/echo/{i}", headers=auth(relay)))
        for i in range(20)
    ]
    requests = [(await listener.next_command())["request"] for _ in range(20)]
    for request in reversed(requests):
        await respond(listener.ws, request["id"], 200, body=request["requestTarget"].encode())
    for i, call in enumerate(calls):
        async with await asyncio.wait_for(call, TIMEOUT) as resp:
            assert await resp.read() == f"/echo/{i}".encode()


@pytest.mark.parametrize(
    ("status", "reason"), [(502, "Bad Gateway From App"), (504, "Slow App"), (418, "Tea")]
)
async def test_listener_status_and_reason_reach_the_sender_unchanged(relay: Relay, session, status, reason):
    listener = await RawListener.open(session, relay.url)
    call = asyncio.ensure_future(session.get(f"{relay.http_url}/echo", headers=auth(relay)))
    request = (await listener.next_command())["request"]
    await respond(listener.ws, request["id"], status, reason, body=None)
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert (resp.status, resp.reason) == (status, reason)


async def test_no_listener_is_502_and_unknown_path_404_and_no_token_401(relay: Relay, session):
    async with session.get(f"{relay.http_url}/echo", headers=auth(relay)) as resp:
        assert resp.status == 502
        assert "no listeners" in resp.reason
    async with session.get(f"{relay.http_url}/nosuch", headers=auth(relay)) as resp:
        assert resp.status == 404
    async with session.get(f"{relay.http_url}/echo") as resp:
        assert resp.status == 401
    async with session.request("CONNECT", f"{relay.http_url}/echo", headers=auth(relay)) as resp:
        assert resp.status in (400, 404, 405)  # never relayed (protocol.md 1.7)


async def test_authorization_header_is_used_and_stripped_or_forwarded_untouched(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    call = asyncio.ensure_future(
        session.get(f"{relay.http_url}/echo", headers={"Authorization": token_for(relay.url, "echo")})
    )
    request = (await listener.next_command())["request"]
    assert "authorization" not in {k.lower() for k in request["requestHeaders"]}
    await respond(listener.ws, request["id"], 200, body=None)
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert resp.status == 200
    # On an entity without client authorization, Authorization belongs to the app and is forwarded.
    open_listener = await RawListener.open(session, relay.url, "open")
    call = asyncio.ensure_future(
        session.get(f"{relay.http_url}/open", headers={"Authorization": "Bearer app-token"})
    )
    request = (await open_listener.next_command())["request"]
    assert request["requestHeaders"]["Authorization"] == "Bearer app-token"
    await respond(open_listener.ws, request["id"], 200, body=None)
    await asyncio.wait_for(call, TIMEOUT)


async def test_silent_listener_gives_504_after_the_configured_deadline(relay_factory, session):
    relay = await relay_factory(
        hybrid_connections=(HybridConnectionConfig("slow", request_timeout=0.3),),
        authorization_rules=(AuthorizationRule(KEY_NAME, Secret(KEY), frozenset({Right.MANAGE})),),
    )
    listener = await RawListener.open(session, relay.url, "slow")
    async with session.get(f"{relay.http_url}/slow", headers=auth(relay, "slow")) as resp:
        assert resp.status == 504
        assert "did not respond in the required time" in resp.reason
    request = (await listener.next_command())["request"]
    # A late answer is ignored; the channel keeps working.
    await respond(listener.ws, request["id"], 200, body=b"late")
    call = asyncio.ensure_future(session.get(f"{relay.http_url}/slow", headers=auth(relay, "slow")))
    request = (await listener.next_command())["request"]
    await respond(listener.ws, request["id"], 200, body=b"on time")
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert await resp.read() == b"on time"


async def test_bad_responses_fail_only_their_own_request(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    first = asyncio.ensure_future(session.get(f"{relay.http_url}/echo/1", headers=auth(relay)))
    second = asyncio.ensure_future(session.get(f"{relay.http_url}/echo/2", headers=auth(relay)))
    r1 = (await listener.next_command())["request"]
    r2 = (await listener.next_command())["request"]
    # Unknown request id: ignored (with its body).
    await respond(listener.ws, "nobody", 200, body=b"stray")
    # Status code out of range: that request gets 502.
    await listener.ws.send_str(json.dumps({"response": {"requestId": r1["id"], "statusCode": 1000}}))
    await respond(listener.ws, r2["id"], 200, body=b"fine")
    async with await asyncio.wait_for(first, TIMEOUT) as resp:
        assert resp.status == 502
        assert "invalid response" in resp.reason
    async with await asyncio.wait_for(second, TIMEOUT) as resp:
        assert (resp.status, await resp.read()) == (200, b"fine")
    assert not listener.ws.closed


async def test_sender_hanging_up_mid_upload_closes_the_rendezvous(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    _reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    token = token_for(relay.url, "echo")
    writer.write(
        (
            f"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:{relay.port}\r\nContent-Length: 1000000\r\n"
            f"ServiceBusAuthorization: {token}\r\n\r\n"
        ).encode()
        + b"x" * 100_000
    )
    await writer.drain()
    stub = (await listener.next_command())["request"]
    rendezvous = await session.ws_connect(stub["address"], max_msg_size=0)
    assert json.loads((await rendezvous.receive(TIMEOUT)).data)["request"]["method"] == "POST"
    writer.transport.abort()  # the sender vanishes mid-body
    msg = await rendezvous.receive(TIMEOUT)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)


async def test_request_rendezvous_address_cannot_be_reused(relay: Relay, session):
    listener = await RawListener.open(session, relay.url)
    call = asyncio.ensure_future(session.get(f"{relay.http_url}/echo", headers=auth(relay)))
    request = (await listener.next_command())["request"]
    await respond(listener.ws, request["id"], 200, body=b"x")
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert await resp.read() == b"x"
    async with aiohttp.ClientSession() as fresh:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await fresh.ws_connect(request["address"])
    assert info.value.status == 403


@pytest.mark.slow
async def test_listener_may_stream_its_response_before_reading_the_whole_request(relay: Relay, session):
    # A streaming echo: the response starts while the (large) request body is still arriving.
    listener = await RawListener.open(session, relay.url)
    size = 16 * 1024 * 1024
    body = (bytes(range(253)) * (size // 253 + 1))[:size]  # built at once: no 16 M-step generator
    call = asyncio.ensure_future(
        session.post(f"{relay.http_url}/echo", data=io.BytesIO(body), headers=auth(relay))
    )
    stub = (await listener.next_command())["request"]
    from tests.server.rawclient import RawStreamClient

    rendezvous = await RawStreamClient.connect(stub["address"])
    full = json.loads(await rendezvous.text())["request"]
    await rendezvous.send_text(
        json.dumps({"response": {"requestId": full["id"], "statusCode": 200, "body": True}})
    )

    async def echo_body():
        async for chunk in rendezvous.binary_chunks():
            if chunk:
                yield chunk

    echo = asyncio.ensure_future(rendezvous.send_binary_stream(echo_body()))
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert resp.status == 200
        assert await asyncio.wait_for(resp.read(), TIMEOUT) == body
    await asyncio.wait_for(echo, TIMEOUT)
    rendezvous.close()


@pytest.mark.parametrize(
    ("head", "body", "statuses"),
    [
        # A chunk size that is not hex: aiohttp's parser refuses it before anything is relayed.
        ("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n", (400,)),
        # A header far over the parser's limit.
        ("GET /echo HTTP/1.1\r\nX-Big: " + "a" * 70_000 + "\r\n", b"", (400, 431)),
    ],
)
async def test_malformed_or_oversize_requests_get_a_clear_status(relay: Relay, session, head, body, statuses):
    listener = await RawListener.open(session, relay.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    token = token_for(relay.url, "echo")
    writer.write(
        f"{head}Host: 127.0.0.1:{relay.port}\r\nServiceBusAuthorization: {token}\r\n\r\n".encode() + body
    )
    status_line = await asyncio.wait_for(reader.readline(), TIMEOUT)
    assert int(status_line.split()[1]) in statuses, status_line
    writer.close()
    # Nothing reached the listener, and the next request is served normally.
    call = asyncio.ensure_future(session.get(f"{relay.http_url}/echo/next", headers=auth(relay)))
    request = (await listener.next_command())["request"]
    assert request["requestTarget"] == "/echo/next"
    await respond(listener.ws, request["id"], 200, body=b"ok")
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert await resp.read() == b"ok"


def slow_config(**limits):
    from hyco.server import Limits

    return {
        "hybrid_connections": (HybridConnectionConfig("slow", request_timeout=0.5),),
        "authorization_rules": (AuthorizationRule(KEY_NAME, Secret(KEY), frozenset({Right.MANAGE})),),
        "limits": Limits(**limits),
    }


async def test_a_listener_that_stops_reading_cannot_hang_senders(relay_factory, session):
    relay = await relay_factory(**slow_config(accept_timeout=0.5))
    listener = await RawListener.open(session, relay.url, "slow")  # never reads its control channel
    body = b"x" * 60_000

    async def post() -> int:
        async with session.post(f"{relay.http_url}/slow", data=body, headers=auth(relay, "slow")) as resp:
            return resp.status

    statuses = await asyncio.wait_for(asyncio.gather(*(post() for _ in range(200))), 3 * TIMEOUT)
    assert set(statuses) <= {502, 504}, statuses
    assert 502 in statuses  # the relay dropped the listener that stopped reading
    assert listener.ws is not None


async def test_a_rendezvous_the_listener_never_answers_is_closed_after_the_504(relay_factory, session):
    relay = await relay_factory(**slow_config())
    listener = await RawListener.open(session, relay.url, "slow")
    call = asyncio.ensure_future(
        session.post(f"{relay.http_url}/slow", data=io.BytesIO(b"y" * 100_000), headers=auth(relay, "slow"))
    )
    stub = (await listener.next_command())["request"]
    rendezvous = await session.ws_connect(stub["address"], max_msg_size=0)
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert resp.status == 504
    while True:  # the request and its body arrive first; then the relay closes the socket
        msg = await rendezvous.receive(TIMEOUT)
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            break
    assert msg.type is WSMsgType.CLOSE and msg.data == 1001


async def test_a_sender_that_stops_reading_does_not_hold_the_exchange(relay_factory, session):
    from tests.server.rawclient import RawStreamClient

    relay = await relay_factory(**slow_config())
    listener = await RawListener.open(session, relay.url, "slow")
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    token = token_for(relay.url, "slow")
    head = f"GET /slow HTTP/1.1\r\nHost: 127.0.0.1:{relay.port}\r\nServiceBusAuthorization: {token}\r\n\r\n"
    writer.write(head.encode())
    request = (await listener.next_command())["request"]
    rendezvous = await RawStreamClient.connect(request["address"])
    await rendezvous.send_text(
        json.dumps({"response": {"requestId": request["id"], "statusCode": 200, "body": True}})
    )

    async def endless():
        while True:
            yield b"z" * 65536

    streaming = asyncio.ensure_future(rendezvous.send_binary_stream(endless()))
    # The sender never reads: once its socket is full, the relay gives up after request_timeout.
    await wait_for_health(session, relay.http_url, "http_requests_in_flight", 0)
    streaming.cancel()
    rendezvous.close()
    writer.close()
    del reader
