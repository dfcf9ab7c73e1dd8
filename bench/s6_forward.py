"""Scenario 6: ``hyco forward``: TCP throughput and 1-byte round trip through -L/-R against direct TCP.

Processes (all on 127.0.0.1): the plain TCP server (``bench.proc tcp``), the relay, ``hyco forward -R
bench:127.0.0.1:PORT`` and ``hyco forward -L 127.0.0.1:0:bench`` (``bench.proc forward``: the ``Forwarder``
the CLI builds from those flags and ``-x CONNSTR``), each in its own process. The harness is the TCP client:

    hyco:    client -> -L -> relay -> -R -> server     (four TCP hops, two of them WebSocket)
    hyco-wss: the same with TLS between the forwarders and the relay (compare with frp, whose default is TLS)
    direct:  client -> server
    haproxy: client -> haproxy (mode tcp) -> server
    rathole, frp, frp-notls, chisel, bore: client -> the tunnel's entry -> its client process -> server (see
             ``bench.tunnels``; each only when built, one at a time, skipped with the reason otherwise)

Throughput: 1 GiB (``--quick``: 64 MiB) up (``sink N``, the server answers its CRC32), then down
(``source N``, the client checks the CRC32), on one connection. Round trip: 1 byte echoed, sequential, on
a second connection, for 5 s (``--quick``: 1.5 s). CPU per GB: the CPU seconds of the processes in the
middle (hyco: relay + both forwarders; haproxy; a tunnel's server + client) per GB moved. Targets: >= 0.5 x
direct TCP throughput (issue 6); ahead of every tunnel (issue 10).
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


def cpu_shares(children: dict[str, Child], client: float, elapsed: float) -> dict[str, float]:
    """Cores used by each process (the harness as ``client``) while a figure was measured."""
    shares = {"client": round((cpu_seconds(os.getpid()) - client) / elapsed, 2)}
    for name, child in children.items():
        shares[name] = round(child.cpu_since_mark() / elapsed, 2)
    return shares


class Figures:
    """Scenario 6's metrics, filled peer by peer."""

    def __init__(self, size: int) -> None:
        self.size = size
        mib = size >> 20
        self.up = Metric("6-up", f"6 forward TCP up ({mib} MiB)", "MB/s", "higher")
        self.down = Metric("6-down", f"6 forward TCP down ({mib} MiB)", "MB/s", "higher")
        self.p50 = Metric("6-p50", "6 forward 1-byte round trip p50", "µs", "lower")
        self.p99 = Metric("6-p99", "6 forward 1-byte round trip p99", "µs", "lower")
        self.rate = Metric("6-rate", "6 forward round trips/s", "1/s", "higher")
        # CPU of the processes in the middle (hyco: relay + both forwarders; haproxy; a tunnel's server +
        # client): the steadiest figure on a shared machine. Direct has no middle.
        self.cpu_up = Metric("6-cpu-up", "6 forward CPU per GB up (middle processes)", "s/GB", "lower")
        self.cpu_down = Metric("6-cpu-down", "6 forward CPU per GB down (middle processes)", "s/GB", "lower")

    def all(self) -> list[Metric]:
        return [self.up, self.down, self.p50, self.p99, self.rate, self.cpu_up, self.cpu_down]


async def measure_peer(
    env: Env, figures: Figures, target: str, address: str, middle: dict[str, Child], server: Child
) -> None:
    """Bulk up, bulk down and the 1-byte echo through ``address``; ``middle`` are the peer's own processes."""
    size, seconds = figures.size, (1.5 if env.quick else 5.0)
    watched = {**middle, "server": server}
    gigabytes = size / 1e9
    conn = await open_tcp(address)
    await upload(conn, 4 * len(BIG))  # warm up both directions (and, for hyco, open the relayed stream)
    await download(conn, 4 * len(BIG))
    async with contextlib.AsyncExitStack() as stack:
        for name, child in middle.items():
            await stack.enter_async_context(
                env.profiled(child, f"s6-{target}-{name}", enabled=target.startswith("hyco"))
            )
        client = mark_cpu(watched)
        t_up = await upload(conn, size)
        figures.up.notes[f"cpu_share_{target}"] = cpu_shares(watched, client, t_up)
        if middle:
            figures.cpu_up.values[target] = sum(c.cpu_since_mark() for c in middle.values()) / gigabytes
        client = mark_cpu(watched)
        t_down = await download(conn, size)
        figures.down.notes[f"cpu_share_{target}"] = cpu_shares(watched, client, t_down)
        if middle:
            figures.cpu_down.values[target] = sum(c.cpu_since_mark() for c in middle.values()) / gigabytes
    figures.up.values[target] = size / t_up / 1e6
    figures.down.values[target] = size / t_down / 1e6
    await close(conn)

    conn = await open_tcp(address)
    conn[1].write(b"echo\n")
    await echo_loop(conn, 0.2)  # warm up
    client = mark_cpu(watched)
    latencies, elapsed = await echo_loop(conn, seconds)
    figures.rate.notes[f"cpu_share_{target}"] = cpu_shares(watched, client, elapsed)
    figures.p50.values[target] = percentile(latencies, 50)
    figures.p99.values[target] = percentile(latencies, 99)
    figures.rate.values[target] = len(latencies) / elapsed
    await close(conn)


async def measure(env: Env) -> list[Metric]:
    figures = Figures((64 if env.quick else 1024) * 1024 * 1024)
    expected_crc(figures.size)
    server = await env.tcp_server()
    relay = await env.relay()
    remote = await env.forward(relay, remote=f"bench:{server.ready}")
    local = await env.forward(relay, local="127.0.0.1:0:bench")
    haproxy = await env.haproxy(server)
    await measure_peer(
        env, figures, "hyco", local.ready, {"relay": relay, "local": local, "remote": remote}, server
    )
    for child in (local, remote, relay):
        await env.stop(child)
    # hyco over wss (TLS between the forwarders and the relay), as frp with TLS (its default).
    relay = await env.relay(tls=True)
    remote = await env.forward(relay, remote=f"bench:{server.ready}", ca_file=env.relay_ca())
    local = await env.forward(relay, local="127.0.0.1:0:bench", ca_file=env.relay_ca())
    await measure_peer(
        env, figures, "hyco-wss", local.ready, {"relay": relay, "local": local, "remote": remote}, server
    )
    for child in (local, remote, relay):
        await env.stop(child)
    await measure_peer(env, figures, "direct", server.ready, {}, server)
    if haproxy is not None:
        await measure_peer(env, figures, "haproxy", haproxy.ready, {"haproxy": haproxy}, server)
    # The tunnels one at a time, each stopped before the next starts.
    for prepared in env.options.tunnels:
        name = prepared.tool.name
        if prepared.bin is None:
            figures.up.notes[name] = prepared.reason
            continue
        try:
            tunnel = await env.tunnel(prepared, server)
        except RuntimeError as exc:
            print(f"    {name}: skipped: {exc}", flush=True)
            figures.up.notes[name] = f"did not start: {exc}"
            continue
        try:
            middle = {f"{name} server": tunnel.server, f"{name} client": tunnel.client}
            await measure_peer(env, figures, name, tunnel.entry, middle, server)
        finally:
            await env.stop(tunnel.client)
            await env.stop(tunnel.server)
    return figures.all()
