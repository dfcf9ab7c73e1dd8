"""Interop with the official Node ``hyco-https`` 1.4.5 listener (protocol.md 4 and 10), on ws and wss.

Plain HTTP requests go through the relay to an official hyco-https listener: small GET, POSTs of 1 KiB
(inline on the control channel) and 200 KiB (stub + request rendezvous), a 1 MiB response (hyco-https moves
it to a rendezvous itself), and a custom status with reason phrase.
"""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.conftest import KEY, KEY_NAME
from tests.interop.conftest import Interop
from tests.interop.nodeproc import NodeProcess, node_process
from tests.server.wire import token_for


@contextlib.asynccontextmanager
async def https_listener(env: Interop, path: str = "echo") -> AsyncIterator[NodeProcess]:
    host_port = urlsplit(env.relay.url).netloc
    scheme = "https" if env.scheme == "wss" else "http"
    async with node_process(
        "https_listener.js", host_port, path, KEY_NAME, KEY, scheme, env=env.node_env
    ) as proc:
        event = await proc.next_event()
        assert event == {"event": "listening"}, proc.describe()
        yield proc


def headers(env: Interop) -> dict[str, str]:
    return {"ServiceBusAuthorization": token_for(env.relay.url, "echo")}


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


async def test_small_get(interop: Interop, session: aiohttp.ClientSession) -> None:
    async with https_listener(interop) as listener:
        async with session.get(f"{interop.relay.http_url}/echo/small", headers=headers(interop)) as resp:
            assert resp.status == 200, listener.describe()
            assert await resp.text() == "hello from hyco-https"
            assert "Via" in resp.headers
        request = await listener.wait_for("request")
        assert request["method"] == "GET"
        assert "servicebusauthorization" not in {k.lower() for k in request["headers"]}


@pytest.mark.parametrize("size", [1024, 200 * 1024])
async def test_post_echo_byte_exact(interop: Interop, session: aiohttp.ClientSession, size: int) -> None:
    body = random.Random(size).randbytes(size)
    async with https_listener(interop) as listener:
        async with session.post(
            f"{interop.relay.http_url}/echo/echo", data=io.BytesIO(body), headers=headers(interop)
        ) as resp:
            assert resp.status == 200, listener.describe()
            assert await resp.read() == body
        request = await listener.wait_for("request")
        assert request["bodyLength"] == size


async def test_one_mib_response(interop: Interop, session: aiohttp.ClientSession) -> None:
    size = 1024 * 1024
    async with https_listener(interop) as listener:
        url = f"{interop.relay.http_url}/echo/big?size={size}"
        async with session.get(url, headers=headers(interop)) as resp:
            assert resp.status == 200, listener.describe()
            assert await resp.read() == pattern(size)


async def test_custom_status_and_reason(interop: Interop, session: aiohttp.ClientSession) -> None:
    async with https_listener(interop) as listener:
        url = f"{interop.relay.http_url}/echo/status/418"
        async with session.get(url, headers=headers(interop)) as resp:
            assert (resp.status, resp.reason) == (418, "Custom Reason"), listener.describe()
        url = f"{interop.relay.http_url}/echo/status/204"
        async with session.get(url, headers=headers(interop)) as resp:
            assert (resp.status, resp.reason) == (204, "Custom Reason"), listener.describe()
        # The stray empty binary frame hyco-https sends after a 204 must not break the next request.
        async with session.get(f"{interop.relay.http_url}/echo/small", headers=headers(interop)) as resp:
            assert resp.status == 200
