"""Hostile clients of every kind from issue 13, run against one relay until told to stop. Not a test.

``python -m bench.hostile --relay ws://127.0.0.1:PORT [--kinds a,b,...]`` (a child of ``bench.soak``): prints
``ready`` once its listeners are online, runs every kind until stdin closes or a ``stop`` line arrives, then
prints one JSON line: per kind, the outcomes it saw (``{"slowloris": {"cut": 120, ...}, ...}``) and the cut
times it measured.

Every kind connects from its own loopback address (127.0.0.20 and up), so the relay's per-source limits
apply to it and not to the bystander on 127.0.0.1. Each runs a bounded number of sockets at once. The relay
must have the hybrid connections of :func:`soak_config` (``bench.soak`` writes it).

Kinds (``KINDS``): ``slowloris`` (request heads never finished), ``idle`` (kept alive after a 404),
``garbage`` (random bytes instead of HTTP), ``bad_tokens`` (forged, expired, wrong-scope tokens on HTTP and
WebSocket), ``stalled_body`` (a small body that stops), ``upload_hang_up`` (1 MiB uploads waiting for a
listener that never dials, abandoned with a reset), ``stuck_listener`` (a listener that stops reading its
control channel, senders that give up), ``empty_flood`` and ``ping_flood`` (spliced senders sending empty
binary frames or pings nonstop), ``bad_frames`` (unmasked, reserved opcode, RSV bit, invalid UTF-8, close
code 5000, 2^62-byte length), ``frozen_peer`` (a spliced listener that answers no ping), ``big_json`` (a
listener sending 10 MB of JSON), ``rendezvous`` (unknown and malformed rendezvous ids), ``full_speed`` (one
sender streaming as fast as it can: defect 12's fairness), ``churn`` (connections opened, echoed with a
CRC32 check and closed or reset mid-stream) and ``http_churn`` (relayed POSTs whose answer is their CRC32).
``churn`` and ``http_churn`` count ``lost`` for any byte that did not come back intact.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import struct
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType

from bench.common import KEY, KEY_NAME, connect_url, listen_url, stdin_reader, token
from hyco.protocol.frames import Opcode, encode_frame
from hyco.protocol.sas import create_token

#: Entities of the soak relay: the bystander's, and the hostile ones (see module docstring).
BYSTANDER_PATH = "bench"
HOSTILE_PATHS = ("hostile", "nodial", "stuck", "frozen", "bigjson")
LISTENER_SOURCE = "127.0.0.19"
#: Header a hostile sender uses to tell the hostile listener to echo (default: read and discard).
MODE_HEADER = "X-Hostile-Mode"


def soak_config(*, idle: float = 5, body: float = 5, ping: float = 4, accept: float = 5) -> str:
    """The relay's TOML for a soak: default limits except shorter deadlines, so cuts happen within minutes."""
    hcs = "".join(
        f'[[hybrid_connections]]\npath = "{path}"\nrequest_timeout = 10\n'
        for path in (BYSTANDER_PATH, *HOSTILE_PATHS)
    )
    return (
        '[server]\nlisten = "127.0.0.1:0"\n'
        f"[limits]\nidle_timeout = {idle}\nbody_timeout = {body}\nping_interval = {ping}\n"
        f"accept_timeout = {accept}\n"
        f'[[authorization_rules]]\nname = "{KEY_NAME}"\nprimary_key = "{KEY}"\nrights = ["Manage"]\n' + hcs
    )


@dataclass
class Ctx:
    """What every kind works with."""

    relay: str
    stop: asyncio.Event
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    cut_seconds: dict[str, list[float]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return urlsplit(self.relay).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.relay).port or 80

    @property
    def http(self) -> str:
        return "http" + self.relay[2:]

    def count(self, kind: str, outcome: str) -> None:
        self.outcomes.setdefault(kind, Counter())[outcome] += 1

    def cut(self, kind: str, seconds: float) -> None:
        self.count(kind, "cut")
        self.cut_seconds.setdefault(kind, []).append(seconds)

    async def tcp(self, kind: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            self.host, self.port, local_addr=(self.sources[kind], 0), limit=1 << 20
        )

    def session(self, kind: str) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, force_close=True, local_addr=(self.sources[kind], 0))
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


# --- raw WebSocket client (any frame, masked or not) -----------------------------------------------


class RawWs:
    """A client WebSocket on a raw TCP stream, for frames no well-behaved library would send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, ctx: Ctx, kind: str, url: str, headers: dict[str, str] | None = None) -> RawWs:
        reader, writer = await ctx.tcp(kind)
        parts = urlsplit(url)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{extra}\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))
        return cls(reader, writer)

    async def close_code(self, timeout: float) -> int | None:
        """Read until the relay's Close frame (its code) or EOF (None)."""
        buffer = b""
        async with asyncio.timeout(timeout):
            while data := await self.reader.read(1 << 16):
                buffer += data
                # Frames from the relay are unmasked; skip to the first close frame.
                while len(buffer) >= 2:
                    length = buffer[1] & 0x7F
                    start = 2 + {126: 2, 127: 8}.get(length, 0)
                    if len(buffer) < start:
                        break
                    if length == 126:
                        length = struct.unpack("!H", buffer[2:4])[0]
                    elif length == 127:
                        length = struct.unpack("!Q", buffer[2:10])[0]
                    if len(buffer) < start + length:
                        break
                    if buffer[0] & 0x0F == Opcode.CLOSE:
                        payload = buffer[start : start + length]
                        return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    buffer = buffer[start + length :]
        return None

    def abort(self) -> None:
        self.writer.transport.abort()


