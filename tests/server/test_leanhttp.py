"""Small relayed HTTP requests on the lean door (server/leanhttp.py): what it serves answers byte for byte as
aiohttp's path does, keeps connections alive, hands the rest to aiohttp, and releases what a request held."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from hyco.server import Limits, Relay
from hyco.server.door import Door
from tests.conftest import TIMEOUT
from tests.server.wire import RawListener, token_for, wait_for_health

GUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
#: A request on a connection that starts with this goes to aiohttp's path (the door hands over at once).
HEALTH = b"GET /$health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def lean_count(relay: Relay) -> int:
    door = relay.protocol_factory
    assert isinstance(door, Door)
    return door.lean_requests


def get(target: str, extra: str = "", method: str = "GET", body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}{length}\r\n".encode() + body


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One whole response, as sent (its body framed by Content-Length, chunked, or none)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
    if length is not None:
        return head + await asyncio.wait_for(reader.readexactly(int(length[1])), TIMEOUT)
    if b"\r\nTransfer-Encoding: chunked\r\n" not in head:
        assert status in (204, 304) or status < 200, head
        return head
    body = b""
    while True:
        size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), TIMEOUT)
        chunk = await asyncio.wait_for(reader.readexactly(int(size_line, 16) + 2), TIMEOUT)
        body += size_line + chunk
        if size_line == b"0\r\n":
            return head + body


def comparable(response: bytes) -> bytes:
    """A response without what differs per request (the date, tracking ids and timestamps)."""
    response = re.sub(rb"\r\nDate: [^\r]+", b"\r\nDate: -", response)
    response = re.sub(rb"Timestamp:[0-9T:-]+", b"Timestamp:-", response)
    return re.sub(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", b"<id>", response)


class Connection:
    """A raw HTTP connection to the relay, one request and response at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, relay: Relay) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", relay.port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def answer(
    listener: RawListener, session: aiohttp.ClientSession, how: dict[str, Any]
) -> dict[str, Any]:
    """Answer the next request as ``how`` says (``response``: the command's members, ``body``: bytes or
    None, ``rendezvous``: answer over the request rendezvous); returns the request the listener got."""
    request: dict[str, Any] = (await listener.next_command())["request"]
    if request["body"]:  # an inline body follows its request
        request["body_bytes"] = (await asyncio.wait_for(listener.ws.receive(), TIMEOUT)).data
    ws = await session.ws_connect(request["address"]) if how.get("rendezvous") else listener.ws
    body = how.get("body")
    await ws.send_str(
        json.dumps({"response": {"requestId": request["id"], "body": body is not None, **how["response"]}})
    )
    if body is not None:
        await ws.send_bytes(body)
    if ws is not listener.ws:
        await asyncio.wait_for(ws.receive(), TIMEOUT)  # the relay closes the rendezvous when it is done
        await ws.close()
    return request


async def both_paths(relay: Relay, session: aiohttp.ClientSession, request: bytes, how: dict[str, Any]):
    """``request`` served by the lean door and by aiohttp's path (behind a /$health on its connection):
    both answers, and the request the listener got each time."""
    listener = await RawListener.open(session, relay.url)
    answers, seen = [], []
    for prefix in (b"", HEALTH):
        before = lean_count(relay)
        connection = await Connection.open(relay)
        if prefix:
            await connection.send(prefix)
            assert b" 200 OK" in await read_response(connection.reader)
        await connection.send(request)
        got = asyncio.ensure_future(answer(listener, session, how)) if "response" in how else None
        answers.append(await read_response(connection.reader))
        if got is not None:
            request_seen = await asyncio.wait_for(got, TIMEOUT)
            for volatile in ("id", "address", "remoteEndpoint"):
                request_seen.pop(volatile)
            seen.append(request_seen)
        await connection.close()
        assert lean_count(relay) == before + (0 if prefix else 1)  # the lean door served the first only
    await listener.ws.close()
    return answers, seen


RESPONSES = {
    "bytes": {"response": {"statusCode": 200}, "body": b"hello"},
    "typed, listener's framing dropped": {
        "response": {
            "statusCode": 201,
            "responseHeaders": {"Content-Type": "text/x", "Content-Length": "99", "Connection": "close"},
        },
        "body": b"hi",
    },
    "no body, own reason": {
        "response": {"statusCode": 202, "statusDescription": "Taken Later"},
        "body": None,
    },
    "204 with a body": {"response": {"statusCode": 204}, "body": b"dropped"},
    "304": {"response": {"statusCode": 304, "responseHeaders": {"ETag": '"x"'}}, "body": None},
    "413 from the listener": {"response": {"statusCode": 413}, "body": b"too big for me"},
    "over the rendezvous": {"response": {"statusCode": 200}, "body": b"x" * 70_000, "rendezvous": True},
    "no such entity": {},
}


