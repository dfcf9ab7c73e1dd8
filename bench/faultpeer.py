"""The sides of a relayed connection as bench.faults drives them, each able to stop at a point of its life.

The victim runs as a child process (``python -m bench.faultpeer --relay URL --role R --point P``): it prints
``ready``, waits for a line on stdin, connects, prints ``online`` once its control channel is up (listener)
or its upgrade request is written (sender), then ``at-point`` once it reached ``P``, where the driver kills
it (or the relay). The points, in the order a connection lives them:

* ``handshake``: the sender's upgrade request waits for a listener; the listener has the accept command and
  has not dialed.
* ``dial``: the listener has written half of its rendezvous upgrade request (the sender still waits).
* ``stream``: data flows both ways (the victim echoes what the survivor streams).
* ``close``: the victim echoed one message and then sent a Close; the answer is not read.

The survivor's side (in the driver) uses :class:`RawDial` to dial a rendezvous in two halves around the fault.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import uuid
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType

from bench.common import auth_headers, connect_url, listen_url, stdin_reader
from hyco.protocol.frames import FrameParser, Opcode, parse_close

POINTS = ("handshake", "dial", "stream", "close")


def upgrade_request(url: str, headers: dict[str, str] | None = None) -> tuple[str, int, bytes]:
    """``(host, port, request)``: a WebSocket upgrade request for ``url`` (plain ws) as raw bytes."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()
    return str(parts.hostname), int(parts.port or 80), request


class RawDial:
    """A WebSocket dial written in two halves (a fault can fall between them), then read to its end."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
        self.reader, self.writer = reader, writer
        self._rest = request

    @classmethod
    async def open(cls, url: str, headers: dict[str, str] | None = None) -> RawDial:
        host, port, request = upgrade_request(url, headers)
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, request)

    async def write_half(self) -> None:
        """Write the first half of the request (the relay waits for the rest)."""
        half = len(self._rest) // 2
        self.writer.write(self._rest[:half])
        self._rest = self._rest[half:]
        await self.writer.drain()

    async def write_all(self) -> None:
        """Write the whole request without reading the answer."""
        self.writer.write(self._rest)
        self._rest = b""
        await self.writer.drain()

    async def finish(self) -> str:
        """Write the rest and read the answer: ``handshake N``, or after a 101 ``close N`` / ``lost``."""
        try:
            self.writer.write(self._rest)
            await self.writer.drain()
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            return f"lost ({type(exc).__name__})"
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            return f"handshake {status}"
        parser = FrameParser(max_frame_size=1 << 20, expect_masked=False)
        while True:
            try:
                data = await self.reader.read(65536)
            except ConnectionError as exc:
                return f"lost ({type(exc).__name__})"
            if not data:
                return "lost (EOF)"
            for frame in parser.feed(data):
                if frame.opcode is Opcode.CLOSE:
                    return f"close {parse_close(frame.payload)[0]}"

    def close(self) -> None:
        self.writer.close()


async def victim(relay: str, role: str, point: str) -> None:
    """Go to ``point`` as ``role``, print ``at-point``, and stay there (or keep echoing) until killed."""
    stdin = await stdin_reader()
    print("ready", flush=True)
    await stdin.readline()
    async with aiohttp.ClientSession() as session:
        if role == "listener":
            control = await session.ws_connect(
                listen_url(relay, str(uuid.uuid4())), headers=auth_headers(relay), heartbeat=None
            )
            print("online", flush=True)
            address = json.loads((await control.receive()).data)["accept"]["address"]
            if point in ("handshake", "dial"):
                if point == "dial":
                    await (await RawDial.open(address)).write_half()
                print("at-point", flush=True)
                await asyncio.Event().wait()
            ws = await session.ws_connect(address, heartbeat=None)
        elif point in ("handshake", "dial"):  # the sender's handshake waits while the listener dials
            dial = await RawDial.open(connect_url(relay), auth_headers(relay))
            await dial.write_all()
            print("online", flush=True)
            print("at-point", flush=True)
            await asyncio.Event().wait()
        else:
            print("online", flush=True)
            ws = await session.ws_connect(connect_url(relay), headers=auth_headers(relay), heartbeat=None)
        echoed = False
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
                if not echoed:
                    echoed = True
                    if point == "close":
                        await ws._writer.close(
                            1000, b""
                        )  # the Close alone: aiohttp's close() waits for the answer
                    print("at-point", flush=True)
                    if point == "close":
                        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--relay", required=True)
    parser.add_argument("--role", choices=("listener", "sender"), required=True)
    parser.add_argument("--point", choices=POINTS, required=True)
    args = parser.parse_args()
    asyncio.run(victim(args.relay, args.role, args.point))


if __name__ == "__main__":
    main()
