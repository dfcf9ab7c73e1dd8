"""The SDK's HTTP request handler end to end: plain aiohttp senders -> in-process relay -> SDK listener."""

from __future__ import annotations

import asyncio
import hashlib
import io
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

import hyco
from hyco import HybridConnectionListener, RelayedHttpRequest, RelayedHttpResponse, TokenProvider
from hyco.client import _httpserve
from hyco.server import Relay
from tests.client.conftest import address
from tests.client.test_tls_proxy import proxy, tls_relay  # noqa: F401 - fixtures
from tests.conftest import TIMEOUT


def pattern(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(b"%d" % seed).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


async def chunks_of(data: bytes, size: int = 50_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def sender_get(relay: Relay, tp: TokenProvider, method: str, suffix: str, **kwargs):
    """One request through the relay with hyco.request; returns (status, reason, headers, body)."""
    if isinstance(kwargs.get("data"), bytes):
        kwargs["data"] = io.BytesIO(kwargs["data"])  # aiohttp warns about large raw bytes bodies
    async with asyncio.timeout(3 * TIMEOUT):
        async with hyco.request(method, f"{relay.http_url}/echo{suffix}", token_provider=tp, **kwargs) as r:
            return r.status, r.reason, r.headers, await r.read()


@pytest.fixture
async def serving(relay: Relay, tp: TokenProvider):
    """A listener on 'echo' whose handler is set by each test."""
    async with HybridConnectionListener(address(relay), tp) as listener:
        yield listener


async def test_small_get_reaches_the_handler_with_everything_the_sender_sent(relay, tp, serving):
    seen: list[RelayedHttpRequest] = []

    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        seen.append(request)
        assert await request.read() == b""
        return RelayedHttpResponse(
            201, b"made", reason="Made It", headers={"X-Reply": "r", "Content-Type": "text/plain"}
        )

    serving.request_handler = handler  # settable after open
    status, reason, headers, body = await sender_get(
        relay, tp, "GET", "/a/b%20c?x=1&y", headers={"X-App": "v"}
    )
    assert (status, reason, body) == (201, "Made It", b"made")
    assert headers["X-Reply"] == "r"
    assert headers["Via"].startswith("1.1 ")
    (request,) = seen
    assert request.method == "GET"
    assert request.target == "/echo/a/b%20c?x=1&y"
    assert (request.path, request.relative_path, request.query) == ("/echo/a/b%20c", "/a/b%20c", "x=1&y")
    assert request.hybrid_connection_path == "echo"
    assert request.url == f"{relay.http_url}/echo/a/b%20c?x=1&y"
    assert request.headers["x-app"] == "v"
    assert "ServiceBusAuthorization" not in request.headers
    assert request.remote_endpoint is not None and request.remote_endpoint.address == "127.0.0.1"
    assert not request.has_body


@pytest.mark.parametrize(
    ("up", "down"),
    [
        (0, 0),
        (1000, 1000),
        (65536, 65536),  # the largest inline body, both ways
        (65537, 65537),  # the smallest rendezvous body, both ways
        (200 * 1024, 10),
        (10, 200 * 1024),
        (3 * 1024 * 1024, 5 * 1024 * 1024),
    ],
)
async def test_bodies_of_every_size_both_ways(relay, tp, serving, up, down):
    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        digest = hashlib.sha256()
        async for chunk in request.body:
            digest.update(chunk)
        return RelayedHttpResponse(
            200,
            pattern(down, 7),
            headers={"X-Up-Sha": digest.hexdigest(), "X-Up-Len": str(request.body.bytes_read)},
        )

    serving.request_handler = handler
    data = pattern(up, 3)
    status, _, headers, body = await sender_get(relay, tp, "POST", "/sized", data=data)
    assert status == 200
    assert headers["X-Up-Len"] == str(up)
    assert headers["X-Up-Sha"] == hashlib.sha256(data).hexdigest()
    assert body == pattern(down, 7)


async def test_chunked_upload_and_streamed_download(relay, tp, serving):
    size = 6 * 1024 * 1024

    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        digest = hashlib.sha256()
        async for chunk in request.body:
            digest.update(chunk)

        async def produce() -> AsyncIterator[bytes]:
            yield digest.hexdigest().encode()
            async for chunk in chunks_of(pattern(size, 1), 100_000):
                yield chunk

        return RelayedHttpResponse(200, produce(), headers={"Content-Type": "application/octet-stream"})

    serving.request_handler = handler
    data = pattern(size, 2)
    status, _, _, body = await sender_get(relay, tp, "PUT", "/stream", data=chunks_of(data))
    assert status == 200
    assert body[:64] == hashlib.sha256(data).hexdigest().encode()
    assert body[64:] == pattern(size, 1)


async def test_handler_that_ignores_a_large_upload_still_answers(relay, tp, serving):
    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        return RelayedHttpResponse(413, b"too big for me" * 10_000)

    serving.request_handler = handler
    status, _, _, body = await sender_get(relay, tp, "POST", "/ignored", data=pattern(8 * 1024 * 1024))
    assert status == 413
    assert body == b"too big for me" * 10_000


async def test_slow_small_response_switches_to_the_rendezvous(relay, tp, serving, monkeypatch):
    monkeypatch.setattr(_httpserve, "INLINE_FLUSH_TIMEOUT", 0.1)

    dialed = asyncio.Event()

    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        async def slow() -> AsyncIterator[bytes]:
            yield b"first "
            await dialed.wait()  # the rest comes only once the listener has switched to the rendezvous
            yield b"second"

        return RelayedHttpResponse(200, slow())

    serving.request_handler = handler
    dials: list[str] = []
    original = _httpserve.RawWebSocket.connect

    async def counting(url, **kwargs):
        dials.append(url)
        dialed.set()
        return await original(url, **kwargs)

    monkeypatch.setattr(_httpserve.RawWebSocket, "connect", counting)
    assert (await sender_get(relay, tp, "GET", "/slow"))[3] == b"first second"
    assert len(dials) == 1 and "sb-hc-action=request" in dials[0]


async def test_many_concurrent_requests_on_one_listener(relay, tp, serving):
    count = 20
    arrived = 0
    all_in = asyncio.Event()

    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), TIMEOUT)  # every request is in flight at once
        size = int(request.relative_path.strip("/"))
        body = await request.read()
        return RelayedHttpResponse(200, body[::-1] + pattern(size, size))

    serving.request_handler = handler
    sizes = [i * 9000 for i in range(count)]  # inline and rendezvous mixed

    async def one(size: int) -> None:
        data = pattern(size % 70_000, size)
        status, _, _, body = await sender_get(relay, tp, "POST", f"/{size}", data=data)
        assert status == 200
        assert body == data[::-1] + pattern(size, size)

    await asyncio.gather(*(one(size) for size in sizes))


