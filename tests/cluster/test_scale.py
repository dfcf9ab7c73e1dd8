"""The 25-listener cap holds across the cluster, and senders through a load balancer reach every listener."""

from __future__ import annotations

import asyncio
import collections
from contextlib import AsyncExitStack
from pathlib import Path

from tests.cluster.harness import RelayNode, ask, haproxy, tagged_listener, wait_until
from tests.server.wire import RawListener, handshake_error, recording_session

SENDERS = 300


async def test_25_listeners_over_3_nodes_26th_refused_senders_spread(
    tmp_path: Path, nodes: list[RelayNode]
) -> None:
    async with haproxy(tmp_path, nodes) as lb, AsyncExitStack() as stack:
        for i in range(25):  # through the load balancer: round robin spreads them over the nodes
            listener = await stack.enter_async_context(tagged_listener(f"{lb.url}/spread", f"L{i}"))
            assert listener.is_online
        per_node = [(await n.health())["listeners"] for n in nodes]
        assert sum(per_node) == 25 and all(per_node), per_node

        async def sees_all(node: RelayNode) -> bool:
            return (await node.health())["cluster"]["listeners_seen"] == 25

        for node in nodes:
            await wait_until(lambda n=node: sees_all(n), f"{node.node_id} never saw 25 listeners")

        # The 26th is refused on every node, whichever node holds how many.
        async with recording_session() as session:
            for node in nodes:
                refused = await handshake_error(RawListener.open(session, node.url, "spread"))
                assert refused.status == 403, node.describe()
                assert "MaximumListenersPerEndpoint" in refused.message, refused.message
                assert "in the cluster" in refused.message, refused.message

        gate = asyncio.Semaphore(20)

        async def one() -> str:
            async with gate:
                return await ask(f"{lb.url}/spread")

        tags = await asyncio.gather(*(one() for _ in range(SENDERS)))
        spread = collections.Counter(tags)
        print(f"\n{SENDERS} senders over 25 listeners on nodes holding {per_node}: {sorted(spread.values())}")
        # Uniform random choice: a listener that gets none of 300 has a chance of about 1 in 10,000.
        assert len(spread) == 25, spread
