"""The .NET SDK (Microsoft.Azure.Relay 3.0.1) replayed on the wire against a real relay.

The SDK cannot run here (it needs NuGet), so these tests send what its sources say it sends, byte for byte
where it matters, and assert what it needs back. They are not a substitute for running it. Source lines are
in Azure/azure-relay-dotnet at e7f6354 under ``src/Microsoft.Azure.Relay/``; each test names the ones it
replays. The SDK only dials ``wss://`` (HybridConnectionUtility.cs:28-45), so every test runs over TLS with
the minted CA.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import unquote_plus, urlsplit

import aiohttp
import pytest

from hyco.protocol.frames import Frame, Opcode
from hyco.server import Limits, Relay, serve
from hyco.testing import FakeClock
from tests.conftest import KEY, KEY_NAME, TIMEOUT, test_config
from tests.interop.dotnetwire import (
    DOTNET_VALID_CLOSE_CODES,
    RELAY_USER_AGENT,
    DotnetSocket,
    HandshakeRefused,
    dotnet_exception,
    dotnet_token,
    tracking_id,
    url_encode,
)


@pytest.fixture
async def relay(
    relay_factory: Callable[..., Awaitable[Relay]], minted_ca: tuple[ssl.SSLContext, Path]
) -> Relay:
    server_ctx, _ = minted_ca
    return await relay_factory(ssl_context=server_ctx)


@pytest.fixture
def tls(minted_ca: tuple[ssl.SSLContext, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(minted_ca[1]))


@pytest.fixture
async def http(tls: ssl.SSLContext) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as session:
        yield session


def host_of(relay: Relay) -> str:
    return urlsplit(relay.url).netloc


def sdk_uri(relay: Relay, path: str, action: str, ident: str, query: str = "") -> str:
    """``HybridConnectionUtility.BuildUri`` (HybridConnectionUtility.cs:28-45, 108-126): ``wss``, host and
    port of the ``sb://`` address, ``/$hc`` + its path, its query, then ``sb-hc-action`` and ``sb-hc-id``."""
    prefix = f"{query}&" if query else ""
    return f"wss://{host_of(relay)}/$hc/{path}?{prefix}sb-hc-action={action}&sb-hc-id={ident}"


def sdk_headers(path: str, key_name: str = KEY_NAME, key: str = KEY, **token: int) -> list[tuple[str, str]]:
    """The headers a listener's or sender's dial adds (HybridConnectionListener.cs:746-749,
    HybridConnectionClient.cs:200-209): ``Relay-User-Agent``, then ``ServiceBusAuthorization``."""
    sas = dotnet_token("127.0.0.1", path, key_name, key, **token)
    return [("Relay-User-Agent", RELAY_USER_AGENT), ("ServiceBusAuthorization", sas)]


async def open_listener(relay: Relay, tls: ssl.SSLContext, path: str = "echo", **token: int) -> DotnetSocket:
    return await DotnetSocket.connect(
        sdk_uri(relay, path, "listen", tracking_id()), sdk_headers(path, **token), ssl_context=tls
    )


async def next_command(listener: DotnetSocket) -> dict:
    message = await listener.receive()
    assert message.opcode is Opcode.TEXT, message
    # HybridConnectionListener.cs:21, 618, 849-877: a control message is read into a 64 KiB buffer.
    assert len(message.payload) <= 64 * 1024
    return json.loads(message.payload)


def filtered_query(query: str) -> str:
    """``FilterHybridConnectionQueryParams`` (HybridConnectionUtility.cs:51-103): drop pairs whose decoded key
    starts with ``sb-hc-`` (any case); keep the rest as sent."""
    kept = []
    for pair in query.split("&"):
        key, sep, _ = pair.partition("=")
        if not (sep and unquote_plus(key).lower().startswith("sb-hc-")):
            kept.append(pair)
    return "&".join(kept)


