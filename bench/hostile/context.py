"""What every hostile kind works with: the soak relay's entities and config, the run's context (sources,
counters, cut times), a raw WebSocket client for frames no library sends, and the worker loop."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from bench.common import KEY, KEY_NAME, token
from hyco.protocol.frames import Opcode, encode_frame

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
    #: How the hostile entities' control channels ended (each listener then comes back).
    listener_ends: Counter[str] = field(default_factory=Counter)

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
