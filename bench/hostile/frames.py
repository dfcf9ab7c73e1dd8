"""Hostile kinds on spliced WebSockets: floods of empty frames and pings, frames that break the rules, a
frozen peer, a listener's 10 MB of JSON, forged rendezvous ids, a sender at full speed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import struct
import time
import uuid
from collections import Counter

import aiohttp
from aiohttp import WSMsgType

from bench.common import connect_url, listen_url
from bench.hostile.context import MODE_HEADER, Ctx, RawWs, auth, masked, until_eof, workers
from hyco.protocol.frames import Opcode, encode_frame


async def spliced(ctx: Ctx, kind: str, mode: str = "sink") -> RawWs:
    url = connect_url(ctx.relay, "hostile")
    return await RawWs.open(ctx, kind, url, {**auth(ctx, "hostile"), MODE_HEADER: mode})


async def flood(ctx: Ctx, kind: str, frame: bytes) -> None:
    batch = frame * (65536 // len(frame))

    async def one() -> None:
        ws = await spliced(ctx, kind)
        drain = asyncio.ensure_future(until_eof(ws.reader, ctx.stop))  # pongs, and the relay's close
        try:
            while not ctx.stop.is_set() and not drain.done():
                ws.writer.write(batch)
                await ws.writer.drain()
                ctx.outcomes.setdefault(kind, Counter())["frames"] += len(batch) // len(frame)
        finally:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await drain
            ws.abort()

    await workers(ctx, kind, 1, one)


async def empty_flood(ctx: Ctx) -> None:
    await flood(ctx, "empty_flood", masked(Opcode.BINARY))


async def ping_flood(ctx: Ctx) -> None:
    await flood(ctx, "ping_flood", masked(Opcode.PING))


BAD_FRAMES = {
    "unmasked": encode_frame(Opcode.BINARY, b"hello"),
    "reserved opcode": bytes([0x83, 0x80]) + os.urandom(4),
    "rsv1": bytes([0xC2, 0x80]) + os.urandom(4),
    "invalid utf-8": masked(Opcode.TEXT, b"\xff\xfe"),
    "close 5000": masked(Opcode.CLOSE, struct.pack("!H", 5000)),
    "2^62 length": bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 62) + os.urandom(4),
}


async def bad_frames(ctx: Ctx) -> None:
    names = list(BAD_FRAMES)

    async def one() -> None:
        name = names[sum(ctx.outcomes.get("bad_frames", Counter()).values()) % len(names)]
        ws = await spliced(ctx, "bad_frames")
        ws.writer.write(BAD_FRAMES[name])
        code = await ws.close_code(30)
        ctx.count("bad_frames", f"{name}: {code or 'closed without a Close frame'}")
        ws.abort()

    await workers(ctx, "bad_frames", 2, one)


async def frozen_peer(ctx: Ctx) -> None:
    async with ctx.session("frozen_peer") as session:

        async def one() -> None:
            ws = await session.ws_connect(
                connect_url(ctx.relay, "frozen"), headers=auth(ctx, "frozen"), heartbeat=None
            )
            started = time.monotonic()
            while not ctx.stop.is_set() and not ws.closed:
                with contextlib.suppress(ConnectionError):
                    await ws.send_bytes(b"anyone there?")
                try:
                    msg = await ws.receive(0.5)
                except TimeoutError:
                    continue
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                    ctx.count("frozen_peer", f"close {ws.close_code}")
                    ctx.cut("frozen_peer", time.monotonic() - started)
                    break
            await ws.close()

        await workers(ctx, "frozen_peer", 2, one)


async def big_json(ctx: Ctx) -> None:
    body = b'{"renewToken":{"token":"' + b"x" * 10_000_000 + b'"}}'

    async def one() -> None:
        url = listen_url(ctx.relay, str(uuid.uuid4()), "bigjson")
        ws = await RawWs.open(ctx, "big_json", url, auth(ctx, "bigjson"))
        started = time.monotonic()
        ws.writer.write(masked(Opcode.TEXT, body))
        try:
            await ws.writer.drain()
            code = await ws.close_code(30)
        except ConnectionError:
            code = "reset"
        ctx.count("big_json", f"dropped ({code})")
        ctx.cut("big_json", time.monotonic() - started)
        ws.abort()

    await workers(ctx, "big_json", 1, one)


async def rendezvous(ctx: Ctx) -> None:
    async with ctx.session("rendezvous") as session:

        async def one() -> None:
            ident = random.choice([uuid.uuid4().hex, "", "../" * 10, "x" * 300])
            url = f"{ctx.relay}/$hc/hostile?sb-hc-action=accept&sb-hc-id={ident}"
            try:
                ws = await session.ws_connect(url)
            except aiohttp.WSServerHandshakeError as exc:
                ctx.count("rendezvous", str(exc.status))
            else:
                ctx.count("rendezvous", "ACCEPTED")
                await ws.close()

        await workers(ctx, "rendezvous", 2, one)


async def full_speed(ctx: Ctx) -> None:
    frame = masked(Opcode.BINARY, os.urandom(65536))

    async def one() -> None:
        ws = await spliced(ctx, "full_speed")
        try:
            while not ctx.stop.is_set():
                ws.writer.write(frame)
                await ws.writer.drain()
                ctx.outcomes.setdefault("full_speed", Counter())["bytes"] += 65536
        finally:
            ws.abort()

    await workers(ctx, "full_speed", 1, one)