async def test_handler_error_is_500_and_no_handler_is_501(relay, tp, serving):
    status, reason, headers, _ = await sender_get(relay, tp, "GET", "/")
    assert status == 501
    assert reason.startswith("The listener RequestHandler has not been configured.")
    assert "Via" in headers

    async def broken(request: RelayedHttpRequest) -> RelayedHttpResponse:
        raise RuntimeError("boom")

    serving.request_handler = broken
    status, reason, _, _ = await sender_get(relay, tp, "POST", "/", data=b"x" * 100_000)
    assert status == 500
    assert reason.startswith("The listener RequestHandler threw an exception.")

    async def wrong_type(request: RelayedHttpRequest) -> RelayedHttpResponse:
        return "not a response"  # type: ignore[return-value]

    serving.request_handler = wrong_type
    assert (await sender_get(relay, tp, "GET", "/"))[0] == 500

    async def body_fails(request: RelayedHttpRequest) -> RelayedHttpResponse:
        async def gen() -> AsyncIterator[bytes]:
            yield b"partial"
            raise RuntimeError("body boom")

        return RelayedHttpResponse(200, gen())

    serving.request_handler = body_fails
    assert (await sender_get(relay, tp, "GET", "/"))[0] == 500  # failed before anything was sent

    # The listener keeps serving after all that.
    async def fine(request: RelayedHttpRequest) -> RelayedHttpResponse:
        return RelayedHttpResponse(200, "ok")

    serving.request_handler = fine
    assert (await sender_get(relay, tp, "GET", "/"))[3] == b"ok"


@pytest.mark.parametrize(("status", "reason"), [(418, "Tea"), (502, "Bad Gateway From App"), (204, None)])
async def test_status_and_reason_reach_the_sender_unchanged(relay, tp, serving, status, reason):
    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        return RelayedHttpResponse(status, b"ignored for 204" if status == 204 else b"x", reason=reason)

    serving.request_handler = handler
    got_status, got_reason, _, body = await sender_get(relay, tp, "GET", "/")
    assert got_status == status
    assert got_reason == (reason or "No Content")
    assert body == (b"" if status == 204 else b"x")


async def test_head_gets_headers_but_no_body(relay, tp, serving):
    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        async def big() -> AsyncIterator[bytes]:
            yield pattern(200_000)

        return RelayedHttpResponse(200, big(), headers={"X-Method": request.method})

    serving.request_handler = handler
    status, _, headers, body = await sender_get(relay, tp, "HEAD", "/")
    assert (status, headers["X-Method"], body) == (200, "HEAD", b"")


