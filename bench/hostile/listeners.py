"""The listeners of the hostile entities: ``hostile`` (accepts everything; echoes or discards), ``nodial``
(never dials), ``frozen`` (dials, then answers no ping), ``stuck`` (stops reading its control channel)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from bench.common import listen_url
from bench.hostile.context import MODE_HEADER, Ctx, RawWs, auth


async def hostile_listener(ctx: Ctx, session: aiohttp.ClientSession) -> None:
    """Listener of ``hostile``: accepts every connection; echoes when asked (MODE_HEADER), else discards.
    Answers inline requests with ``LENGTH CRC32``. When its control channel ends it comes back (as a real
    listener would), counting how it ended in ``ctx.listener_ends``: churn and http_churn depend on it."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(accept: dict[str, Any]) -> None:
        echo = accept.get("connectHeaders", {}).get(MODE_HEADER) == "echo"
        with contextlib.suppress(aiohttp.ClientError, ConnectionError, TimeoutError):
            peer = await session.ws_connect(accept["address"], max_msg_size=32 << 20)
            async for msg in peer:
                if echo and msg.type is WSMsgType.BINARY:
                    await peer.send_bytes(msg.data)
                elif echo and msg.type is WSMsgType.TEXT:
                    await peer.send_str(msg.data)
            await peer.close()

    while not ctx.stop.is_set():
        try:
            ws = await session.ws_connect(
                listen_url(ctx.relay, str(uuid.uuid4()), "hostile"),
                headers=auth(ctx, "hostile"),
                max_msg_size=32 << 20,
            )
        except (aiohttp.ClientError, OSError) as exc:
            ctx.listener_ends[f"hostile: could not connect ({type(exc).__name__})"] += 1
            await asyncio.sleep(1)
            continue
        try:
            await _serve_hostile_channel(ws, tasks, serve)
        except (aiohttp.ClientError, ConnectionError) as exc:
            ctx.listener_ends[f"hostile: {type(exc).__name__}"] += 1
        else:
            ctx.listener_ends[f"hostile: closed ({ws.close_code})"] += 1


async def _serve_hostile_channel(
    ws: aiohttp.ClientWebSocketResponse,
    tasks: set[asyncio.Task[None]],
    serve: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Answer the hostile listener's control channel until it ends."""
    waiting: dict[str, Any] | None = None
    async for msg in ws:
        if msg.type is WSMsgType.BINARY and waiting is not None:
            answer = f"{len(msg.data)} {zlib.crc32(msg.data)}".encode()
            await ws.send_str(
                json.dumps({"response": {"requestId": waiting["id"], "statusCode": 200, "body": True}})
            )
            await ws.send_bytes(answer)
            waiting = None
        elif msg.type is WSMsgType.TEXT:
            command = json.loads(msg.data)
            if "accept" in command:
                task = asyncio.ensure_future(serve(command["accept"]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif "request" in command and command["request"].get("body"):
                waiting = command["request"]
            elif "request" in command:
                request_id = command["request"]["id"]
                await ws.send_str(json.dumps({"response": {"requestId": request_id, "statusCode": 204}}))


async def nodial_listener(ctx: Ctx, session: aiohttp.ClientSession) -> None:
    """Listener of ``nodial``: reads every ``request`` stub and never dials it."""
    ws = await session.ws_connect(
        listen_url(ctx.relay, str(uuid.uuid4()), "nodial"), headers=auth(ctx, "nodial")
    )
    async for _ in ws:
        pass


async def frozen_listener(ctx: Ctx, session: aiohttp.ClientSession) -> None:
    """Listener of ``frozen``: dials every rendezvous on a raw socket, then never reads it (no pong)."""
    ws = await session.ws_connect(
        listen_url(ctx.relay, str(uuid.uuid4()), "frozen"), headers=auth(ctx, "frozen")
    )
    held: list[RawWs] = []
    async for msg in ws:
        if msg.type is WSMsgType.TEXT and "accept" in (command := json.loads(msg.data)):
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                held.append(await RawWs.open(ctx, "frozen_peer", command["accept"]["address"]))
            held = [h for h in held if not h.writer.is_closing()][-50:]


async def stuck_listener_channel(ctx: Ctx) -> RawWs:
    """A control channel on ``stuck`` that is never read."""
    return await RawWs.open(
        ctx, "stuck_listener", listen_url(ctx.relay, str(uuid.uuid4()), "stuck"), auth(ctx, "stuck")
    )