async def test_listen_dial_is_upgraded_the_way_the_sdk_checks_it_and_closes_cleanly(
    relay: Relay, tls: ssl.SSLContext
) -> None:
    """Listener open, reconnect and close.

    HybridConnectionListener.cs:729-763 dials ``/$hc/{path}?{address query}&sb-hc-action=listen&sb-hc-id=``
    with ``Relay-User-Agent`` and a 60-minute token whose audience is ``http://host/path/``; the bundled
    client checks the 101 (NetStandard20/WebSocketHandle.Managed.cs:605-700). A reconnect reuses the same id
    without its ``_G`` suffix (lines 751-752) while the relay may still hold the old channel. ``CloseAsync``
    sends Close 1000 ``Normal Closure`` and waits for the relay's Close (lines 658-686, 854-862), which must
    carry a code the client accepts (ManagedWebSocket.cs:844-877).
    """
    ident = tracking_id()
    uri = sdk_uri(relay, "echo", "listen", ident, query="tenant=a%2Fb")
    first = await DotnetSocket.connect(uri, sdk_headers("echo"), ssl_context=tls)
    assert first.subprotocol is None
    second = await DotnetSocket.connect(uri, sdk_headers("echo"), ssl_context=tls)
    assert [listener.listener_id for listener in relay.connected_listeners()] == [ident, ident]
    for listener in (first, second):
        await listener.close_output(1000, "Normal Closure")
        answer = await listener.receive()
        assert answer.opcode is Opcode.CLOSE
        assert answer.code in DOTNET_VALID_CLOSE_CODES
        listener.abort()
    assert relay.connected_listeners() == []


async def test_sender_and_listener_accept_with_suffix_query_headers_and_subprotocol(
    relay: Relay, tls: ssl.SSLContext
) -> None:
    """Connect, accept, data both ways, half-close.

    Sender: HybridConnectionClient.cs:186-234 (token audience = address with its path, custom headers after
    the SDK's, ``sb-hc-*`` after the address query). Listener: ``accept`` parsed as ListenerCommand.cs:97-139
    (``connectHeaders`` a string map, ``remoteEndpoint`` optional); the request URL derived from the
    rendezvous address (HybridConnectionListener.cs:526-537); the first offered sub-protocol chosen
    (RelayedHttpListenerContext.cs:139-154) and asked for on the rendezvous dial, which carries no token
    (lines 43-83, 130-137). Data: one message per ``Write`` (WebSocketStream.cs:160-180); ``Shutdown`` sends
    Close 1000 ``Shutdown`` and keeps reading, ``CloseAsync`` Close 1000 ``CloseAsync`` (lines 72-80,
    143-151).
    """
    listener = await open_listener(relay, tls)
    sender_id = tracking_id()
    sender_task = asyncio.ensure_future(
        DotnetSocket.connect(
            sdk_uri(relay, "echo/sub/x", "connect", sender_id, query="a=1&b=%2B&flag"),
            [*sdk_headers("echo/sub/x"), ("X-Custom", "v1")],
            subprotocols=("chat", "superchat"),
            ssl_context=tls,
        )
    )
    accept = (await next_command(listener))["accept"]
    assert set(accept) <= {"address", "id", "connectHeaders", "remoteEndpoint"}
    assert isinstance(accept["id"], str) and accept["id"]
    headers = accept["connectHeaders"]
    assert all(isinstance(value, str) for value in headers.values())
    lowered = {name.lower(): value for name, value in headers.items()}
    assert lowered["x-custom"] == "v1"
    assert lowered["sec-websocket-protocol"] == "chat, superchat"
    assert "serviceauthorization" not in lowered and "servicebusauthorization" not in lowered
    endpoint = accept["remoteEndpoint"]
    assert endpoint["address"] == "127.0.0.1" and isinstance(endpoint["port"], int)
    rendezvous = urlsplit(accept["address"])
    assert (rendezvous.scheme, rendezvous.netloc) == ("wss", host_of(relay))
    # What the listener's RelayedHttpListenerRequest.Url shows: path minus "$hc/", query minus sb-hc-*.
    assert unquote_plus(rendezvous.path).removeprefix("/$hc") == "/echo/sub/x"
    assert filtered_query(rendezvous.query) == "a=1&b=%2B&flag"

    first_offer = lowered["sec-websocket-protocol"].split(",")[0]
    peer = await DotnetSocket.connect(accept["address"], subprotocols=(first_offer,), ssl_context=tls)
    sender = await asyncio.wait_for(sender_task, TIMEOUT)
    assert (peer.subprotocol, sender.subprotocol) == ("chat", "chat")

    upload = bytes(range(256)) * 400
    await sender.send_binary(upload)
    got = await peer.receive()
    assert (got.opcode, got.payload) == (Opcode.BINARY, upload)
    await peer.send_text("héllo")
    got = await sender.receive()
    assert (got.opcode, got.payload) == (Opcode.TEXT, "héllo".encode())

    await sender.close_output(1000, "Shutdown")
    got = await peer.receive()
    assert (got.opcode, got.code, got.reason) == (Opcode.CLOSE, 1000, "Shutdown")
    await peer.send_binary(b"after shutdown")  # the other direction still flows
    got = await sender.receive()
    assert (got.opcode, got.payload) == (Opcode.BINARY, b"after shutdown")
    await peer.close_output(1000, "CloseAsync")
    got = await sender.receive()
    assert (got.opcode, got.code, got.reason) == (Opcode.CLOSE, 1000, "CloseAsync")
    for socket in (sender, peer, listener):
        socket.abort()


