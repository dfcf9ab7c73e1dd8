"""The blocking SDK (hyco.sync) end to end.

The relay runs in the test's event loop; the blocking code runs in a worker thread (``asyncio.to_thread``),
as it would in a real program, and drives hyco's own loop thread.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from hyco import (
    AuthorizationFailed,
    ConnectionRejected,
    EndpointNotFound,
    Forbidden,
    RelayTimeout,
    StreamBroken,
    StreamClosed,
    TokenProvider,
)
from hyco.server import Relay, ServerConfig, serve
from hyco.sync import AcceptContext, HybridConnectionClient, HybridConnectionListener, ListenerState
from tests.client.conftest import address
from tests.conftest import KEY, KEY_NAME, TIMEOUT, test_config


def echo_server(listener: HybridConnectionListener, count: int) -> threading.Thread:
    def run() -> None:
        for _ in range(count):
            stream = listener.accept(timeout=TIMEOUT)
            assert stream is not None
            with stream:
                while data := stream.read():
                    stream.write(data)
                stream.shutdown()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def test_sync_echo_roundtrip(relay: Relay, tp: TokenProvider) -> None:
    def scenario() -> None:
        with HybridConnectionListener(address(relay), tp) as listener:
            assert listener.is_online
            server = echo_server(listener, 2)
            client = HybridConnectionClient(address(relay), tp)
            for text in (b"first", b"second"):
                with client.connect() as stream:
                    stream.write(text)
                    stream.shutdown()
                    assert stream.read() == text
                    assert stream.read() == b""
                    with pytest.raises(StreamClosed):
                        stream.write(b"x")
            server.join(TIMEOUT)
            assert not server.is_alive()
        assert listener.state is ListenerState.CLOSED

    await asyncio.wait_for(asyncio.to_thread(scenario), TIMEOUT)


async def test_sync_messages_and_iteration(relay: Relay, tp: TokenProvider) -> None:
    def scenario() -> None:
        with HybridConnectionListener(address(relay), tp) as listener:
            sender = HybridConnectionClient(address(relay), tp).connect()
            receiver = listener.accept(timeout=TIMEOUT)
            assert receiver is not None
            sender.send_text("one")
            sender.send_bytes(b"two")
            sender.shutdown()
            assert list(receiver) == ["one", b"two"]
            receiver.close()
            sender.close()

    await asyncio.wait_for(asyncio.to_thread(scenario), TIMEOUT)


async def test_sync_reject_and_errors(relay: Relay, tp: TokenProvider) -> None:
    handler_threads: list[str] = []

    def handler(ctx: AcceptContext) -> bool:
        handler_threads.append(threading.current_thread().name)
        ctx.reject(403, "Go away")
        return False

    def scenario() -> None:
        with HybridConnectionListener(address(relay), tp, accept_handler=handler) as listener:
            # A listener's 403 looks like the relay's own 403 (Forbidden), as in .NET; the text is theirs.
            with pytest.raises(Forbidden, match="Go away"):
                HybridConnectionClient(address(relay), tp).connect()
            with pytest.raises(RelayTimeout):
                listener.accept(timeout=0.01 * TIMEOUT)
        with pytest.raises(EndpointNotFound):
            HybridConnectionClient(address(relay, "nope"), tp).connect()
        bad = TokenProvider.from_shared_access_key(KEY_NAME, KEY + "x")
        with pytest.raises(AuthorizationFailed):
            HybridConnectionListener(address(relay), bad).open()

    await asyncio.wait_for(asyncio.to_thread(scenario), TIMEOUT)
    assert handler_threads and handler_threads[0] != "hyco-sync-loop"


async def test_sync_custom_status_reject(relay: Relay, tp: TokenProvider) -> None:
    def handler(ctx: AcceptContext) -> bool:
        ctx.reject(409, "Busy, try later")
        return False

    def scenario() -> None:
        with HybridConnectionListener(address(relay), tp, accept_handler=handler) as listener:
            assert listener.is_online
            with pytest.raises(ConnectionRejected) as info:
                HybridConnectionClient(address(relay), tp).connect()
            assert (info.value.http_status, info.value.description) == (409, "Busy, try later")

    await asyncio.wait_for(asyncio.to_thread(scenario), TIMEOUT)


async def test_sync_listener_killed_breaks_sender(relay: Relay, tp: TokenProvider) -> None:
    def scenario() -> None:
        with HybridConnectionListener(address(relay), tp) as listener:
            sender = HybridConnectionClient(address(relay), tp).connect()
            receiver = listener.accept(timeout=TIMEOUT)
            assert receiver is not None
            receiver.abort(
                code=None
            )  # as if the listener's process died: its TCP connection dropped, no Close
            with pytest.raises(StreamBroken):
                while sender.read():
                    pass
            sender.close()
            receiver.close()

    await asyncio.wait_for(asyncio.to_thread(scenario), TIMEOUT)


async def test_sync_abort_with_a_code_reaches_the_peer(relay: Relay, tp: TokenProvider) -> None:
    def scenario() -> None:
        with HybridConnectionListener(address(relay), tp) as listener:
            sender = HybridConnectionClient(address(relay), tp).connect()
            receiver = listener.accept(timeout=TIMEOUT)
            assert receiver is not None
            sender.abort(1011, "pipe target failed")
            sender.abort()  # idempotent
            assert sender.closed
            with pytest.raises(StreamBroken) as info:
                receiver.read()
            assert info.value.close_code == 1011
            receiver.close()

    await asyncio.wait_for(asyncio.to_thread(scenario), TIMEOUT)


async def test_sync_reconnect_after_relay_restart(tp: TokenProvider) -> None:
    cm = serve(test_config())
    first = await cm.__aenter__()
    port = first.port
    addr = f"ws://127.0.0.1:{port}/echo"
    went_offline = threading.Event()

    listener = await asyncio.to_thread(
        HybridConnectionListener,
        addr,
        tp,
        reconnect_delays=(0.0, 0.02 * TIMEOUT),
        on_offline=lambda _: went_offline.set(),
    )
    await asyncio.to_thread(listener.open)
    try:
        await cm.__aexit__(None, None, None)
        assert await asyncio.to_thread(went_offline.wait, TIMEOUT)
        async with serve(test_config(server=ServerConfig(host="127.0.0.1", port=port))):
            await asyncio.to_thread(listener.wait_online, TIMEOUT)
            assert listener.is_online
    finally:
        await asyncio.to_thread(listener.close)


def test_sync_token_provider_calls_block_and_return_tokens() -> None:
    from hyco.protocol.sas import parse_token, verify_signature
    from hyco.sync import TokenProvider as SyncTokenProvider

    tokens = SyncTokenProvider.from_shared_access_key(KEY_NAME, KEY)
    security_token = tokens.get_token("http://relay.example/echo/", 60)
    assert security_token.audience == "http://relay.example/echo/"  # a SecurityToken, not a coroutine
    text = tokens.token_for("sb://Relay.Example:8443/$hc/echo?x=1")
    parsed = parse_token(text)
    assert (parsed.audience, parsed.key_name) == ("http://relay.example/echo/", KEY_NAME)
    assert verify_signature(parsed, KEY)
    assert tokens.renewable
    assert KEY not in repr(tokens)
    fixed = SyncTokenProvider.from_sas(text)
    assert fixed.token_for("sb://relay.example/echo") == text and not fixed.renewable
    cs = f"Endpoint=sb://relay.example/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY}"
    from_cs = SyncTokenProvider.from_connection_string(cs)
    assert (
        from_cs is not None and parse_token(from_cs.token_for("sb://relay.example/echo")).key_name == KEY_NAME
    )
    assert SyncTokenProvider.from_connection_string("Endpoint=sb://relay.example/") is None
    from_callable = SyncTokenProvider.from_callable(lambda audience, ttl: text)
    assert from_callable.get_token("http://relay.example/echo/").token == text


async def test_async_token_for_is_one_call() -> None:
    from hyco.protocol.sas import parse_token

    text = await TokenProvider.from_shared_access_key(KEY_NAME, KEY).token_for("ws://127.0.0.1:9350/echo")
    assert parse_token(text).audience == "http://127.0.0.1/echo/"


async def test_sync_clients_take_the_sync_token_provider(relay: Relay) -> None:
    from hyco.sync import TokenProvider as SyncTokenProvider

    def roundtrip() -> bytes:
        tokens = SyncTokenProvider.from_shared_access_key(KEY_NAME, KEY)
        with HybridConnectionListener(address(relay), tokens) as listener:
            server = echo_server(listener, 1)
            with HybridConnectionClient(address(relay), tokens).connect() as stream:
                stream.write(b"sync tokens")
                stream.shutdown()
                data = stream.read()
            server.join(TIMEOUT)
            return data

    assert await asyncio.wait_for(asyncio.to_thread(roundtrip), 3 * TIMEOUT) == b"sync tokens"
