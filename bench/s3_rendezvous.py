"""Scenario 3: rendezvous rate: connect -> accept -> one echo -> close, 50 senders in parallel.

Measured with 1 and with 25 listeners on the hybrid connection. The baselines do the same connect -> echo ->
close against the direct server (a plain WebSocket handshake), straight and through haproxy. Beside the rate:
the CPU the middle process spent per completed cycle (the relay; the direct server; haproxy alone), the
steadiest figure on a shared machine.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench.common import SMALL
from bench.env import Env, Metric

TITLE = "rendezvous rate"
SENDERS = 50


async def churn(env: Env, target: str, base: str, seconds: float) -> tuple[float, int, int]:
    """Completed connect/echo/close cycles per second over ``seconds``, the failures, and the cycles."""
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
    return done / elapsed, failures, done


async def measure(env: Env) -> list[Metric]:
    seconds = 2.0 if env.quick else 5.0
    relay = await env.relay()
    direct = await env.direct()
    haproxy = await env.haproxy(direct)
    targets = env.ws_targets(relay, direct, haproxy)
    baseline: dict[str, float] = {}
    cpu = Metric("3-cpu", "3 CPU per rendezvous (1 listener)", "ms", "lower")
    middle = {"direct": direct, "haproxy": haproxy}
    for target in ("direct", "haproxy"):
        if target in targets:
            await churn(env, target, targets[target], 0.3)
            process = middle[target]
            assert process is not None
            process.mark_cpu()
            baseline[target], _, done = await churn(env, target, targets[target], seconds)
            cpu.values[target] = process.cpu_since_mark() * 1000 / max(done, 1)
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
            metric.values["hyco"], failures, done = await churn(env, "hyco", targets["hyco"], seconds)
        used = relay.cpu_since_mark()
        metric.notes["relay_cpu_share"] = round(used / seconds, 2)
        if listeners == 1:
            cpu.values["hyco"] = used * 1000 / max(done, 1)
        metric.notes["failures"] = failures
        metric.values.update(baseline)
        metrics.append(metric)
        await env.stop(listener)
    return [*metrics, cpu]