ACCEPT_HANDLER_THREW = (
    "The Listener's custom AcceptHandler threw an exception. See Listener logs for details. "
    "TrackingId: 0f0e0d0c-0b0a-0908-0706-050403020100_G1."
)


@pytest.mark.parametrize(
    ("status", "description"),
    [(401, "Status Description from test"), (400, "Rejected by user code"), (502, ACCEPT_HANDLER_THREW)],
)
async def test_reject_reaches_the_sender_with_its_status_and_description(
    relay: Relay, tls: ssl.SSLContext, status: int, description: str
) -> None:
    """Reject.

    RelayedHttpListenerContext.cs:85-128 appends ``&sb-hc-statusCode={code}&sb-hc-statusDescription=`` +
    ``WebUtility.UrlEncode(description)`` to the accept address and dials it, expecting 410 Gone. Defaults:
    400 ``Rejected by user code``; a throwing AcceptHandler gives 502 with Strings.resx
    ``AcceptHandlerException`` (HybridConnectionListener.cs:504-510). The live-service tests expect the sender
    to see exactly that status and description (test/.../WebSocketTests.cs).
    """
    listener = await open_listener(relay, tls)
    sender_task = asyncio.ensure_future(
        DotnetSocket.connect(
            sdk_uri(relay, "echo", "connect", tracking_id()), sdk_headers("echo"), ssl_context=tls
        )
    )
    address = (await next_command(listener))["accept"]["address"]
    reject = f"{address}&sb-hc-statusCode={status}&sb-hc-statusDescription={url_encode(description)}"
    with pytest.raises(HandshakeRefused) as dial:
        await DotnetSocket.connect(reject, ssl_context=tls)
    assert dial.value.status == 410
    with pytest.raises(HandshakeRefused) as refused:
        await asyncio.wait_for(sender_task, TIMEOUT)
    assert (refused.value.status, refused.value.reason) == (status, description)
    listener.abort()


@pytest.mark.parametrize(
    ("action", "path", "key", "status", "exception", "text"),
    [
        ("listen", "nope", KEY, 404, "EndpointNotFoundException", "Endpoint does not exist"),
        ("connect", "nope", KEY, 404, "EndpointNotFoundException", "Endpoint does not exist"),
        ("connect", "open", KEY, 404, "EndpointNotFoundException", "There are no listeners connected"),
        ("listen", "echo", "BAD", 401, "AuthorizationFailedException", "token has an invalid signature"),
    ],
    ids=["listen-unknown", "connect-unknown", "connect-no-listener", "listen-bad-key"],
)
async def test_each_refusal_becomes_the_sdk_exception_naming_entity_and_tracking_id(
    relay: Relay,
    tls: ssl.SSLContext,
    action: str,
    path: str,
    key: str,
    status: int,
    exception: str,
    text: str,
) -> None:
    """Refusals as the SDK reports them.

    The bundled client keeps the status and the reason phrase (NetStandard20/WebSocketHandle.Managed.cs:
    620-649); WebSocketExceptionHelper.cs:72-96 picks the exception (a listener stops reconnecting only on
    EndpointNotFound, HybridConnectionListener.cs:951-959) and TrackingContext.cs:134-148 appends the
    client's tracking id and address only if the phrase names no ``TrackingId``. The SDK's tests against the
    live service (test/.../RunTimeTests.cs: ClientNonExistantHybridConnectionTest,
    ListenerNonExistantHybridConnectionTest, ListenerAuthenticationFailureTest) expect the text and the
    entity path in the message; Azure's phrase echoes the client's tracking id and
    ``SystemTracker:sb://{namespace}/{path}``.
    """
    ident = tracking_id()
    with pytest.raises(HandshakeRefused) as refused:
        await DotnetSocket.connect(
            sdk_uri(relay, path, action, ident), sdk_headers(path, key=key), ssl_context=tls
        )
    assert refused.value.status == status
    seen = dotnet_exception(refused.value, ident, f"sb://{host_of(relay)}/{path}")
    assert seen.type == exception
    assert text in seen.message
    assert path in seen.message
    assert ident in seen.message