def auth(ctx: Ctx, path: str) -> dict[str, str]:
    """A valid Manage token for ``path``: these clients are authorized, just hostile."""
    return {"ServiceBusAuthorization": token(ctx.relay, path)}


def masked(opcode: Opcode, payload: bytes = b"", fin: bool = True) -> bytes:
    return encode_frame(opcode, payload, fin=fin, mask=os.urandom(4))


# --- listeners of the hostile entities -------------------------------------------------------------


async def hostile_listener(ctx: Ctx, session: aiohttp.ClientSession) -> None:
    """Listener of ``hostile``: accepts every connection; echoes when asked (MODE_HEADER), else discards.
    Answers inline requests with ``LENGTH CRC32``."""
    ws = await session.ws_connect(
        listen_url(ctx.relay, str(uuid.uuid4()), "hostile"),
        headers=auth(ctx, "hostile"),
        max_msg_size=32 << 20,
    )
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


# --- the kinds ------------------------------------------------------------------------------------


async def workers(ctx: Ctx, kind: str, count: int, one: Callable[[], Awaitable[None]]) -> None:
    """Run ``one`` in ``count`` loops until stop; each error is counted as its type's name."""

    async def loop() -> None:
        while not ctx.stop.is_set():
            try:
                await one()
            except (
                OSError,
                ConnectionError,
                TimeoutError,
                aiohttp.ClientError,
                asyncio.IncompleteReadError,
            ) as exc:
                ctx.count(kind, type(exc).__name__)

    await asyncio.gather(*(loop() for _ in range(count)))


async def until_eof(reader: asyncio.StreamReader, stop: asyncio.Event, limit: float = 120) -> bytes | None:
    """Everything until the relay closes (None if ``stop`` came first or ``limit`` passed)."""
    data = b""
    deadline = time.monotonic() + limit
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 16), 0.5)
        except TimeoutError:
            continue
        if not chunk:
            return data
        data += chunk
    return None


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


KINDS: dict[str, Callable[[Ctx], Awaitable[None]]] = {
    "slowloris": slowloris,
    "idle": idle,
    "garbage": garbage,
    "bad_tokens": bad_tokens,
    "stalled_body": stalled_body,
    "upload_hang_up": upload_hang_up,
    "stuck_listener": stuck_listener,
    "empty_flood": empty_flood,
    "ping_flood": ping_flood,
    "bad_frames": bad_frames,
    "frozen_peer": frozen_peer,
    "big_json": big_json,
    "rendezvous": rendezvous,
    "full_speed": full_speed,
    "churn": churn,
    "http_churn": http_churn,
}


async def run(relay: str, kinds: list[str], stop: asyncio.Event, ready: Callable[[], None]) -> Ctx:
    """Start the hostile listeners, call ``ready``, run ``kinds`` until ``stop``; returns what they saw."""
    ctx = Ctx(relay, stop)
    for i, kind in enumerate(KINDS):
        ctx.sources[kind] = f"127.0.0.{20 + i}"
    # The hostile listeners (and their rendezvous dials) get an address of their own too.
    connector = aiohttp.TCPConnector(limit=0, local_addr=(LISTENER_SOURCE, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        listeners = [
            asyncio.ensure_future(make(ctx, session))
            for make in (hostile_listener, nodial_listener, frozen_listener)
        ]
        await asyncio.sleep(1)  # the channels come online (a sender meanwhile would just get a 404)
        for listener in listeners:
            if listener.done():
                listener.result()  # a listener that could not connect: say why
        ready()
        tasks = [asyncio.ensure_future(KINDS[kind](ctx)) for kind in kinds]
        await stop.wait()
        # Every loop ends its current attempt within a few seconds of ``stop``; then cut what is left.
        _, late = await asyncio.wait(tasks, timeout=10)
        for task in [*late, *listeners]:
            task.cancel()
        await asyncio.gather(*tasks, *listeners, return_exceptions=True)
    return ctx


def summary(ctx: Ctx) -> dict[str, Any]:
    cuts = {
        kind: {"count": len(v), "max_s": round(max(v), 2), "min_s": round(min(v), 2)}
        for kind, v in ctx.cut_seconds.items()
        if v
    }
    return {"outcomes": {k: dict(v) for k, v in ctx.outcomes.items()}, "cuts": cuts}


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    reader = await stdin_reader()

    async def watch_stdin() -> None:
        while (line := await reader.readline()) and line.strip() != b"stop":
            pass
        stop.set()

    watcher = asyncio.ensure_future(watch_stdin())
    ctx = await run(args.relay, args.kinds.split(","), stop, lambda: print("ready", flush=True))
    watcher.cancel()
    print(json.dumps(summary(ctx)), flush=True)


def run_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--relay", required=True)
    parser.add_argument("--kinds", default=",".join(KINDS))
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    run_cli()