@pytest.mark.parametrize("how", list(RESPONSES.values()), ids=list(RESPONSES))
async def test_answers_are_byte_for_byte_aiohttps(relay: Relay, session, how):
    token = quote(token_for(relay.url, "echo"), safe="")
    target = f"/echo/a?x=1&sb-hc-token={token}" if "response" in how else "/nope/a"
    request = get(target, "X-App: v\r\nX-App: w\r\nVia: 1.0 proxy\r\n")
    answers, seen = await both_paths(relay, session, request, how)
    assert comparable(answers[0]) == comparable(answers[1])
    if seen:
        assert seen[0] == seen[1]  # the listener got the same request both ways
        assert seen[0]["requestTarget"] == "/echo/a?x=1"
        assert seen[0]["requestHeaders"]["X-App"] == "v,w"


async def test_a_post_body_and_a_refusal_are_byte_for_byte_aiohttps(relay: Relay, session):
    token = token_for(relay.url, "echo")
    body = bytes(range(256)) * 40
    request = get("/echo/up", f"ServiceBusAuthorization: {token}\r\n", method="POST", body=body)
    _, seen = await both_paths(relay, session, request, RESPONSES["bytes"])
    assert seen[0] == seen[1] and seen[0]["body_bytes"] == body
    answers, _ = await both_paths(relay, session, get(f"/echo/x?sb-hc-id={GUID}"), {})  # no token: 401
    assert comparable(answers[0]) == comparable(answers[1])
    assert answers[0].startswith(b"HTTP/1.1 401 ") and f"\r\nTrackingId: {GUID}\r\n".encode() in answers[0]
    assert b"\r\nWWW-Authenticate: SharedAccessSignature\r\n" in answers[0]


async def test_a_connection_stays_alive_across_requests_refusals_included(relay: Relay, session):
    listener = await RawListener.open(session, relay.url, "open")
    connection = await Connection.open(relay)
    for n in range(3):
        await connection.send(get(f"/open/{n}", body=b"x" * n))
        request = await answer(listener, session, {"response": {"statusCode": 200}, "body": f"r{n}".encode()})
        assert request["requestTarget"] == f"/open/{n}"
        assert (await read_response(connection.reader)).endswith(f"\r\n\r\nr{n}".encode())
        await connection.send(get(f"/nope/{n}"))
        assert b" 404 Endpoint does not exist." in await read_response(connection.reader)
    assert lean_count(relay) == 6
    await connection.close()


async def test_pipelined_requests_are_served_one_at_a_time_in_order(relay: Relay, session):
    listener = await RawListener.open(session, relay.url, "open")
    connection = await Connection.open(relay)
    await connection.send(get("/open/1", body=b"one") + get("/open/2") + get("/nope"))
    first = await answer(listener, session, {"response": {"statusCode": 200}, "body": b"a"})
    second = await answer(listener, session, {"response": {"statusCode": 200}, "body": b"b"})
    assert (first["requestTarget"], second["requestTarget"]) == ("/open/1", "/open/2")
    assert (await read_response(connection.reader)).endswith(b"\r\n\r\na")
    assert (await read_response(connection.reader)).endswith(b"\r\n\r\nb")
    assert b" 404 " in await read_response(connection.reader)
    assert lean_count(relay) == 3
    await connection.close()


async def test_a_connection_is_handed_to_aiohttp_at_the_start_of_a_request(relay: Relay, session):
    listener = await RawListener.open(session, relay.url, "open")
    connection = await Connection.open(relay)
    await connection.send(get("/open/lean"))
    await answer(listener, session, {"response": {"statusCode": 200}, "body": b"1"})
    assert (await read_response(connection.reader)).endswith(b"\r\n\r\n1")
    # Then a chunked body (not served here), and a small request after it: aiohttp has the connection now.
    await connection.send(
        b"POST /open/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        + get("/$health")
    )
    request = (await listener.next_command())["request"]  # the stub: the body travels over a rendezvous
    rendezvous = await session.ws_connect(request["address"])
    full = json.loads((await rendezvous.receive(TIMEOUT)).data)["request"]
    assert full["requestTarget"] == "/open/chunked"
    assert (await rendezvous.receive(TIMEOUT)).data == b"abc"
    await rendezvous.send_str(json.dumps({"response": {"requestId": request["id"], "statusCode": 200}}))
    assert b" 200 OK" in await read_response(connection.reader)
    assert b'"status": "ready"' in await read_response(connection.reader)
    assert lean_count(relay) == 1
    await rendezvous.close()
    await connection.close()


async def test_a_sender_that_hangs_up_mid_request_releases_its_slot(relay_factory, session):
    relay = await relay_factory(limits=Limits(max_pending=1))
    listener = await RawListener.open(session, relay.url, "open")
    for waiting_for in ("the body", "the listener"):
        connection = await Connection.open(relay)
        if waiting_for == "the body":
            await connection.send(get("/open/x", body=b"0123456789")[:-5])  # half the body
        else:
            await connection.send(get("/open/x"))
            await listener.next_command()  # delivered; never answered
        await wait_for_health(session, relay.http_url, "http_requests_in_flight", 1)
        await connection.close()
        await wait_for_health(session, relay.http_url, "http_requests_in_flight", 0)
    # The one slot is free: the next request reaches the listener.
    connection = await Connection.open(relay)
    await connection.send(get("/open/next"))
    request = await answer(listener, session, {"response": {"statusCode": 200}, "body": b"ok"})
    assert request["requestTarget"] == "/open/next"
    assert (await read_response(connection.reader)).endswith(b"\r\n\r\nok")
    await connection.close()


