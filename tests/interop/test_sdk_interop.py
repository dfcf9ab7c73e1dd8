"""The hyco Python SDK against Microsoft's official Node ``hyco-ws`` client, both directions, ws and wss.

* an official hyco-ws listener serves a hyco SDK sender;
* a hyco SDK listener serves an official hyco-ws sender;
byte-exact, with text and binary messages.
"""

from __future__ import annotations

import asyncio
import random

from hyco import HybridConnectionClient, HybridConnectionListener, TokenProvider
from tests.conftest import KEY, KEY_NAME, TIMEOUT
from tests.interop.conftest import Interop
from tests.interop.test_hyco_ws import MESSAGES, decoded, run_sender, ws_listener


def sdk_address(env: Interop, path: str = "echo") -> str:
    return f"{env.relay.url}/{path}"


def sdk_options(env: Interop) -> dict[str, object]:
    return {"ssl": env.client_ssl} if env.client_ssl is not None else {}


async def test_official_listener_serves_hyco_sdk_sender(interop: Interop) -> None:
    tokens = TokenProvider.from_shared_access_key(KEY_NAME, KEY)
    async with ws_listener(interop) as listener:
        client = HybridConnectionClient(sdk_address(interop), tokens, **sdk_options(interop))
        stream = await asyncio.wait_for(client.connect(), TIMEOUT)
        try:
            for kind, data in MESSAGES:
                if kind == "text":
                    assert isinstance(data, str)
                    await stream.send_text(data)
                else:
                    assert isinstance(data, bytes)
                    await stream.send_bytes(data)
                echoed = await asyncio.wait_for(stream.receive(), TIMEOUT)
                assert echoed == data, (kind, len(data), listener.describe())
            # The byte-stream face of the same stream: write() sends binary messages, read() gets bytes.
            blob = random.Random(7).randbytes(300_000)
            await stream.write(blob)
            assert await asyncio.wait_for(stream.readexactly(len(blob)), TIMEOUT) == blob
        finally:
            await stream.close()
        closed = await listener.wait_for("connection_close")
        assert closed["code"] == 1000, listener.describe()


async def test_hyco_sdk_listener_serves_official_sender(interop: Interop) -> None:
    tokens = TokenProvider.from_shared_access_key(KEY_NAME, KEY)
    seen: list[str | bytes] = []

    async def echo(stream) -> None:
        async with stream:
            async for message in stream:
                seen.append(message)
                if isinstance(message, str):
                    await stream.send_text(message)
                else:
                    await stream.send_bytes(message)

    async with HybridConnectionListener(sdk_address(interop), tokens, **sdk_options(interop)) as listener:
        server = asyncio.ensure_future(_serve(listener, echo))
        try:
            code, events, proc = await run_sender(interop, "echo", MESSAGES)
        finally:
            server.cancel()
    assert code == 0, proc.describe()
    received = [decoded(e) for e in events if e["event"] == "message"]
    assert received == MESSAGES
    assert seen == [data for _, data in MESSAGES]
    close = [e for e in events if e["event"] == "close"]
    assert close and close[0]["code"] == 1000, events


async def _serve(listener, handler) -> None:
    tasks = set()
    async for stream in listener:
        task = asyncio.ensure_future(handler(stream))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
