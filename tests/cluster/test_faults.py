"""Faults with real processes: kill -9 a listener's node or a sender's node, restart NATS, partition a node
from NATS. Nothing hangs, local pairs keep working, refusals say why, and everything recovers by itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from hyco.exceptions import HycoError
from tests.cluster.harness import (
    NatsServer,
    NetCut,
    RelayNode,
    ask,
    haproxy,
    open_tagged,
    relay_node,
    tagged_listener,
    wait_until,
)
from tests.conftest import TIMEOUT
from tests.management.conftest import Api
from tests.server.wire import handshake_error, recording_session, send_connect


async def holder(nodes: list[RelayNode]) -> RelayNode:
    """The node whose control channel the (one) listener is on."""
    for node in nodes:
        if (await node.health())["listeners"] == 1:
            return node
    raise AssertionError("no node holds the listener")


async def sees(node: RelayNode, count: int) -> bool:
    return (await node.health())["cluster"]["listeners_seen"] == count


async def first_answer(url: str) -> str:
    """Retry a sender until a listener answers (each try is bounded); the tag of the listener."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                return await ask(url)
            except (HycoError, OSError):
                await asyncio.sleep(0.05)


async def test_kill9_listener_node(tmp_path: Path, nodes: list[RelayNode]) -> None:
    async with haproxy(tmp_path, nodes) as lb, tagged_listener(f"{lb.url}/echo", "L") as listener:
        owner = await holder(nodes)
        others = [n for n in nodes if n is not owner]
        for node in others:
            await wait_until(lambda n=node: sees(n, 1), f"{node.node_id} never saw the listener")
        local, _ = await open_tagged(f"{owner.url}/echo")  # spliced on the owner
        remote, _ = await open_tagged(f"{others[0].url}/echo")  # spliced on another node
        owner.kill9()
        killed = time.monotonic()
        # The stream spliced on the dead node breaks; the one spliced elsewhere is untouched.
        with pytest.raises(HycoError):
            await asyncio.wait_for(local.send_text("x"), TIMEOUT)
            await asyncio.wait_for(local.receive(), TIMEOUT)
        await local.close()
        await remote.send_text("still here")
        assert await asyncio.wait_for(remote.receive(), TIMEOUT) == "still here"
        await remote.close()
        # The listener reconnects through the load balancer to a survivor; new senders reach it.
        assert await first_answer(f"{others[1].url}/echo") == "L"
        recovered = time.monotonic() - killed
        assert listener.is_online
        print(f"\nlistener's node killed: new senders reach the listener again after {recovered:.2f} s")


async def test_kill9_sender_node(tmp_path: Path, nodes: list[RelayNode]) -> None:
    n1, n2, n3 = nodes
    async with tagged_listener(f"{n1.url}/echo", "L"):
        await wait_until(lambda: sees(n3, 1), "node 3 never saw the listener")
        stream, _ = await open_tagged(f"{n3.url}/echo")  # spliced on node 3
        n3.kill9()
        with pytest.raises(HycoError):
            await asyncio.wait_for(stream.receive(), TIMEOUT)
        await stream.close()  # releases the SDK's session; the stream is broken already
        # The listener's control channel on node 1 was never involved: it serves the next sender at once.
        assert (await n1.health())["listeners"] == 1
        assert await ask(f"{n2.url}/echo") == "L"


async def test_nats_restart_mid_traffic(
    tmp_path: Path, nats_server: NatsServer, nodes: list[RelayNode]
) -> None:
    n1, _, n3 = nodes
    async with tagged_listener(f"{n1.url}/echo", "L"), recording_session() as session:
        await wait_until(lambda: sees(n3, 1), "node 3 never saw the listener")
        assert await ask(f"{n3.url}/echo") == "L"
        await nats_server.stop()
        stopped = time.monotonic()

        async def lost_nats(node: RelayNode) -> bool:
            return (await node.health())["cluster"]["nats"] != "connected"

        await wait_until(lambda: lost_nats(n3), "node 3 did not notice NATS is gone")
        # Cross-node: refused at once with a reason; same-node: still served.
        refused = await handshake_error(send_connect(session, n3.url, "echo"))
        assert refused.status == 503
        assert "cannot reach the cluster (NATS)" in refused.message, refused.message
        assert await ask(f"{n1.url}/echo") == "L"
        await nats_server.start()  # same port, empty (the lease bucket is rebuilt by the nodes)
        assert await first_answer(f"{n3.url}/echo") == "L"
        print(f"\nNATS restarted: cross-node routing back {time.monotonic() - stopped:.2f} s after the stop")


async def test_node_partitioned_from_nats(
    tmp_path: Path, nats_server: NatsServer, nodes: list[RelayNode]
) -> None:
    n1 = nodes[0]
    cut = NetCut(nats_server.port)
    await cut.start()
    try:
        async with (
            relay_node(tmp_path, "n4", f"nats://127.0.0.1:{cut.port}") as n4,
            tagged_listener(f"{n1.url}/echo", "far"),
            recording_session() as session,
        ):
            await wait_until(lambda: sees(n4, 1), "node 4 never saw the listener")
            async with tagged_listener(f"{n4.url}/spread", "near"):
                cut.cut()

                async def partitioned() -> bool:
                    return (await n4.health())["cluster"]["nats"] != "connected"

                await wait_until(partitioned, "node 4 did not notice the partition")
                refused = await handshake_error(send_connect(session, n4.url, "echo"))
                assert refused.status == 503
                assert "cannot reach the cluster (NATS)" in refused.message, refused.message
                assert await ask(f"{n4.url}/spread") == "near"  # a local pair is still served
                # The rest of the cluster drops the partitioned node's listener (no responders, or expiry).
                assert await ask(f"{n1.url}/echo") == "far"
                # Management writes need the shared store: refused with the reason on the partitioned node;
                # what another node creates meanwhile reaches it once the network heals.
                status, error = await Api(session, n4).call("PUT", "hybridConnections/made-meanwhile", {})
                assert status == 503
                assert "cannot reach the cluster (NATS)" in error["error"]["message"]
                assert (await Api(session, n1).call("PUT", "hybridConnections/made-meanwhile", {}))[0] == 200
                cut.heal()
                assert await first_answer(f"{n4.url}/echo") == "far"
                assert await first_answer(f"{n1.url}/spread") == "near"

                async def caught_up() -> bool:
                    return (await Api(session, n4).call("GET", "hybridConnections/made-meanwhile"))[0] == 200

                await wait_until(
                    caught_up, "node 4 never caught up with the entity made while it was cut off"
                )
    finally:
        await cut.close()
