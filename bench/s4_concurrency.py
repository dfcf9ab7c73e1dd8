"""Scenario 4: many concurrent relayed connections held open, each proven alive by one echo.

Clients are spread over several processes (a process may hold 20,000 open files here). A relayed connection
costs the relay two sockets, so the number attempted is capped by the relay's own open-files limit; the cap
and the number really reached are reported.
"""

from __future__ import annotations

import asyncio
import gc

from bench.common import open_files, rss
from bench.env import Env, Metric

TITLE = "concurrency"
HOLDERS = 4
LISTENERS = 2
CONCURRENCY = 50  # connections being opened at once per holder process


async def hold(env: Env, url: str, mode: str, server_pid: int, count: int) -> dict[str, float]:
    holders = [await env.holder(url, mode) for _ in range(HOLDERS)]
    warm = await holders[0].command(f"open {HOLDERS * 10} 10")
    assert warm.startswith("opened"), warm
    await holders[0].command("close")
    await asyncio.sleep(0.5)
    before = rss(server_pid)
    shares = [count // HOLDERS + (1 if i < count % HOLDERS else 0) for i in range(HOLDERS)]
    replies = await asyncio.gather(
        *(h.command(f"open {n} {CONCURRENCY}", timeout=600) for h, n in zip(holders, shares, strict=True))
    )
    opened = failed = 0
    elapsed = 0.0
    first_error = ""
    for reply in replies:
        parts = reply.split(maxsplit=4)
        opened += int(parts[1])
        failed += int(parts[2])
        elapsed = max(elapsed, float(parts[3]))
        first_error = first_error or (parts[4] if len(parts) > 4 else "")
    await asyncio.sleep(0.5)
    after = rss(server_pid)
    await asyncio.gather(*(h.command("close", timeout=300) for h in holders))
    for h in holders:
        await env.stop(h)
    gc.collect()
    return {
        "opened": opened,
        "failed": failed,
        "seconds": elapsed,
        "rss_before": before,
        "rss_after": after,
        "per_conn": (after - before) / opened if opened else 0.0,
        "first_error": first_error,
    }


async def measure(env: Env) -> list[Metric]:
    wanted = 500 if env.quick else 10_000
    relay = await env.relay()
    for _ in range(LISTENERS):
        await env.listener(relay)
    fds, limit = open_files(relay.pid)
    cap = (limit - fds - 64) // 2  # two sockets per relayed connection
    count = min(wanted, cap)
    direct = await env.direct()
    haproxy = await env.haproxy(direct, maxconn=count + 16)  # haproxy also needs two sockets each
    held = Metric("4-held", f"4 connections held (of {wanted})", "conns", "higher")
    seconds = Metric("4-open", "4 time to open them", "s", "lower")
    per_conn = Metric("4-rss", "4 server RSS per connection", "KiB", "lower")
    held.notes.update(wanted=wanted, attempted=count, relay_fd_limit=limit, relay_fds_idle=fds)
    if count < wanted:
        held.notes["capped"] = (
            f"relay open-files limit {limit}: at most {cap} relayed connections (2 sockets each)"
        )
    targets = env.ws_targets(relay, direct, haproxy)
    pids = {"hyco": relay.pid, "direct": direct.pid}
    if haproxy is not None:
        pids["haproxy"] = haproxy.pid
    for target, url in targets.items():
        result = await hold(env, url, "relay" if target == "hyco" else "direct", pids[target], count)
        held.values[target] = result["opened"]
        seconds.values[target] = result["seconds"]
        per_conn.values[target] = result["per_conn"] / 1024
        per_conn.notes[target] = {
            "rss_before_mib": round(result["rss_before"] / 2**20, 1),
            "rss_after_mib": round(result["rss_after"] / 2**20, 1),
        }
        if result["failed"]:
            held.notes[f"{target}_failed"] = result["failed"]
            held.notes[f"{target}_first_error"] = result["first_error"]
    return [held, seconds, per_conn]