async def test_plain_aiohttp_senders_with_header_or_query_token_and_no_auth(relay, tp):
    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        return RelayedHttpResponse(200, f"{request.method} {request.relative_path} {request.query}")

    async with HybridConnectionListener(address(relay), tp, request_handler=handler), \
            HybridConnectionListener(address(relay, "open"), tp, request_handler=handler):  # fmt: skip
        token = (await hyco.client.token_headers(f"{relay.http_url}/echo", tp))["ServiceBusAuthorization"]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
            async with session.get(
                f"{relay.http_url}/echo/h?a=1", headers={"ServiceBusAuthorization": token}
            ) as r:
                assert (r.status, await r.text()) == (200, "GET /h a=1")
            async with session.delete(f"{relay.http_url}/echo/q", params={"sb-hc-token": token}) as r:
                assert (r.status, await r.text()) == (200, "DELETE /q ")  # sb-hc-token is stripped
            async with session.get(f"{relay.http_url}/echo/none") as r:
                assert r.status == 401
            async with session.patch(f"{relay.http_url}/open/x", data=b"hi") as r:
                assert (r.status, await r.text()) == (200, "PATCH /x ")
        # hyco.request also takes a hybrid connection address (here ws://, i.e. plain http)
        async with hyco.request("PUT", f"{relay.url}/echo", token_provider=tp, data=b"z") as r:
            assert (r.status, await r.text()) == (200, "PUT / ")
    assert hyco.client.http_url(f"{relay.url}/echo", "/a?b=1") == f"{relay.http_url}/echo/a?b=1"


async def test_hyco_request_yields_its_own_response_type(relay, tp, serving):
    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        if request.relative_path == "/json":
            body = b'{"caf\xc3\xa9": [1, 2]}'
            return RelayedHttpResponse(200, body, headers={"Content-Type": "application/json"})
        if request.relative_path == "/latin":
            return RelayedHttpResponse(
                200, "café".encode("latin-1"), headers={"Content-Type": "text/x; charset=latin-1"}
            )
        return RelayedHttpResponse(200, chunks_of(pattern(300_000)), headers={"X-Many": "a, b"})

    serving.request_handler = handler
    url = f"{relay.http_url}/echo"
    async with asyncio.timeout(3 * TIMEOUT):
        async with hyco.request("GET", url + "/json", token_provider=tp) as r:
            assert isinstance(r, hyco.client.HttpResponse)  # no HTTP library's type in the SDK's API
            assert (r.status, r.reason) == (200, "OK")
            assert r.headers["content-type"] == r.headers["Content-Type"] == "application/json"
            with pytest.raises(TypeError):
                r.headers["X-New"] = "read-only"  # type: ignore[index]
            assert await r.json() == {"café": [1, 2]}
        async with hyco.request("GET", url + "/latin", token_provider=tp) as r:
            assert await r.text() == "café"  # the Content-Type charset, not UTF-8
        async with hyco.request("GET", url + "/big", token_provider=tp) as r:
            assert r.headers["X-Many"] == "a, b"
            got = bytearray()
            async for chunk in r:  # the body arrives while it is read
                got += chunk
            assert bytes(got) == pattern(300_000)
        async with hyco.request("GET", url + "/big", token_provider=tp) as r:
            first = await r.body.read_chunk()
            assert first and pattern(300_000).startswith(first)
            r.close()
            assert r.closed
            with pytest.raises(hyco.StreamClosed):
                await r.read()
        async with hyco.request("GET", url + "/big", token_provider=tp) as r:
            with pytest.raises(hyco.InvalidInput, match="larger than 1000"):
                await r.read(limit=1000)
        async with hyco.request("GET", url + "/big", token_provider=tp) as kept:
            pass
        with pytest.raises(hyco.StreamClosed):  # released when the block ended
            await kept.read()


async def test_hyco_request_translates_network_errors(relay, tp):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(hyco.ConnectionLost, match="could not reach the relay"):
        async with hyco.request("GET", f"http://127.0.0.1:{port}/echo", token_provider=tp):
            pass


async def test_response_header_pairs_are_joined_and_bad_values_refused():
    response = RelayedHttpResponse(200, headers=[("X-A", "1"), ("x-a", "2"), ("X-B", "3")])
    assert response.headers == {"X-A": "1, 2", "X-B": "3"}
    with pytest.raises(hyco.InvalidInput):
        RelayedHttpResponse(1000)
    with pytest.raises(hyco.InvalidInput):
        RelayedHttpResponse(200, headers={"X": "a\r\nb"})


async def test_request_body_limit_and_discard():
    body = hyco.client.HttpBody(b"abcdef")
    with pytest.raises(hyco.InvalidInput):
        await body.read(limit=3)
    body = hyco.client.HttpBody(b"abcdef")
    await body.discard()
    assert body.at_eof
    with pytest.raises(hyco.StreamClosed):
        await body.read()


async def test_large_bodies_over_tls_through_a_connect_proxy(tls_relay, tp, proxy):  # noqa: F811
    relay, ca = tls_relay

    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        data = await request.read()
        return RelayedHttpResponse(200, data[::-1] + pattern(300_000))

    sb = f"sb://localhost:{relay.port}/echo"
    async with HybridConnectionListener(sb, tp, ca_file=str(ca), proxy=proxy.url, request_handler=handler):
        before = len(proxy.tunnels)
        data = pattern(200_000, 5)  # stub + request rendezvous, and a response rendezvous
        async with asyncio.timeout(3 * TIMEOUT):
            async with hyco.request(
                "POST", sb, token_provider=tp, data=io.BytesIO(data), ca_file=str(ca)
            ) as r:
                assert r.status == 200
                assert await r.read() == data[::-1] + pattern(300_000)
        assert len(proxy.tunnels) > before  # the rendezvous went through the proxy, over TLS
