"""The kinds with a legitimate part: connections and relayed POSTs whose data comes back checked (CRC32);
``lost`` counts any byte that did not come back intact."""

from __future__ import annotations

import random
import zlib

from aiohttp import WSMsgType

from bench.common import connect_url
from bench.hostile.context import MODE_HEADER, Ctx, auth, masked, workers
from bench.hostile.frames import spliced
from hyco.protocol.frames import Opcode


async def churn(ctx: Ctx) -> None:
    rng = random.Random(42)
    async with ctx.session("churn") as session:

        async def one() -> None:
            if rng.random() < 0.1:  # a peer that dies mid-message (a reset, no Close)
                raw = await spliced(ctx, "churn", "echo")
                raw.writer.write(masked(Opcode.BINARY, rng.randbytes(4096), fin=False))
                await raw.writer.drain()
                raw.abort()
                ctx.count("churn", "reset mid-stream")
                return
            ws = await session.ws_connect(
                connect_url(ctx.relay, "hostile"),
                headers={**auth(ctx, "hostile"), MODE_HEADER: "echo"},
                max_msg_size=1 << 20,
            )
            payload = rng.randbytes(rng.randint(1, 256 * 1024))
            await ws.send_bytes(payload)
            msg = await ws.receive(30)
            if msg.type is not WSMsgType.BINARY:  # cut (visibly, with a Close): no byte was altered
                ctx.count("churn", f"closed before its echo ({ws.close_code})")
                return
            intact = zlib.crc32(msg.data) == zlib.crc32(payload)
            ctx.count("churn", "echoed intact" if intact else "lost")
            ctx.outcomes["churn"]["bytes checked"] += len(payload) if intact else 0
            await ws.close()

        await workers(ctx, "churn", 4, one)


async def http_churn(ctx: Ctx) -> None:
    rng = random.Random(7)
    async with ctx.session("http_churn") as session:

        async def one() -> None:
            body = rng.randbytes(rng.randint(1, 60 * 1024))
            async with session.post(
                f"{ctx.http}/hostile/up", data=body, headers=auth(ctx, "hostile")
            ) as resp:
                answer = await resp.text()
            if resp.status != 200:  # refused (429 above the per-source rate): nothing was lost
                ctx.count("http_churn", str(resp.status))
                return
            intact = answer == f"{len(body)} {zlib.crc32(body)}"
            ctx.count("http_churn", "answered intact" if intact else "lost")
            ctx.outcomes["http_churn"]["bytes checked"] += len(body) if intact else 0

        await workers(ctx, "http_churn", 4, one)
