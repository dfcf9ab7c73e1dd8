"""Hostile kinds at the front door: slow, idle, garbage and badly authorized requests, stalled and
abandoned bodies, a listener that stops reading its control channel."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
import uuid

import aiohttp

from bench.common import KEY, KEY_NAME, connect_url, listen_url, token
from bench.hostile.context import Ctx, auth, until_eof, workers
from bench.hostile.listeners import stuck_listener_channel
from hyco.protocol.sas import create_token


async def slowloris(ctx: Ctx) -> None:
    async def one() -> None:
        reader, writer = await ctx.tcp("slowloris")
        started = time.monotonic()
        writer.write(b"GET /$health HTTP/1.1\r\nHost: x\r\n")
        while not ctx.stop.is_set():
            writer.write(b"X-Slow: 1\r\n")  # one header line a second: never a complete head
            try:
                if await asyncio.wait_for(reader.read(1024), 1.0) == b"":
                    ctx.cut("slowloris", time.monotonic() - started)
                    break
            except TimeoutError:
                continue
        writer.transport.abort()

    await workers(ctx, "slowloris", 50, one)


async def idle(ctx: Ctx) -> None:
    async def one() -> None:
        reader, writer = await ctx.tcp("idle")
        writer.write(b"GET /no-such-entity HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = time.monotonic()
        data = await until_eof(reader, ctx.stop)
        if data is not None:
            ctx.count("idle", "404" if b" 404 " in data.split(b"\r\n", 1)[0] else "other answer")
            ctx.cut("idle", time.monotonic() - answered)
        writer.transport.abort()

    await workers(ctx, "idle", 50, one)


async def garbage(ctx: Ctx) -> None:
    rng = random.Random(13)
    prefixes = [
        b"",
        b"GET ",
        b"POST /hostile HTTP/1.1\r\n",
        b"GET /$hc/hostile?sb-hc-action=connect HTTP/1.1\r\n",
    ]

    async def one() -> None:
        reader, writer = await ctx.tcp("garbage")
        writer.write(rng.choice(prefixes) + rng.randbytes(rng.randint(1, 8192)) + b"\r\n\r\n")
        data = await until_eof(reader, ctx.stop, limit=30)
        status = data.split(b" ", 2)[1].decode(errors="replace") if data else "closed"
        ctx.count("garbage", status if data is not None else "no answer")
        writer.transport.abort()

    await workers(ctx, "garbage", 4, one)


async def bad_tokens(ctx: Ctx) -> None:
    rng = random.Random(6)
    now = int(time.time())
    forged = [
        "SharedAccessSignature garbage",
        "SharedAccessSignature sr=x&sig=&se=1&skn=",
        create_token(f"http://{ctx.host}/hostile/", KEY_NAME, "d3Jvbmcta2V5", now + 600),  # wrong key
        create_token(f"http://{ctx.host}/hostile/", KEY_NAME, KEY, now - 3600),  # expired
        create_token(f"http://{ctx.host}/hostile/", KEY_NAME, KEY, 10**309),  # se beyond any float
        create_token(f"http://{ctx.host}/bench/", KEY_NAME, KEY, now + 600),  # another entity's scope
        create_token(f"http://{ctx.host}/hostile/deeper/", KEY_NAME, KEY, now + 600),  # a narrower scope
        "SharedAccessSignature " + "a=b&" * 2000,
    ]

    async with ctx.session("bad_tokens") as session:

        async def one() -> None:
            bad = rng.choice(forged)
            if rng.random() < 0.5:
                async with session.post(
                    f"{ctx.http}/hostile", data=b"x", headers={"ServiceBusAuthorization": bad}
                ) as resp:
                    ctx.count("bad_tokens", str(resp.status))
            else:
                url = listen_url(ctx.relay, str(uuid.uuid4()), "hostile")
                try:
                    ws = await session.ws_connect(url, headers={"ServiceBusAuthorization": bad})
                except aiohttp.WSServerHandshakeError as exc:
                    ctx.count("bad_tokens", str(exc.status))
                else:
                    ctx.count("bad_tokens", "ACCEPTED")  # must never happen
                    await ws.close()

        await workers(ctx, "bad_tokens", 4, one)


async def stalled_body(ctx: Ctx) -> None:
    async def one() -> None:
        reader, writer = await ctx.tcp("stalled_body")
        started = time.monotonic()
        head = (
            f"POST /hostile HTTP/1.1\r\nHost: {ctx.host}:{ctx.port}\r\n"
            f"ServiceBusAuthorization: {token(ctx.relay, 'hostile')}\r\n"
        )
        writer.write(head.encode() + b"Content-Length: 100\r\n\r\n0123456789")
        try:
            async with asyncio.timeout(120):
                answer = await reader.readuntil(b"\r\n")  # the status line: the request is over
        except TimeoutError:
            ctx.count("stalled_body", "no answer")
        else:
            ctx.count("stalled_body", answer.split(b" ", 2)[1].decode(errors="replace"))
            ctx.cut("stalled_body", time.monotonic() - started)
        writer.transport.abort()

    await workers(ctx, "stalled_body", 20, one)


async def upload_hang_up(ctx: Ctx) -> None:
    chunk = bytes(384 * 1024)

    async def one() -> None:
        _, writer = await ctx.tcp("upload_hang_up")
        head = (
            f"POST /nodial HTTP/1.1\r\nHost: {ctx.host}:{ctx.port}\r\n"
            f"ServiceBusAuthorization: {token(ctx.relay, 'nodial')}\r\n"
        )
        writer.write(head.encode() + b"Content-Length: 1048576\r\n\r\n" + chunk)
        await writer.drain()
        await asyncio.sleep(1)  # the relay waits for the listener, which never dials
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # a reset: the sender is gone
        ctx.count("upload_hang_up", "abandoned")

    await workers(ctx, "upload_hang_up", 20, one)


async def stuck_listener(ctx: Ctx) -> None:
    channel = await stuck_listener_channel(ctx)  # never read from here on
    async with ctx.session("stuck_listener") as session:

        async def one() -> None:
            try:
                ws = await asyncio.wait_for(
                    session.ws_connect(connect_url(ctx.relay, "stuck"), headers=auth(ctx, "stuck")), 0.5
                )
            except TimeoutError:
                ctx.count("stuck_listener", "gave up")  # the sender hangs up while the relay offers it
            except aiohttp.WSServerHandshakeError as exc:
                ctx.count("stuck_listener", str(exc.status))
            else:
                ctx.count("stuck_listener", "ACCEPTED")  # cannot happen: nobody dials
                await ws.close()

        try:
            await workers(ctx, "stuck_listener", 10, one)
        finally:
            channel.abort()