async def test_an_idle_kept_alive_connection_is_closed_after_idle_timeout(relay_factory, session):
    relay = await relay_factory(limits=Limits(idle_timeout=0.3))
    listener = await RawListener.open(session, relay.url, "open")
    connection = await Connection.open(relay)
    await connection.send(get("/open/x"))
    await answer(listener, session, {"response": {"statusCode": 200}, "body": b"ok"})
    assert (await read_response(connection.reader)).endswith(b"\r\n\r\nok")
    await connection.send(b"GET /open/slow HTTP/1.1\r\nHost: x\r\n")  # a next head that never ends
    assert await asyncio.wait_for(connection.reader.read(), TIMEOUT) == b""  # closed by the relay
    assert lean_count(relay) == 1
    await connection.close()


async def test_connection_close_is_honoured(relay: Relay, session):
    listener = await RawListener.open(session, relay.url, "open")
    connection = await Connection.open(relay)
    await connection.send(get("/open/x", "Connection: close\r\n"))
    await answer(listener, session, {"response": {"statusCode": 200}, "body": b"ok"})
    response = await asyncio.wait_for(connection.reader.read(), TIMEOUT)  # up to EOF
    assert b"\r\nConnection: close\r\n" in response and response.endswith(b"\r\n\r\nok")
    await connection.close()


async def test_lean_connections_give_their_source_slot_back(relay_factory, session):
    relay = await relay_factory(limits=Limits(max_connections_per_source=2))
    for _ in range(3):  # more connections, one after the other, than the limit
        connection = await Connection.open(relay)
        await connection.send(get("/nope"))
        assert b" 404 " in await read_response(connection.reader)
        await connection.close()
        await wait_for_health(session, relay.http_url, "http_requests_in_flight", 0)
    assert lean_count(relay) == 3


async def test_the_unread_body_of_a_refused_request_is_skipped(relay: Relay, session):
    listener = await RawListener.open(session, relay.url, "open")
    connection = await Connection.open(relay)
    refused = get("/nope", method="POST", body=b"GET /open/smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    await connection.send(refused[:-20])  # the 404 goes out before the body is all there
    assert b" 404 " in await read_response(connection.reader)
    await connection.send(refused[-20:] + get("/open/next"))
    request = await answer(listener, session, {"response": {"statusCode": 200}, "body": b"ok"})
    assert request["requestTarget"] == "/open/next"  # the body was not taken for a request
    assert (await read_response(connection.reader)).endswith(b"\r\n\r\nok")
    assert lean_count(relay) == 2
    await connection.close()


@pytest.mark.parametrize(
    "head",
    [
        b"GET /open/a HTTP/1.1\nHost: x\n\n",  # a relayed request, served lean when well-formed
        b"GET /$hc/open?sb-hc-action=connect HTTP/1.1\nHost: x\nUpgrade: websocket\n\n",  # an upgrade
    ],
    ids=["http", "upgrade"],
)
async def test_a_head_with_bare_line_feeds_gets_aiohttps_400_at_once(relay_factory, head):
    # The lean paths look for CRLF CRLF: without the hand-over such a head waited for idle_timeout.
    relay = await relay_factory(limits=Limits(idle_timeout=TIMEOUT * 4))
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(head)
    status_line = await asyncio.wait_for(reader.readline(), TIMEOUT)
    writer.close()
    assert status_line.split(b" ")[1] == b"400", status_line


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /open/a HTTP/1.1\r\nHost: x\r\nX-Name: caf\xe9\r\n\r\n",  # the lean path
        b"DELETE /open/a HTTP/1.0\r\nHost: x\r\nX-Name: caf\xe9\r\n\r\n",  # aiohttp's (HTTP/1.0)
        b"GET /$hc/open?sb-hc-action=connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"X-Name: caf\xe9\r\n\r\n",
    ],
    ids=["lean", "aiohttp", "connect"],
)
async def test_a_header_that_is_not_utf8_gets_400_and_no_error_is_logged(
    relay: Relay, session, caplog, request_head
):
    # Such a value reached the listener's command as a lone surrogate: a 500 and a traceback per request.
    listener = await RawListener.open(session, relay.url, "open")
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    with caplog.at_level(logging.ERROR):
        writer.write(request_head)
        status_line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        rest = await asyncio.wait_for(reader.read(4096), TIMEOUT)
    writer.close()
    assert status_line.split(b" ")[1] == b"400", status_line
    assert b"X-Name" in rest
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    await listener.ws.close()
