"""Scenario 6: ``hyco forward``: TCP throughput and 1-byte round trip through -L/-R against direct TCP.

Processes (all on 127.0.0.1): the plain TCP server (``bench.proc tcp``), the relay, ``hyco forward -R
bench:127.0.0.1:PORT`` and ``hyco forward -L 127.0.0.1:0:bench`` (``bench.proc forward``: the ``Forwarder``
the CLI builds from those flags and ``-x CONNSTR``), each in its own process. The harness is the TCP client:

    hyco:    client -> -L -> relay -> -R -> server     (four TCP hops, two of them WebSocket)
    direct:  client -> server
    haproxy: client -> haproxy (mode tcp) -> server

Throughput: 1 GiB (``--quick``: 64 MiB) up (``sink N``, the server answers its CRC32), then down
(``source N``, the client checks the CRC32), on one connection. Round trip: 1 byte echoed, sequential, on
a second connection, for 5 s (``--quick``: 1.5 s). Target (issue 6): >= 0.5 x direct TCP throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import zlib

from bench.common import STEP_TIMEOUT, Child, cpu_seconds, percentile
from bench.env import Env, Metric, expected_crc
from bench.proc import BIG, TCP_READ

TITLE = "hyco forward (TCP)"
ONE = b"x"

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_tcp(address: str) -> Stream:
    host, port = address.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port), limit=4 * TCP_READ)


async def upload(conn: Stream, size: int) -> float:
    """Seconds to push ``size`` bytes to the server and get its checksum back."""
    reader, writer = conn
    expected = expected_crc(size)
    async with asyncio.timeout(STEP_TIMEOUT):
        started = time.perf_counter()
        writer.write(f"sink {size}\n".encode())
        sent = 0
        while sent < size:
            piece = BIG if size - sent >= len(BIG) else BIG[: size - sent]
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
        reply = (await reader.readline()).decode().strip()
        elapsed = time.perf_counter() - started
    if reply != f"ok {size} {expected}":
        raise RuntimeError(f"upload checksum mismatch: {reply!r}")
    return elapsed


async def download(conn: Stream, size: int) -> float:
    """Seconds to receive ``size`` bytes from the server; the CRC32 is checked."""
    reader, writer = conn
    expected = expected_crc(size)
    async with asyncio.timeout(STEP_TIMEOUT):
        started = time.perf_counter()
        writer.write(f"source {size}\n".encode())
        crc = got = 0
        while got < size:
            data = await reader.read(min(TCP_READ, size - got))
            if not data:
                raise RuntimeError(f"download broke after {got} bytes")
            crc = zlib.crc32(data, crc)
            got += len(data)
        elapsed = time.perf_counter() - started
    if crc != expected:
        raise RuntimeError("download checksum mismatch")
    return elapsed


async def echo_loop(conn: Stream, seconds: float) -> tuple[list[float], float]:
    """Latencies (µs) of 1-byte echoes, sequential, for ``seconds``; and the elapsed wall time."""
    reader, writer = conn
    latencies: list[float] = []
    clock = time.perf_counter
    async with asyncio.timeout(seconds + STEP_TIMEOUT):
        started = clock()
        deadline = started + seconds
        while True:
            t0 = clock()
            writer.write(ONE)
            data = await reader.read(1)
            t1 = clock()
            if data != ONE:
                raise RuntimeError(f"bad echo: {data!r}")
            latencies.append((t1 - t0) * 1e6)
            if t1 >= deadline:
                return latencies, t1 - started


async def close(conn: Stream) -> None:
    writer = conn[1]
    writer.close()
    with contextlib.suppress(OSError):
        await asyncio.wait_for(writer.wait_closed(), 10)


def mark_cpu(children: dict[str, Child]) -> float:
    for child in children.values():
        child.mark_cpu()
    return cpu_seconds(os.getpid())


def cpu_shares(children: dict[str, Child], client: float, elapsed: float, hyco: bool) -> dict[str, float]:
    """Cores used by each process while a figure was measured (the relay and forwarders only for hyco)."""
    shares = {"client": round((cpu_seconds(os.getpid()) - client) / elapsed, 2)}
    for name, child in children.items():
        if hyco or name == "server":
            shares[name] = round(child.cpu_since_mark() / elapsed, 2)
    return shares


async def measure(env: Env) -> list[Metric]:
    size = (64 if env.quick else 1024) * 1024 * 1024
    seconds = 1.5 if env.quick else 5.0
    expected_crc(size)
    server = await env.tcp_server()
    relay = await env.relay()
    remote = await env.forward(relay, remote=f"bench:{server.ready}")
    local = await env.forward(relay, local="127.0.0.1:0:bench")
    haproxy = await env.haproxy(server)
    targets = {"hyco": local.ready, "direct": server.ready}
    if haproxy is not None:
        targets["haproxy"] = haproxy.ready
    up = Metric("6-up", f"6 forward TCP up ({size >> 20} MiB)", "MB/s", "higher")
    down = Metric("6-down", f"6 forward TCP down ({size >> 20} MiB)", "MB/s", "higher")
    p50 = Metric("6-p50", "6 forward 1-byte round trip p50", "µs", "lower")
    p99 = Metric("6-p99", "6 forward 1-byte round trip p99", "µs", "lower")
    rate = Metric("6-rate", "6 forward round trips/s", "1/s", "higher")
    hyco_children = {"relay": relay, "local": local, "remote": remote, "server": server}
    for target, address in targets.items():
        is_hyco = target == "hyco"
        conn = await open_tcp(address)
        await upload(conn, 4 * len(BIG))  # warm up both directions (and, for hyco, open the relayed stream)
        await download(conn, 4 * len(BIG))
        async with contextlib.AsyncExitStack() as stack:
            for name in ("relay", "local", "remote"):
                child = hyco_children[name]
                await stack.enter_async_context(env.profiled(child, f"s6-{name}", enabled=is_hyco))
            client = mark_cpu(hyco_children)
            t_up = await upload(conn, size)
            up.notes[f"cpu_share_{target}"] = cpu_shares(hyco_children, client, t_up, is_hyco)
            client = mark_cpu(hyco_children)
            t_down = await download(conn, size)
            down.notes[f"cpu_share_{target}"] = cpu_shares(hyco_children, client, t_down, is_hyco)
        up.values[target] = size / t_up / 1e6
        down.values[target] = size / t_down / 1e6
        await close(conn)

        conn = await open_tcp(address)
        conn[1].write(b"echo\n")
        await echo_loop(conn, 0.2)  # warm up
        client = mark_cpu(hyco_children)
        latencies, elapsed = await echo_loop(conn, seconds)
        rate.notes[f"cpu_share_{target}"] = cpu_shares(hyco_children, client, elapsed, is_hyco)
        p50.values[target] = percentile(latencies, 50)
        p99.values[target] = percentile(latencies, 99)
        rate.values[target] = len(latencies) / elapsed
        await close(conn)
    return [up, down, p50, p99, rate]
