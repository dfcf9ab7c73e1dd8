"""Scenario 1: stream throughput over one connection, 64 KiB messages each way, checksummed (CRC32)."""

from __future__ import annotations

import time
import zlib

import aiohttp
from aiohttp import WSMsgType

from bench.common import BLOCK, MSG
from bench.env import Env, Metric, expected_crc

TITLE = "stream throughput"


async def upload(ws: aiohttp.ClientWebSocketResponse, size: int) -> float:
    """Seconds to push ``size`` bytes to the far end and get its checksum back."""
    expected = expected_crc(size)
    started = time.perf_counter()
    await ws.send_str(f"sink {size}")
    sent = 0
    while sent < size:
        piece = BLOCK if size - sent >= MSG else BLOCK[: size - sent]
        await ws.send_bytes(piece)
        sent += len(piece)
    reply = await ws.receive()
    elapsed = time.perf_counter() - started
    if reply.type is not WSMsgType.TEXT or reply.data != f"ok {size} {expected}":
        raise RuntimeError(f"upload checksum mismatch: {reply.data!r}")
    return elapsed


async def download(ws: aiohttp.ClientWebSocketResponse, size: int) -> float:
    expected = expected_crc(size)
    started = time.perf_counter()
    await ws.send_str(f"source {size}")
    crc = got = 0
    while got < size:
        msg = await ws.receive()
        if msg.type is not WSMsgType.BINARY:
            raise RuntimeError(f"download broke after {got} bytes: {msg.type}")
        crc = zlib.crc32(msg.data, crc)
        got += len(msg.data)
    done = await ws.receive()
    elapsed = time.perf_counter() - started
    if crc != expected or done.data != f"done {size} {expected}":
        raise RuntimeError("download checksum mismatch")
    return elapsed


async def measure(env: Env) -> list[Metric]:
    size = (64 if env.quick else 1024) * 1024 * 1024
    expected_crc(size)
    relay = await env.relay()
    await env.listener(relay)
    direct = await env.direct()
    haproxy = await env.haproxy(direct)
    up = Metric("1-up", f"1 stream up ({size >> 20} MiB)", "MB/s", "higher")
    down = Metric("1-down", f"1 stream down ({size >> 20} MiB)", "MB/s", "higher")
    # CPU of the process in the middle (the relay; haproxy) per GB moved, up and down together: the
    # steadiest figure on a shared machine, where the MB/s depend on what else runs.
    cpu = Metric("1-cpu", "1 middle's CPU per GB (up + down)", "s/GB", "lower")
    middle = {"hyco": relay, "haproxy": haproxy}
    async with aiohttp.ClientSession() as session:
        for target, base in env.ws_targets(relay, direct, haproxy).items():
            ws = await env.open_ws(session, target, base)
            await upload(ws, 4 * MSG)  # warm up both directions
            await download(ws, 4 * MSG)
            process = middle.get(target)
            if process is not None:
                process.mark_cpu()
            async with env.profiled(relay, "s1", enabled=target == "hyco"):
                t_up = await upload(ws, size)
                t_down = await download(ws, size)
            if process is not None:
                used = process.cpu_since_mark()
                cpu.values[target] = used / (2 * size / 1e9)
                if target == "hyco":
                    up.notes["relay_cpu_share"] = round(used / (t_up + t_down), 2)
            up.values[target] = size / t_up / 1e6
            down.values[target] = size / t_down / 1e6
            await ws.close()
    return [up, down, cpu]
