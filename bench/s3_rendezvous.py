"""Scenario 3: rendezvous rate: connect -> accept -> one echo -> close, 50 senders in parallel.

Measured with 1 and with 25 listeners on the hybrid connection. The baselines do the same connect -> echo ->
close against the direct server (a plain WebSocket handshake), straight and through haproxy.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench.common import SMALL
from bench.env import Env, Metric

TITLE = "rendezvous rate"
SENDERS = 50


async def churn(env: Env, target: str, base: str, seconds: float) -> tuple[float, int]:
    """Completed connect/echo/close cycles per second over ``seconds``, and the number of failures."""
    done = 0
    failures = 0
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal done, failures
            while time.perf_counter() < deadline:
                try:
                    ws = await env.open_ws(session, target, base)
                    await ws.send_bytes(SMALL)
                    msg = await ws.receive()
                    if msg.data != SMALL:
                        raise RuntimeError(f"bad echo {msg.type}")
                    await ws.close()
                    done += 1
                except (aiohttp.ClientError, RuntimeError, ConnectionError):
                    failures += 1
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(worker() for _ in range(SENDERS)))
        elapsed = time.perf_counter() - started
    return done / elapsed, failures


async def measure(env: Env) -> list[Metric]:
    seconds = 2.0 if env.quick else 5.0
    relay = await env.relay()
    direct = await env.direct()
    haproxy = await env.haproxy(direct)
    targets = env.ws_targets(relay, direct, haproxy)
    baseline: dict[str, float] = {}
    for target in ("direct", "haproxy"):
        if target in targets:
            await churn(env, target, targets[target], 0.3)
            baseline[target], _ = await churn(env, target, targets[target], seconds)
    metrics = []
    for listeners in (1, 25):
        listener = await env.listener(relay, listeners)
        metric = Metric(
            f"3-rate-{listeners}",
            f"3 rendezvous/s ({listeners} listener{'s' if listeners > 1 else ''})",
            "1/s",
            "higher",
        )
        await churn(env, "hyco", targets["hyco"], 0.3)
        relay.mark_cpu()
        async with env.profiled(relay, f"s3-{listeners}"):
            metric.values["hyco"], failures = await churn(env, "hyco", targets["hyco"], seconds)
        metric.notes["relay_cpu_share"] = round(relay.cpu_since_mark() / seconds, 2)
        metric.notes["failures"] = failures
        metric.values.update(baseline)
        metrics.append(metric)
        await env.stop(listener)
    return metrics