async def test_a_renewal_sent_at_expiry_keeps_the_channel(minted_ca: tuple[ssl.SSLContext, Path]) -> None:
    """renewToken timing.

    TokenRenewer.cs:89-104 schedules the renewal at the token's expiry (``ExpiresAtUtc - now``, at least 4
    minutes, RelayConstants.cs ``ClientMinimumTokenRefreshInterval``), so with the default 60-minute token
    (TokenProvider.cs:128) ``{"renewToken":{"token":...}}`` (ListenerCommand.cs:44-54, 149-154) arrives just
    after the old token expired. The channel must survive that and keep routing senders past the old
    token's deadline.
    """
    server_ctx, ca = minted_ca
    tls = ssl.create_default_context(cafile=str(ca))
    clock = FakeClock(start=time.time())
    async with serve(
        test_config(limits=Limits(token_grace=300)), ssl_context=server_ctx, clock=clock
    ) as relay:
        start = int(clock.time())
        listener = await open_listener(relay, tls, expiry=start + 600)
        await asyncio.wait_for(clock.wait_for_sleepers(), TIMEOUT)
        clock.advance(601)  # the SDK's timer fires at expiry; the relay is inside its grace window
        renewed = dotnet_token("127.0.0.1", "echo", KEY_NAME, KEY, expiry=int(clock.time()) + 3600)
        await listener.send_text(json.dumps({"renewToken": {"token": renewed}}, separators=(",", ":")))
        # The relay reads in order: the answer to this ping means the renewal was handled.
        await listener.send_frame(Opcode.PING, b"")
        assert (await listener.frame()).opcode is Opcode.PONG
        await asyncio.wait_for(clock.wait_for_sleepers(), TIMEOUT)
        clock.advance(300)  # past the old token's expiry + grace
        await asyncio.wait_for(clock.wait_for_sleepers(), TIMEOUT)
        assert len(relay.connected_listeners()) == 1
        sender_task = asyncio.ensure_future(
            DotnetSocket.connect(
                sdk_uri(relay, "echo", "connect", tracking_id()),
                sdk_headers("echo", expiry=int(clock.time()) + 3600),
                ssl_context=tls,
            )
        )
        address = (await next_command(listener))["accept"]["address"]
        peer = await DotnetSocket.connect(address, ssl_context=tls)
        sender = await asyncio.wait_for(sender_task, TIMEOUT)
        for socket in (sender, peer, listener):
            socket.abort()


def dotnet_response(
    request_id: str, status: int, description: str, headers: dict[str, str], body: bool
) -> str:
    """A ``response`` as DataContractJsonSerializer writes ListenerCommand.ResponseCommand
    (ListenerCommand.cs:246-277): members without ``Order`` in alphabetical order, ``responseHeaders`` left
    out when empty, ``/`` escaped as ``\\/``."""
    response: dict[str, object] = {"body": body, "requestId": request_id}
    if headers:
        response["responseHeaders"] = headers
    response |= {"statusCode": status, "statusDescription": description}
    return json.dumps({"response": response}, separators=(",", ":"), ensure_ascii=False).replace("/", "\\/")


