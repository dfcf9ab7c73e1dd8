"""Cluster scenario: same-node vs cross-node rendezvous (NATS delivery to the listener's node), and the
relay CPU each rendezvous costs with 1, 2 and 3 nodes.

Starts a nats-server and three ``hyco relay --cluster`` nodes as processes (the test harness of
tests/cluster), an SDK listener on node 1, then measures senders on node 1 (same node) and on node 2 (cross
node): connect latency (sequential connect -> first message, p50/p99), rendezvous/s (connect -> one message
-> close, 20 senders in parallel) and relay CPU per rendezvous (user + system time of every node process,
from /proc, over the parallel run). Then senders spread evenly over the first 1, 2 and 3 nodes, with one
listener on each of those nodes. Run: ``.venv/bin/python -m bench.cluster [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
from tests.cluster.harness import (
    TOKENS,
    NatsServer,
    RelayNode,
    ask,
    open_tagged,
    relay_node,
    tagged_listener,
    wait_until,
)

from hyco import RelayedHttpRequest, RelayedHttpResponse

PARALLEL = 20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def latencies(url: str, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        stream, _ = await open_tagged(url)
        out.append((time.perf_counter() - started) * 1000)
        await stream.close()
    return out


async def rate(urls: list[str], seconds: float, nodes: list[RelayNode]) -> tuple[float, float]:
    """Rendezvous per second with PARALLEL senders spread over ``urls``, and relay CPU ms per rendezvous."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(url: str) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await ask(url)
            done += 1

    cpu = sum(cpu_seconds(n.proc.pid) for n in nodes)
    started = time.perf_counter()
    await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(PARALLEL)))
    elapsed = time.perf_counter() - started
    cpu = sum(cpu_seconds(n.proc.pid) for n in nodes) - cpu
    return done / elapsed, cpu * 1000 / max(done, 1)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(seconds: float, samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            nats = NatsServer(Path(tmp) / "nats")
            await nats.start()
            stack.push_async_callback(nats.stop)
            nodes = [
                await stack.enter_async_context(
                    relay_node(Path(tmp), f"n{i}", nats.url, lease_seconds=15, handshake_rate=1e6)
                )
                for i in (1, 2, 3)
            ]
            n1, n2, _ = nodes
            await stack.enter_async_context(tagged_listener(f"{n1.url}/echo", "L", request_handler=hello))
            await wait_until(lambda: sees(n2, 1), "node 2 never saw the listener")
            print(
                f"{'':12} {'connect p50':>12} {'connect p99':>12} {'rendezvous/s':>13} {'CPU/rendezvous':>15}"
            )
            for label, node in (("same node", n1), ("cross node", n2)):
                await latencies(f"{node.url}/echo", 20)  # warm up
                lat = await latencies(f"{node.url}/echo", samples)
                per_second, cpu_ms = await rate([f"{node.url}/echo"], seconds, nodes)
                p50, p99 = statistics.median(lat), pct(lat, 0.99)
                print(f"{label:12} {p50:>9.2f} ms {p99:>9.2f} ms {per_second:>13.0f} {cpu_ms:>12.2f} ms")
            print(f"\n{'':12} {'HTTP GET/s':>13} {'CPU/request':>15}   (small GET, 20 clients, keep-alive)")
            for label, node in (("same node", n1), ("cross node", n2)):
                per_second, cpu_ms = await http_rate(f"{node.http_url}/echo/", seconds, nodes)
                print(f"{label:12} {per_second:>13.0f} {cpu_ms:>12.2f} ms")

            print(f"\n{'nodes used':12} {'rendezvous/s':>13} {'CPU/rendezvous':>15}   (a listener on each)")
            async with AsyncExitStack() as more:
                for used in (1, 2, 3):
                    if used > 1:
                        await more.enter_async_context(
                            tagged_listener(f"{nodes[used - 1].url}/echo", f"L{used}")
                        )
                        await wait_until(lambda u=used: sees(n1, u), "node 1 never saw every listener")
                    urls = [f"{n.url}/echo" for n in nodes[:used]]
                    per_second, cpu_ms = await rate(urls, seconds, nodes)
                    print(f"{used:<12} {per_second:>13.0f} {cpu_ms:>12.2f} ms")


async def hello(request: RelayedHttpRequest) -> RelayedHttpResponse:
    return RelayedHttpResponse(200, b"hello")


async def http_rate(url: str, seconds: float, nodes: list[RelayNode]) -> tuple[float, float]:
    """Small GETs per second through ``url`` with PARALLEL clients, and relay CPU ms per request."""
    done = 0
    deadline = time.perf_counter() + seconds
    token = await TOKENS.token_for(url)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            async with session.get(url, headers={"ServiceBusAuthorization": token}) as response:
                assert response.status == 200, response.status
                await response.read()
            done += 1

    cpu = sum(cpu_seconds(n.proc.pid) for n in nodes)
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(PARALLEL)))
    elapsed = time.perf_counter() - started
    cpu = sum(cpu_seconds(n.proc.pid) for n in nodes) - cpu
    return done / elapsed, cpu * 1000 / max(done, 1)


async def sees(node: RelayNode, listeners: int) -> bool:
    return bool((await node.health())["cluster"]["listeners_seen"] == listeners)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.samples))
