"""Scenario 2: 64-byte echo on one connection, sequential: p50/p99 latency and round trips per second."""

from __future__ import annotations

import time

import aiohttp

from bench.common import SMALL, percentile
from bench.env import Env, Metric

TITLE = "round trip"


async def echo_loop(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> tuple[list[float], float]:
    """Latencies in microseconds and the elapsed wall time of as many echoes as fit in ``seconds``."""
    latencies: list[float] = []
    clock = time.perf_counter
    started = clock()
    deadline = started + seconds
    while True:
        t0 = clock()
        await ws.send_bytes(SMALL)
        msg = await ws.receive()
        t1 = clock()
        if msg.data != SMALL:
            raise RuntimeError(f"bad echo: {msg.type}")
        latencies.append((t1 - t0) * 1e6)
        if t1 >= deadline:
            return latencies, t1 - started


async def measure(env: Env) -> list[Metric]:
    seconds = 1.5 if env.quick else 5.0
    relay = await env.relay()
    await env.listener(relay)
    direct = await env.direct()
    haproxy = await env.haproxy(direct)
    p50 = Metric("2-p50", "2 round trip p50", "µs", "lower")
    p99 = Metric("2-p99", "2 round trip p99", "µs", "lower")
    rate = Metric("2-rate", "2 round trips/s", "1/s", "higher")
    cpu = Metric("2-cpu", "2 middle's CPU per round trip", "µs", "lower")
    middle = {"hyco": relay, "haproxy": haproxy}
    async with aiohttp.ClientSession() as session:
        for target, base in env.ws_targets(relay, direct, haproxy).items():
            ws = await env.open_ws(session, target, base)
            await echo_loop(ws, 0.2)  # warm up
            process = middle.get(target)
            if process is not None:
                process.mark_cpu()
            async with env.profiled(relay, "s2", enabled=target == "hyco"):
                latencies, elapsed = await echo_loop(ws, seconds)
            if process is not None:
                used = process.cpu_since_mark()
                cpu.values[target] = used * 1e6 / len(latencies)
                if target == "hyco":
                    rate.notes["relay_cpu_share"] = round(used / elapsed, 2)
            p50.values[target] = percentile(latencies, 50)
            p99.values[target] = percentile(latencies, 99)
            rate.values[target] = len(latencies) / elapsed
            await ws.close()
    return [p50, p99, rate, cpu]
