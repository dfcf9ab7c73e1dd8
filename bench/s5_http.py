"""Scenario 5: relayed plain HTTP: small GETs (answered inline on the control channel) and large bodies.

The listener is a raw protocol peer (bench.proc): small requests are answered on the control channel
(protocol.md 4.2), a large download goes back over a request rendezvous as one fragmented message, a large
upload arrives as a stub plus rendezvous (4.3). The baseline serves the same handlers with aiohttp.
"""

from __future__ import annotations

import asyncio
import time
import zlib

import aiohttp

from bench.common import BLOCK, MSG, SMALL, auth_headers, percentile
from bench.env import Env, Metric, expected_crc

TITLE = "HTTP"
CONCURRENCY = 8


async def small_gets(url: str, headers: dict[str, str], seconds: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of GETs from CONCURRENCY workers over one keep-alive pool."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            clock = time.perf_counter
            while clock() < deadline:
                t0 = clock()
                async with session.get(url) as resp:
                    body = await resp.read()
                latencies.append((clock() - t0) * 1000)
                if resp.status != 200 or body != SMALL:
                    raise RuntimeError(f"GET failed: {resp.status}")

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, percentile(latencies, 50), percentile(latencies, 99)


async def download(session: aiohttp.ClientSession, url: str, size: int) -> float:
    started = time.perf_counter()
    crc = got = 0
    async with session.get(f"{url}?size={size}") as resp:
        async for chunk in resp.content.iter_chunked(MSG):
            crc = zlib.crc32(chunk, crc)
            got += len(chunk)
    elapsed = time.perf_counter() - started
    if resp.status != 200 or (got, crc) != (size, expected_crc(size)):
        raise RuntimeError(f"download mismatch: status {resp.status}, {got} bytes")
    return elapsed


async def upload(session: aiohttp.ClientSession, url: str, size: int) -> float:
    async def body():  # type: ignore[no-untyped-def]
        sent = 0
        while sent < size:
            piece = BLOCK if size - sent >= MSG else BLOCK[: size - sent]
            sent += len(piece)
            yield piece

    started = time.perf_counter()
    async with session.post(url, data=body()) as resp:
        text = await resp.text()
    elapsed = time.perf_counter() - started
    if resp.status != 200 or text != f"{size} {expected_crc(size)}":
        raise RuntimeError(f"upload mismatch: {resp.status} {text[:100]!r}")
    return elapsed


async def measure(env: Env) -> list[Metric]:
    seconds = 1.5 if env.quick else 5.0
    size = (16 if env.quick else 100) * 1024 * 1024
    expected_crc(size)
    relay = await env.relay()
    await env.listener(relay)
    direct = await env.direct()
    haproxy = await env.haproxy(direct)
    rate = Metric("5-rate", f"5 HTTP small GET/s ({CONCURRENCY} in flight)", "1/s", "higher")
    p99 = Metric("5-p99", "5 HTTP small GET p99", "ms", "lower")
    down = Metric("5-down", f"5 HTTP download ({size >> 20} MiB)", "MB/s", "higher")
    up = Metric("5-up", f"5 HTTP upload ({size >> 20} MiB)", "MB/s", "higher")
    for target, base in env.http_targets(relay, direct, haproxy).items():
        headers = auth_headers(relay.ready)  # harmless for the direct server
        await small_gets(f"{base}/bench/small", headers, 0.3)
        relay.mark_cpu()
        async with env.profiled(relay, "s5-small", enabled=target == "hyco"):
            rate.values[target], _, p99.values[target] = await small_gets(
                f"{base}/bench/small", headers, seconds
            )
        if target == "hyco":
            used = relay.cpu_since_mark()
            rate.notes["relay_cpu_share"] = round(used / seconds, 2)
            rate.notes["relay_cpu_ms_per_request"] = round(
                used * 1000 / max(rate.values[target] * seconds, 1), 3
            )
        async with aiohttp.ClientSession(headers=headers) as session:
            await download(session, f"{base}/bench/big", 4 * MSG)
            down.values[target] = size / await download(session, f"{base}/bench/big", size) / 1e6
            up.values[target] = size / await upload(session, f"{base}/bench/up", size) / 1e6
    return [rate, p99, down, up]