async def test_inline_requests_answered_on_the_control_channel(
    relay: Relay, tls: ssl.SSLContext, http: aiohttp.ClientSession
) -> None:
    """HTTP over the control channel.

    ListenerCommand.cs:178-229 reads ``request``; ``body`` present means inline
    (HybridHttpConnection.cs:41-45) and ``body: true`` means the next message is the body and must be binary
    (lines 108-134); ``requestTarget`` is resolved against the listener address (line 179). A response that
    fits 64 KiB and is closed within 2 s goes back on the control channel (lines 423-453, 497-523): the JSON,
    then for a body one binary message sent from a seekable buffer, i.e. one final frame
    (HybridConnectionListener.cs:688-711, Common/WebSocketUtility.cs:175-201); no binary message when
    ``body`` is false.
    """
    listener = await open_listener(relay, tls)
    token = {"ServiceBusAuthorization": dotnet_token("127.0.0.1", "echo", KEY_NAME, KEY)}
    call = asyncio.ensure_future(
        http.post(f"{relay.http_url}/echo/api/items?x=1", data=b"ping", headers=token)
    )
    request = (await next_command(listener))["request"]
    assert request["requestTarget"] == "/echo/api/items?x=1"
    assert request["method"] == "POST" and request["body"] is True
    assert isinstance(request["remoteEndpoint"]["port"], int)
    assert all(isinstance(value, str) for value in request["requestHeaders"].values())
    body = await listener.receive()
    assert (body.opcode, body.payload) == (Opcode.BINARY, b"ping")
    headers = {"Content-Type": "text/plain; charset=utf-8", "X-Path": "/a/b"}
    await listener.send_text(dotnet_response(request["id"], 201, "Created", headers, True))
    await listener.send_binary(b"pong")
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert (resp.status, resp.reason) == (201, "Created")
        assert resp.headers["X-Path"] == "/a/b"
        assert await resp.read() == b"pong"

    call = asyncio.ensure_future(http.delete(f"{relay.http_url}/echo/api/items/1", headers=token))
    request = (await next_command(listener))["request"]
    assert request["body"] is False
    await listener.send_text(dotnet_response(request["id"], 204, "No Content", {}, False))
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert (resp.status, resp.reason) == (204, "No Content")
    listener.abort()


async def test_an_inline_request_answered_over_its_rendezvous(
    relay: Relay, tls: ssl.SSLContext, http: aiohttp.ClientSession
) -> None:
    """A response that outgrows 64 KiB or is not closed within 2 s (HybridHttpConnection.cs:303, 423-465,
    553-567) goes over a rendezvous the listener dials to the request's ``address`` (lines 262-272): the
    response JSON with ``body: true``, each write as a non-final frame, an empty final frame on close
    (lines 497-551), then Close 1000 ``NormalClosure`` (lines 274-285). The listener reads nothing from that
    socket but the relay's Close."""
    listener = await open_listener(relay, tls)
    token = {"ServiceBusAuthorization": dotnet_token("127.0.0.1", "echo", KEY_NAME, KEY)}
    call = asyncio.ensure_future(http.get(f"{relay.http_url}/echo/report", headers=token))
    request = (await next_command(listener))["request"]
    rendezvous = await DotnetSocket.connect(request["address"], ssl_context=tls)
    chunks = [bytes([n]) * 40_000 for n in range(5)]
    await rendezvous.send_text(dotnet_response(request["id"], 200, "OK", {"Content-Type": "a/b"}, True))
    await rendezvous.send_streamed(chunks)
    await rendezvous.close_output(1000, "NormalClosure")
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert resp.status == 200
        assert await resp.read() == b"".join(chunks)
    answer = await rendezvous.receive()
    assert answer.opcode is Opcode.CLOSE and answer.code in DOTNET_VALID_CLOSE_CODES
    for socket in (rendezvous, listener):
        socket.abort()


async def test_a_large_upload_arrives_by_stub_and_rendezvous(
    relay: Relay, tls: ssl.SSLContext, http: aiohttp.ClientSession
) -> None:
    """The stub: a ``request`` whose ``body`` member is absent (``bool?`` without a value,
    ListenerCommand.cs:199-200) makes the SDK dial ``address`` and read the full ``request`` from it as a text
    message, then the body as one binary message (HybridHttpConnection.cs:88-106, 136-174); the response goes
    back on that socket (lines 225-254, 376-401), which it then closes (lines 274-285)."""
    listener = await open_listener(relay, tls)
    upload = bytes(range(256)) * 800  # 200 KiB: over the 64 KiB inline limit
    token = {"ServiceBusAuthorization": dotnet_token("127.0.0.1", "echo", KEY_NAME, KEY)}
    call = asyncio.ensure_future(http.put(f"{relay.http_url}/echo/upload", data=upload, headers=token))
    stub = (await next_command(listener))["request"]
    assert "body" not in stub  # .NET reads a missing body as "dial the address" (Node: missing method)
    rendezvous = await DotnetSocket.connect(stub["address"], ssl_context=tls)
    full = await rendezvous.receive()
    assert full.opcode is Opcode.TEXT
    request = json.loads(full.payload)["request"]
    assert (request["method"], request["requestTarget"], request["body"]) == ("PUT", "/echo/upload", True)
    body = await rendezvous.receive()
    assert (body.opcode, body.payload) == (Opcode.BINARY, upload)
    await rendezvous.send_text(dotnet_response(request["id"], 200, "OK", {}, True))
    await rendezvous.send_streamed([upload[:100_000], upload[100_000:]])
    await rendezvous.close_output(1000, "NormalClosure")
    async with await asyncio.wait_for(call, TIMEOUT) as resp:
        assert resp.status == 200
        assert await resp.read() == upload
    answer = await rendezvous.receive()
    assert answer.opcode is Opcode.CLOSE and answer.code in DOTNET_VALID_CLOSE_CODES
    for socket in (rendezvous, listener):
        socket.abort()


