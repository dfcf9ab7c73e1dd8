"""Cluster scenario: same-node vs cross-node rendezvous (NATS delivery to the listener's node).

Starts a nats-server and two ``hyco relay --cluster`` nodes as processes (the test harness of tests/cluster),
an SDK listener on node 1, then measures senders on node 1 (same node) and on node 2 (cross node):
connect latency (sequential connect -> first message, p50/p99) and rendezvous/s (connect -> one message ->
close, 20 senders in parallel). Run: ``.venv/bin/python -m bench.cluster [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

from tests.cluster.harness import NatsServer, ask, open_tagged, relay_node, tagged_listener, wait_until

PARALLEL = 20


async def latencies(url: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        stream, _ = await open_tagged(url)
        out.append((time.perf_counter() - started) * 1000)
        await stream.close()
    return out


async def rate(url: str, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await ask(url)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(PARALLEL)))
    return done / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(seconds: float, samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            nats = NatsServer(Path(tmp) / "nats")
            await nats.start()
            stack.push_async_callback(nats.stop)
            n1 = await stack.enter_async_context(relay_node(Path(tmp), "n1", nats.url, lease_seconds=15))
            n2 = await stack.enter_async_context(relay_node(Path(tmp), "n2", nats.url, lease_seconds=15))
            await stack.enter_async_context(tagged_listener(f"{n1.url}/echo", "L"))

            async def sees_listener() -> bool:
                return bool((await n2.health())["cluster"]["listeners_seen"] == 1)

            await wait_until(sees_listener, "node 2 never saw the listener")
            print(f"{'':12} {'connect p50':>12} {'connect p99':>12} {'rendezvous/s':>13}")
            for label, node in (("same node", n1), ("cross node", n2)):
                await latencies(f"{node.url}/echo", 20)  # warm up
                lat = await latencies(f"{node.url}/echo", samples)
                per_second = await rate(f"{node.url}/echo", seconds)
                p50, p99 = statistics.median(lat), pct(lat, 0.99)
                print(f"{label:12} {p50:>9.2f} ms {p99:>9.2f} ms {per_second:>13.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.samples))
