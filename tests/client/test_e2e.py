"""End-to-end: the asyncio SDK against an in-process hyco relay on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from hyco import (
    AcceptContext,
    AuthorizationFailed,
    ConnectionRejected,
    EndpointNotFound,
    HybridConnectionClient,
    HybridConnectionListener,
    HybridConnectionStream,
    ListenerState,
    StreamBroken,
    StreamClosed,
    TokenProvider,
)
from hyco.server import Limits, Relay
from tests.client.conftest import address
from tests.conftest import KEY, KEY_NAME, SEND_KEY, SEND_KEY_NAME, TIMEOUT


@asynccontextmanager
async def both(*streams: HybridConnectionStream) -> AsyncIterator[None]:
    """Close both ends concurrently: close() waits for the peer's answering Close (as .NET's CloseAsync)."""
    try:
        yield
    finally:
        await asyncio.gather(*(s.close() for s in streams))


@asynccontextmanager
async def echo_listener(
    relay: Relay, tp: TokenProvider, path: str = "echo", **kwargs: object
) -> AsyncIterator[HybridConnectionListener]:
    async with HybridConnectionListener(address(relay, path), tp, **kwargs) as listener:  # type: ignore[arg-type]
        tasks: set[asyncio.Task[None]] = set()

        async def serve() -> None:
            async for stream in listener:
                task = asyncio.create_task(echo_stream(stream))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        server = asyncio.create_task(serve())
        try:
            yield listener
        finally:
            server.cancel()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(server, *tasks, return_exceptions=True)


async def echo_stream(stream: HybridConnectionStream) -> None:
    async with stream:
        while data := await stream.read():
            await stream.write(data)
        await stream.shutdown()


async def test_send_and_echo_bytes(relay: Relay, tp: TokenProvider) -> None:
    async with echo_listener(relay, tp) as listener:
        assert listener.is_online
        assert listener.state is ListenerState.ONLINE
        client = HybridConnectionClient(address(relay), tp)
        async with asyncio.timeout(TIMEOUT):
            stream = await client.connect()
            async with stream:
                await stream.write(b"hello, ")
                await stream.write(b"relay")
                await stream.shutdown()
                received = b""
                while data := await stream.read():
                    received += data
                assert received == b"hello, relay"
                assert stream.at_eof
                with pytest.raises(StreamClosed):
                    await stream.write(b"after shutdown")
            with pytest.raises(StreamClosed):
                await stream.read()


async def test_messages_text_and_binary(relay: Relay, tp: TokenProvider) -> None:
    async with HybridConnectionListener(address(relay), tp) as listener:
        client = HybridConnectionClient(address(relay), tp)
        async with asyncio.timeout(TIMEOUT):
            sender = await client.connect()
            receiver = await listener.accept()
            assert receiver is not None
            async with both(sender, receiver):
                await sender.send_text("héllo")
                await sender.send_bytes(b"\x00\x01")
                await sender.send_bytes(b"")
                assert await receiver.receive() == "héllo"
                assert await receiver.receive() == b"\x00\x01"
                assert await receiver.receive() == b""
                # close() waits for the peer's answering Close, so the peer reads concurrently
                closing = asyncio.create_task(sender.close())
                assert await receiver.receive() is None
                await receiver.close()
                await closing


async def test_large_message_and_many_writes(relay: Relay, tp: TokenProvider) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    async with echo_listener(relay, tp):
        client = HybridConnectionClient(address(relay), tp)
        async with asyncio.timeout(TIMEOUT):
            async with await client.connect() as stream:

                async def pump() -> None:
                    await stream.write(payload)
                    for i in range(200):
                        await stream.write(i.to_bytes(2, "big"))
                    await stream.shutdown()

                writer = asyncio.create_task(pump())
                received = bytearray()
                while data := await stream.read(65536):
                    received += data
                await writer
        expected = payload + b"".join(i.to_bytes(2, "big") for i in range(200))
        assert bytes(received) == expected


async def test_half_close_keeps_other_direction(relay: Relay, tp: TokenProvider) -> None:
    async with HybridConnectionListener(address(relay), tp) as listener:
        client = HybridConnectionClient(address(relay), tp)
        async with asyncio.timeout(TIMEOUT):
            sender = await client.connect()
            receiver = await listener.accept()
            assert receiver is not None
            async with both(sender, receiver):
                await sender.write(b"request")
                await sender.shutdown()
                assert await receiver.read() == b"request"
                assert await receiver.read() == b""  # the sender's half-close arrived
                # ...and the listener can still answer after it
                await receiver.write(b"response part 1")
                await receiver.write(b"response part 2")
                await receiver.close()
                got = b""
                while data := await sender.read():
                    got += data
                assert got == b"response part 1response part 2"


async def test_listener_side_shutdown(relay: Relay, tp: TokenProvider) -> None:
    async with HybridConnectionListener(address(relay), tp) as listener:
        client = HybridConnectionClient(address(relay), tp)
        async with asyncio.timeout(TIMEOUT):
            sender = await client.connect()
            receiver = await listener.accept()
            assert receiver is not None
            async with both(sender, receiver):
                await receiver.write(b"banner")
                await receiver.shutdown()
                assert await sender.read() == b"banner"
                assert await sender.read() == b""
                await sender.write(b"late upload")
                await sender.shutdown()
                assert await receiver.read() == b"late upload"
                assert await receiver.read() == b""


async def test_headers_query_subprotocol_and_remote_endpoint(relay: Relay, tp: TokenProvider) -> None:
    seen: list[AcceptContext] = []

    def handler(ctx: AcceptContext) -> bool:
        seen.append(ctx)
        return True

    async with HybridConnectionListener(address(relay), tp, accept_handler=handler) as listener:
        client = HybridConnectionClient(f"{relay.url}/echo/sub/path?x=1&y=two", tp)
        async with asyncio.timeout(TIMEOUT):
            sender = await client.connect(headers={"X-App": "v1"}, subprotocols=["chat", "superchat"])
            receiver = await listener.accept()
            assert receiver is not None
            async with both(sender, receiver):
                assert sender.subprotocol == "chat"
                assert receiver.subprotocol == "chat"
                assert receiver.headers["X-App"] == "v1"
        ctx = seen[0]
        assert ctx.headers["x-app"] == "v1"
        assert "ServiceBusAuthorization" not in ctx.headers
        assert ctx.offered_subprotocols == ["chat", "superchat"]
        assert ctx.path == "echo/sub/path"
        assert ctx.query == "x=1&y=two"
        assert ctx.url.endswith("/echo/sub/path?x=1&y=two")
        assert ctx.remote_endpoint is not None
        assert ctx.remote_endpoint.address == "127.0.0.1"


@pytest.mark.parametrize("is_async", [False, True])
async def test_reject_with_custom_status(relay: Relay, tp: TokenProvider, is_async: bool) -> None:
    def decide(ctx: AcceptContext) -> bool:
        if ctx.headers.get("X-Pass") == "yes":
            return True
        ctx.reject(418, "No tea for you")
        return False

    async def adecide(ctx: AcceptContext) -> bool:
        return decide(ctx)

    async with HybridConnectionListener(
        address(relay), tp, accept_handler=adecide if is_async else decide
    ) as listener:
        client = HybridConnectionClient(address(relay), tp)
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(ConnectionRejected) as info:
                await client.connect()
            assert info.value.http_status == 418
            assert info.value.description == "No tea for you"
            stream = await client.connect(headers={"X-Pass": "yes"})
            accepted = await listener.accept()
            assert accepted is not None
            await asyncio.gather(stream.close(), accepted.close())


async def test_reject_by_returning_false_and_by_raising(relay: Relay, tp: TokenProvider) -> None:
    def handler(ctx: AcceptContext) -> bool:
        if ctx.headers.get("X-Mode") == "raise":
            raise RuntimeError("boom")
        return False

    async with HybridConnectionListener(address(relay), tp, accept_handler=handler):
        client = HybridConnectionClient(address(relay), tp)
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(ConnectionRejected) as info:
                await client.connect()
            assert (info.value.http_status, info.value.description) == (400, "Rejected by user code")
            with pytest.raises(ConnectionRejected) as info:
                await client.connect(headers={"X-Mode": "raise"})
            assert info.value.http_status == 502
            assert "AcceptHandler threw an exception" in info.value.description


async def test_sender_to_unknown_path_and_no_listener(relay: Relay, tp: TokenProvider) -> None:
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(EndpointNotFound):
            await HybridConnectionClient(address(relay, "nope"), tp).connect()
        with pytest.raises(EndpointNotFound):
            await HybridConnectionClient(address(relay, "echo"), tp).connect()


async def test_wrong_key_for_sender_and_listener(relay: Relay) -> None:
    bad = TokenProvider.from_shared_access_key(KEY_NAME, "not-the-key")
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(AuthorizationFailed):
            await HybridConnectionClient(address(relay), bad).connect()
        listener = HybridConnectionListener(address(relay), bad)
        with pytest.raises(AuthorizationFailed):
            await listener.open()
        assert listener.state is ListenerState.CLOSED
        assert isinstance(listener.last_error, AuthorizationFailed)


async def test_expired_token(relay: Relay) -> None:
    expired = TokenProvider.from_shared_access_key(KEY_NAME, KEY, clock=lambda: 1_000_000.0)
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(AuthorizationFailed):
            await HybridConnectionClient(address(relay), expired).connect()
        with pytest.raises(AuthorizationFailed):
            await HybridConnectionListener(address(relay), expired).open()


async def test_listener_on_unknown_path_stops(relay: Relay, tp: TokenProvider) -> None:
    listener = HybridConnectionListener(address(relay, "does-not-exist"), tp)
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(EndpointNotFound):
            await listener.open()
    assert listener.state is ListenerState.CLOSED


async def test_entity_send_key_and_open_entity(relay: Relay, tp: TokenProvider) -> None:
    send_only = TokenProvider.from_shared_access_key(SEND_KEY_NAME, SEND_KEY)
    async with echo_listener(relay, tp), echo_listener(relay, tp, path="open"):
        async with asyncio.timeout(TIMEOUT):
            async with await HybridConnectionClient(address(relay), send_only).connect() as s:
                await s.write(b"x")
                assert await s.read() == b"x"
            # no client authorization on "open": no token provider at all
            async with await HybridConnectionClient(address(relay, "open")).connect() as s:
                await s.write(b"y")
                assert await s.read() == b"y"


async def test_connection_string(relay: Relay) -> None:
    cs = f"Endpoint={relay.url}/;EntityPath=echo;SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY}"
    async with HybridConnectionListener(cs) as listener:
        async with asyncio.timeout(TIMEOUT):
            sender = await HybridConnectionClient(cs).connect()
            receiver = await listener.accept()
            assert receiver is not None
            await sender.write(b"cs")
            assert await receiver.read() == b"cs"
            await asyncio.gather(sender.close(), receiver.close())


async def test_listener_killed_mid_stream_breaks_sender(relay: Relay, tp: TokenProvider) -> None:
    async with HybridConnectionListener(address(relay), tp) as listener:
        client = HybridConnectionClient(address(relay), tp)
        async with asyncio.timeout(TIMEOUT):
            sender = await client.connect()
            receiver = await listener.accept()
            assert receiver is not None
            await sender.write(b"ping")
            assert await receiver.read() == b"ping"
            # Kill the listener's side without any WebSocket close: as if its process died.
            await receiver.abort(code=None)
            with pytest.raises(StreamBroken):
                while await sender.read():
                    pass
            with pytest.raises(StreamBroken):
                await sender.write(b"more")
            await asyncio.gather(sender.close(), receiver.close())


async def test_read_timeout(relay: Relay, tp: TokenProvider) -> None:
    from hyco import RelayTimeout

    async with HybridConnectionListener(address(relay), tp) as listener:
        client = HybridConnectionClient(address(relay), tp, read_timeout=0.05 * TIMEOUT)
        async with asyncio.timeout(TIMEOUT):
            sender = await client.connect()
            receiver = await listener.accept()
            assert receiver is not None
            with pytest.raises(RelayTimeout):
                await sender.read()
            # the stream is still usable after a read timeout
            await receiver.write(b"late")
            assert await sender.read() == b"late"
            await asyncio.gather(sender.close(), receiver.close())


async def test_connect_times_out_when_listener_never_answers(relay: Relay, tp: TokenProvider) -> None:
    from hyco import RelayTimeout

    gate = asyncio.Event()

    async def slow(ctx: AcceptContext) -> bool:
        await gate.wait()
        return True

    async with HybridConnectionListener(address(relay), tp, accept_handler=slow):
        client = HybridConnectionClient(address(relay), tp, connect_timeout=0.1 * TIMEOUT)
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(RelayTimeout):
                await client.connect()
        gate.set()


async def test_relay_accept_timeout_gives_sender_an_error(relay_factory: object, tp: TokenProvider) -> None:
    relay: Relay = await relay_factory(limits=Limits(accept_timeout=0.1 * TIMEOUT))  # type: ignore[operator]
    gate = asyncio.Event()

    async def slow(ctx: AcceptContext) -> bool:
        await gate.wait()
        return True

    async with HybridConnectionListener(address(relay), tp, accept_handler=slow):
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises((EndpointNotFound, ConnectionRejected, Exception)) as info:
                await HybridConnectionClient(address(relay), tp).connect()
            assert getattr(info.value, "http_status", None) in (404, 408, 504)
        gate.set()


async def test_many_concurrent_streams(relay: Relay, tp: TokenProvider) -> None:
    async with echo_listener(relay, tp):
        client = HybridConnectionClient(address(relay), tp)

        async def one(i: int) -> bytes:
            async with await client.connect() as s:
                await s.write(f"msg {i}".encode())
                await s.shutdown()
                out = b""
                while data := await s.read():
                    out += data
                return out

        async with asyncio.timeout(TIMEOUT):
            results = await asyncio.gather(*(one(i) for i in range(20)))
        assert results == [f"msg {i}".encode() for i in range(20)]


async def test_abort_sends_an_error_close_and_wakes_a_pending_read(relay) -> None:
    from hyco import HybridConnectionClient, HybridConnectionListener, StreamBroken, TokenProvider
    from tests.conftest import KEY, KEY_NAME

    tokens = TokenProvider.from_shared_access_key(KEY_NAME, KEY)
    address = f"{relay.url}/echo"
    async with HybridConnectionListener(address, tokens) as listener:
        sender_task = asyncio.ensure_future(HybridConnectionClient(address, tokens).connect())
        accepted = await asyncio.wait_for(listener.accept(), TIMEOUT)
        sender = await asyncio.wait_for(sender_task, TIMEOUT)
        pending = asyncio.ensure_future(sender.read())
        await asyncio.sleep(0)
        await sender.abort(1011, "pipe target failed")
        assert await asyncio.wait_for(pending, TIMEOUT) == b""
        with pytest.raises(StreamBroken) as info:
            await asyncio.wait_for(accepted.read(), TIMEOUT)
        assert info.value.close_code == 1011
        await accepted.close()


async def test_listener_rejects_senders_beyond_max_pending_accepts(relay) -> None:
    from hyco import ConnectionRejected, HybridConnectionClient, HybridConnectionListener, ServerBusy
    from hyco import TokenProvider as TP

    tokens = TP.from_shared_access_key(KEY_NAME, KEY)
    address = f"{relay.url}/echo"
    async with HybridConnectionListener(address, tokens, max_pending_accepts=2) as listener:
        client = HybridConnectionClient(address, tokens)
        first = await asyncio.wait_for(client.connect(), TIMEOUT)
        second = await asyncio.wait_for(client.connect(), TIMEOUT)
        # Nobody called accept(): the third sender is turned away instead of piling up.
        with pytest.raises((ServerBusy, ConnectionRejected)) as info:
            await asyncio.wait_for(client.connect(), TIMEOUT)
        assert info.value.http_status == 503
        assert "waiting" in info.value.description
        taken = await asyncio.wait_for(listener.accept(), TIMEOUT)
        third = await asyncio.wait_for(client.connect(), TIMEOUT)  # room again
        for stream in (first, second, third):
            await stream.abort()
        await taken.abort()


def test_streams_are_not_built_by_hand() -> None:
    # Streams come from connect() and listeners; the constructor takes no WebSocket library objects.
    with pytest.raises(TypeError, match=r"HybridConnectionClient\.connect"):
        HybridConnectionStream()
