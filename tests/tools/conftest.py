"""Helpers for the tools tests: real servers on 127.0.0.1 port 0, relayed stream pairs, forwarder tunnels."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from hyco import HybridConnectionClient, HybridConnectionListener, HybridConnectionStream, TokenProvider
from hyco.server import Relay
from hyco.tools.forward import (
    LocalForward,
    LocalForwarder,
    RelayCredentials,
    RemoteForward,
    RemoteForwarder,
)
from tests.conftest import KEY, KEY_NAME, TIMEOUT

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def credentials(relay: Relay) -> RelayCredentials:
    """Namespace credentials for the in-process relay."""
    return RelayCredentials(f"{relay.url}/", TokenProvider.from_shared_access_key(KEY_NAME, KEY))


async def echo_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until the peer half-closes, then half-close too."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def digest_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read everything (until the peer half-closes), then answer with the length and sha256 of it."""
    digest = hashlib.sha256()
    total = 0
    while data := await reader.read(65536):
        digest.update(data)
        total += len(data)
    writer.write(f"{total} {digest.hexdigest()}\n".encode())
    await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 port 0; yields the port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def tunnel(
    relay: Relay, remote: str, local: str = "127.0.0.1:0:echo", **kwargs: Any
) -> AsyncIterator[tuple[LocalForwarder, RemoteForwarder]]:
    """A remote forwarder (``-R remote``) and a local forwarder (``-L local``) on ``relay``."""
    creds = credentials(relay)
    remote_kwargs = {k: v for k, v in kwargs.items() if k in ("target_connect_timeout", "listener_options")}
    local_kwargs = {k: v for k, v in kwargs.items() if k in ("connect_timeout",)}
    idle = kwargs.get("udp_idle_timeout")
    if idle is not None:
        remote_kwargs["udp_idle_timeout"] = local_kwargs["udp_idle_timeout"] = idle
    async with asyncio.timeout(TIMEOUT):
        rf = RemoteForwarder(RemoteForward.parse(remote), creds, **remote_kwargs)
        await rf.start()
    try:
        async with asyncio.timeout(TIMEOUT):
            await rf.wait_online()
            lf = LocalForwarder(LocalForward.parse(local), creds, **local_kwargs)
            await lf.start()
        try:
            yield lf, rf
        finally:
            await lf.close()
    finally:
        await rf.close()


def local_port(forwarder: LocalForwarder) -> int:
    """The TCP/UDP port a local forwarder bound."""
    port: int = forwarder.addresses[0][1]
    return port


StreamPair = Callable[[], Awaitable[tuple[HybridConnectionStream, HybridConnectionStream]]]


@pytest.fixture
async def stream_pair(relay: Relay) -> AsyncIterator[StreamPair]:
    """A factory of (sender stream, listener stream) pairs through ``relay``; all closed after the test."""
    tp = TokenProvider.from_shared_access_key(KEY_NAME, KEY)
    async with contextlib.AsyncExitStack() as stack:
        listener = HybridConnectionListener(f"{relay.url}/echo", tp)
        async with asyncio.timeout(TIMEOUT):
            await stack.enter_async_context(listener)

        async def make() -> tuple[HybridConnectionStream, HybridConnectionStream]:
            async with asyncio.timeout(TIMEOUT):
                sender = await HybridConnectionClient(f"{relay.url}/echo", tp).connect()
                stack.push_async_callback(sender.close)
                accepted = await listener.accept()
                assert accepted is not None
                stack.push_async_callback(accepted.close)
                return sender, accepted

        yield make
