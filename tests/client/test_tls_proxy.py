"""TLS with a private CA (sb:// and wss:// addresses) and HTTP CONNECT proxies."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from hyco import ConnectionLost, HybridConnectionClient, HybridConnectionListener, TokenProvider
from hyco.server import Relay
from hyco.server.tls import mint_development_certificate
from tests.conftest import TIMEOUT


@pytest.fixture
async def tls_relay(
    relay_factory: Callable[..., Awaitable[Relay]], tmp_path: Path
) -> AsyncIterator[tuple[Relay, Path]]:
    cert = mint_development_certificate(tmp_path, ("localhost",))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert, cert.key)
    yield await relay_factory(ssl_context=context), cert.ca


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on 127.0.0.1 port 0 that counts its tunnels."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n")[0].decode().split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        self.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


@pytest.fixture
async def proxy() -> AsyncIterator[ConnectProxy]:
    p = ConnectProxy()
    p.server = await asyncio.start_server(p.handle, "127.0.0.1", 0)
    async with p.server:
        yield p


async def exchange(listener: HybridConnectionListener, client: HybridConnectionClient) -> None:
    async with asyncio.timeout(TIMEOUT):
        sender = await client.connect()
        receiver = await listener.accept()
        assert receiver is not None
        await sender.write(b"over tls")
        assert await receiver.read() == b"over tls"
        await asyncio.gather(sender.close(), receiver.close())


async def test_sb_address_with_private_ca(tls_relay: tuple[Relay, Path], tp: TokenProvider) -> None:
    relay, ca = tls_relay
    assert relay.url.startswith("wss://")
    sb = f"sb://localhost:{relay.port}/echo"
    async with HybridConnectionListener(sb, tp, ca_file=str(ca)) as listener:
        await exchange(
            listener, HybridConnectionClient(f"wss://localhost:{relay.port}/echo", tp, ca_file=str(ca))
        )


async def test_untrusted_certificate_is_refused(tls_relay: tuple[Relay, Path], tp: TokenProvider) -> None:
    relay, _ = tls_relay
    with pytest.raises(ConnectionLost, match=r"is not trusted .*ca_file="):  # names the way to trust it
        await HybridConnectionClient(f"sb://localhost:{relay.port}/echo", tp).connect()


async def test_through_connect_proxy(
    tls_relay: tuple[Relay, Path], tp: TokenProvider, proxy: ConnectProxy
) -> None:
    relay, ca = tls_relay
    sb = f"sb://localhost:{relay.port}/echo"
    async with HybridConnectionListener(sb, tp, ca_file=str(ca), proxy=proxy.url) as listener:
        await exchange(listener, HybridConnectionClient(sb, tp, ca_file=str(ca), proxy=proxy.url))
    # control channel, sender and the rendezvous dial all went through the proxy
    assert len(proxy.tunnels) >= 3
    assert all(t.endswith(f":{relay.port}") for t in proxy.tunnels)
