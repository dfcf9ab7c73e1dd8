"""Interop fixtures: every interop test runs against a plain ws:// relay and a wss:// relay whose
certificate comes from a minted development CA that Node trusts through ``NODE_EXTRA_CA_CERTS``."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from hyco.server import Limits, Relay
from hyco.server.config import TlsConfig
from hyco.server.tls import server_ssl_context


@dataclass
class Interop:
    """A running relay plus what Node and Python clients need to reach it."""

    relay: Relay
    scheme: str
    node_env: dict[str, str] = field(default_factory=dict)
    client_ssl: ssl.SSLContext | None = None

    def uri(self, path: str, action: str) -> str:
        return f"{self.relay.url}/$hc/{path}?sb-hc-action={action}"


@pytest.fixture(scope="module")
def minted_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    ctx, minted = server_ssl_context(TlsConfig(self_signed=("127.0.0.1",)), tmp_path_factory.mktemp("tls"))
    assert minted is not None
    return ctx, minted.ca


@pytest.fixture(params=["ws", "wss"])
async def interop(
    request: pytest.FixtureRequest,
    relay_factory: Callable[..., Awaitable[Relay]],
    minted_ca: tuple[ssl.SSLContext, Path],
) -> Interop:
    # Every peer runs on 127.0.0.1, and hyco-ws reconnect storms (test_hyco_ws) would otherwise be answered
    # 429 by the per-source rate, along with the good peers beside them (tests/server/test_sources.py).
    limits = Limits(handshake_rate_per_source=1_000_000)
    if request.param == "ws":
        relay = await relay_factory(limits=limits)
        return Interop(relay, "ws")
    server_ctx, ca = minted_ca
    relay = await relay_factory(ssl_context=server_ctx, limits=limits)
    assert relay.url.startswith("wss://127.0.0.1:"), relay.url
    client_ctx = ssl.create_default_context(cafile=str(ca))
    return Interop(relay, "wss", {"NODE_EXTRA_CA_CERTS": str(ca)}, client_ctx)


@pytest.fixture
async def session(interop: Interop) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=interop.client_ssl if interop.client_ssl else True)
    async with aiohttp.ClientSession(connector=connector) as s:
        yield s