async def test_keep_alive_pings_and_unsolicited_pongs_are_harmless(relay: Relay, tls: ssl.SSLContext) -> None:
    """Keep-alive. The bundled WebSocket sends an empty Ping every ``KeepAliveInterval`` (3.5 minutes,
    HybridConnectionConstants.cs:155; ManagedWebSocket.cs:227, 515-522) on control channels, senders and
    rendezvous sockets alike; with ``UseBuiltInClientWebSocket`` the framework socket may send unsolicited
    Pongs instead. The relay answers each Ping with an empty Pong and neither reaches the other peer."""
    listener = await open_listener(relay, tls)
    await listener.send_frame(Opcode.PING, b"")
    assert await listener.frame() == Frame(Opcode.PONG, b"")
    await listener.send_frame(Opcode.PONG, b"")
    sender_task = asyncio.ensure_future(
        DotnetSocket.connect(
            sdk_uri(relay, "echo", "connect", tracking_id()), sdk_headers("echo"), ssl_context=tls
        )
    )
    # The next frame on the control channel is the accept: nothing answered the unsolicited Pong.
    accept = await listener.frame()
    assert accept.opcode is Opcode.TEXT and b'"accept"' in accept.payload
    peer = await DotnetSocket.connect(json.loads(accept.payload)["accept"]["address"], ssl_context=tls)
    sender = await asyncio.wait_for(sender_task, TIMEOUT)
    for one, other in ((sender, peer), (peer, sender)):
        await one.send_frame(Opcode.PING, b"")
        await one.send_frame(Opcode.PONG, b"")
        await one.send_binary(b"data")
        assert await one.frame() == Frame(Opcode.PONG, b"")
        assert await other.frame() == Frame(Opcode.BINARY, b"data")
    for socket in (sender, peer, listener):
        socket.abort()


async def test_runtime_information_get_as_the_sdk_sends_it(
    relay: Relay, tls: ssl.SSLContext, http: aiohttp.ClientSession
) -> None:
    """``GetRuntimeInformationAsync`` (ManagementOperations.cs:22-120): ``GET https://{host}/{path}?api-version=
    2016-07`` with ``X-PROCESS-AT: ServiceBus`` and ``Authorization`` holding a 10-minute token for the
    ``sb://`` address; an Atom entry whose ``<content>`` holds ``HybridConnectionDescription`` in the
    DataContract member order of HybridConnectionRuntimeInformation.cs; an Atom *feed* content type means
    EndpointNotFound."""
    listener = await open_listener(relay, tls)
    expiry = int(time.time()) + 600

    def headers(path: str) -> dict[str, str]:
        return {
            "X-PROCESS-AT": "ServiceBus",
            "Authorization": dotnet_token("127.0.0.1", path, KEY_NAME, KEY, expiry=expiry),
        }

    async with http.get(f"{relay.http_url}/echo?api-version=2016-07", headers=headers("echo")) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/atom+xml"
        assert "type=feed" not in resp.headers["Content-Type"]
        root = ET.fromstring(await resp.text())
    connect = "{http://schemas.microsoft.com/netservices/2010/10/servicebus/connect}"
    description = root.find(f"{{http://www.w3.org/2005/Atom}}content/{connect}HybridConnectionDescription")
    assert description is not None
    members = [child.tag.removeprefix(connect) for child in description]
    order = ["CreatedAt", "UpdatedAt", "RequiresClientAuthorization", "UserMetadata", "ListenerCount"]
    assert members == [name for name in order if name in members]
    assert description.findtext(f"{connect}ListenerCount") == "1"
    assert description.findtext(f"{connect}RequiresClientAuthorization") == "true"
    async with http.get(f"{relay.http_url}/nope?api-version=2016-07", headers=headers("nope")) as resp:
        assert resp.status == 200
        assert "type=feed" in resp.headers["Content-Type"]
    listener.abort()
