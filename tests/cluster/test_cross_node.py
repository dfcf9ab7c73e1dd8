"""A sender on one node meets a listener on another: official Node clients and the hyco SDK, streams and
HTTP, byte-exact. The rendezvous address names the sender's node (the listener dials back there)."""

from __future__ import annotations

import asyncio
import io
import random

import aiohttp

from hyco import HybridConnectionClient, HybridConnectionListener, TokenProvider
from tests.cluster.harness import RelayNode, wait_until
from tests.conftest import KEY, KEY_NAME, TIMEOUT
from tests.interop.conftest import Interop
from tests.interop.test_hyco_https import https_listener, pattern
from tests.interop.test_hyco_ws import MESSAGES, echo_through_node, ws_listener
from tests.server.wire import token_for


def env(node: RelayNode) -> Interop:
    """The interop helpers' view of one node (plain ws)."""
    return Interop(node, "ws")  # type: ignore[arg-type]


async def sees_listeners(node: RelayNode, count: int) -> bool:
    return (await node.health())["cluster"]["listeners_seen"] == count


async def test_health_reports_node_nats_and_peers(nodes: list[RelayNode]) -> None:
    for node in nodes:
        await wait_until(lambda n=node: _nodes_seen(n, 3), f"{node.node_id} never saw 3 nodes")
    health = await nodes[0].health()
    assert health["cluster"]["node_id"] == "n1"
    assert health["cluster"]["nats"] == "connected"
    assert health["cluster"]["node_url"] == nodes[0].url
    assert health["listeners"] == 0


async def _nodes_seen(node: RelayNode, count: int) -> bool:
    return (await node.health())["cluster"]["nodes_seen"] == count


async def test_official_ws_listener_on_node1_sender_on_node3(nodes: list[RelayNode]) -> None:
    n1, _, n3 = nodes
    async with ws_listener(env(n1)) as listener:
        await wait_until(lambda: sees_listeners(n3, 1), "node 3 never saw the listener")
        events = await echo_through_node(env(n3), MESSAGES)
        assert events[0] == {"event": "open"}
        accepted = await listener.wait_for("connection")
        # The listener dialed node 3, where the sender waits: no relayed byte crossed between nodes.
        assert accepted["url"].startswith(f"{n3.url}/$hc/echo"), accepted


async def test_sdk_listener_and_sender_on_different_nodes(nodes: list[RelayNode]) -> None:
    _, n2, n3 = nodes
    tokens = TokenProvider.from_shared_access_key(KEY_NAME, KEY)

    async def echo(stream) -> None:
        async with stream:
            async for message in stream:
                await (stream.send_text(message) if isinstance(message, str) else stream.send_bytes(message))

    async with HybridConnectionListener(f"{n2.url}/echo", tokens) as listener:
        tasks: set[asyncio.Task[None]] = set()

        async def serve() -> None:
            async for stream in listener:
                task = asyncio.ensure_future(echo(stream))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        server = asyncio.ensure_future(serve())
        try:
            await wait_until(lambda: sees_listeners(n3, 1), "node 3 never saw the listener")
            stream = await asyncio.wait_for(
                HybridConnectionClient(f"{n3.url}/echo", tokens).connect(), TIMEOUT
            )
            try:
                for _, data in MESSAGES:
                    await (stream.send_text(data) if isinstance(data, str) else stream.send_bytes(data))
                    assert await asyncio.wait_for(stream.receive(), TIMEOUT) == data
            finally:
                await stream.close()
        finally:
            server.cancel()
    # The splice ran on node 3 (the sender's), never on node 2 (the listener's).
    assert (await n2.health())["active_connections"] == 0


async def _logged(node: RelayNode, start: str) -> str | None:
    """The first line of ``node``'s log that contains ``start``, if there is one yet."""
    return next((line for line in node.stderr.text(100_000).splitlines() if start in line), None)


async def test_official_https_listener_across_nodes_inline_and_large(nodes: list[RelayNode]) -> None:
    n1, n2, _ = nodes
    headers = {"ServiceBusAuthorization": token_for(n2.url, "echo")}
    async with https_listener(env(n1)) as listener, aiohttp.ClientSession() as session:
        await wait_until(lambda: sees_listeners(n2, 1), "node 2 never saw the listener")
        async with session.get(f"{n2.http_url}/echo/small", headers=headers) as resp:
            assert resp.status == 200, listener.describe()
            assert await resp.text() == "hello from hyco-https"
        async with session.post(f"{n2.http_url}/echo/echo", data=b"x" * 1024, headers=headers) as resp:
            assert resp.status == 200, listener.describe()
            assert await resp.read() == b"x" * 1024
        # Small requests crossed whole, and their responses came back from node 1 over NATS: the listener
        # never dialed node 2 for them.
        for line in ("http GET /echo/small -> 200", "http POST /echo/echo -> 200"):
            logged = await wait_until(lambda line=line: _logged(n2, line), f"node 2 never logged {line!r}")
            assert logged.endswith("control channel)"), logged
        for size in (1024, 200 * 1024):  # a body of unknown length goes over a rendezvous, whatever its size
            body = random.Random(size).randbytes(size)
            async with session.post(
                f"{n2.http_url}/echo/echo", data=io.BytesIO(body), headers=headers
            ) as resp:
                assert resp.status == 200, listener.describe()
                assert await resp.read() == body
        size = 1024 * 1024
        async with session.get(f"{n2.http_url}/echo/big?size={size}", headers=headers) as resp:
            assert resp.status == 200, listener.describe()
            assert await resp.read() == pattern(size)
