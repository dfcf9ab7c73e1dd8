"""The harness's child processes: ``python -m bench.proc KIND [--loop uvloop|asyncio] ...``.

Each prints one ``ready ...`` line on stdout once it serves, then runs until SIGTERM or until its stdin
closes (so nothing outlives the harness).

* ``relay --config FILE [--log-level LEVEL]``: the hyco relay (``hyco.server.serve``, as ``hyco relay``
  runs it), logging at warning level (the per-connection info lines are off) unless told otherwise.
* ``direct``: the baseline, a plain aiohttp server with the WebSocket and HTTP application of the listener.
* ``listener --relay URL --count N``: N raw control channels (protocol.md 2) on one relay; accepted
  connections run the WebSocket application, relayed HTTP requests are answered inline on the control channel
  (protocol.md 4.2) or over a request rendezvous with a streamed body (4.3).
* ``holder --url URL [--relay]``: opens connections on ``open N`` (stdin), each proven alive by one echo, and
  holds them until ``close``; for the concurrency scenario.
* ``tcp``: the plain TCP server of scenario 6 (:func:`serve_tcp`); prints ``ready 127.0.0.1:PORT``.
* ``forward --relay URL (--local SPEC | --remote SPEC)``: one side of ``hyco forward`` (scenario 6): the
  ``Forwarder`` the CLI builds from ``-L``/``-R`` and ``-x CONNSTR``, on the loop chosen with ``--loop``;
  prints ``ready ADDR`` (``-L``: where it listens) once it serves (``-R``: once its control channel is
  online).

The WebSocket application (:func:`serve_ws`): a binary message is echoed; text ``sink N`` reads N bytes of
binary messages and answers ``ok N CRC32``; text ``source N`` sends N bytes in 64 KiB messages, then
``done N CRC32``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import struct
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp._websocket.helpers import websocket_mask

from bench.common import (
    BLOCK,
    KEY,
    KEY_NAME,
    MSG,
    SMALL,
    auth_headers,
    connect_url,
    listen_url,
    run,
    stdin_reader,
)
from hyco.protocol.frames import FrameParser, Opcode

WS_MAX = 16 * 1024 * 1024


# --- the application, the same behind the relay and behind the direct server ----------------------


async def serve_ws(ws: Any) -> None:
    """The WebSocket application on one connection (server or client object of aiohttp)."""
    while True:
        msg = await ws.receive()
        if msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
        elif msg.type is WSMsgType.TEXT:
            command, _, arg = msg.data.partition(" ")
            size = int(arg)
            if command == "sink":
                crc = got = 0
                while got < size:
                    part = await ws.receive()
                    if part.type is not WSMsgType.BINARY:
                        return
                    crc = zlib.crc32(part.data, crc)
                    got += len(part.data)
                await ws.send_str(f"ok {got} {crc}")
            elif command == "source":
                crc = sent = 0
                while sent < size:
                    piece = BLOCK if size - sent >= MSG else BLOCK[: size - sent]
                    await ws.send_bytes(piece)
                    crc = zlib.crc32(piece, crc)
                    sent += len(piece)
                await ws.send_str(f"done {sent} {crc}")
        else:
            return  # CLOSE (answered by autoclose), CLOSED, ERROR


def http_answer(method: str, target: str, body: bytes | None) -> tuple[int, bytes]:
    """Small requests of the HTTP scenario: ``GET .../small``; anything else with a body is summed."""
    if body is not None:
        return 200, f"{len(body)} {zlib.crc32(body)}".encode()
    return 200, SMALL


def big_size(target: str) -> int:
    return int(parse_qs(urlsplit(target).query).get("size", ["0"])[0])


# --- direct server --------------------------------------------------------------------------------


async def direct_main(args: argparse.Namespace) -> None:
    async def ws_handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=WS_MAX, compress=False)
        await ws.prepare(request)
        await serve_ws(ws)
        return ws

    async def small(request: web.Request) -> web.Response:
        status, data = http_answer(request.method, str(request.rel_url), None)
        return web.Response(status=status, body=data, content_type="application/octet-stream")

    async def big(request: web.Request) -> web.StreamResponse:
        size = big_size(str(request.rel_url))
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        sent = 0
        while sent < size:
            piece = BLOCK if size - sent >= MSG else BLOCK[: size - sent]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.Response:
        crc = got = 0
        async for chunk in request.content.iter_chunked(MSG):
            crc = zlib.crc32(chunk, crc)
            got += len(chunk)
        return web.Response(text=f"{got} {crc}")

    app = web.Application(client_max_size=1024**3)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/bench/small", small)
    app.router.add_get("/bench/big", big)
    app.router.add_route("*", "/bench/up", upload)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"ready http://127.0.0.1:{port}", flush=True)
    await until_stopped()
    await runner.cleanup()


# --- relay ----------------------------------------------------------------------------------------


async def relay_main(args: argparse.Namespace) -> None:
    from hyco.server import load_config, serve

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    config = load_config(Path(args.config))
    context = None
    if config.server.tls is not None:  # wss with a development certificate (bench.env's relay(tls=True))
        from hyco.server.tls import server_ssl_context

        assert config.server.data_dir is not None
        context, _ = server_ssl_context(config.server.tls, config.server.data_dir)
    async with serve(config, ssl_context=context) as relay:
        print(f"ready {relay.url}", flush=True)
        await until_stopped()


# --- raw listener ---------------------------------------------------------------------------------


class RawRendezvous:
    """A client WebSocket over a TCP stream, frame by frame (bodies stream as one fragmented message)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = FrameParser(max_frame_size=WS_MAX, expect_masked=False)
        self.frames: list[Any] = []

    @classmethod
    async def connect(cls, url: str) -> RawRendezvous:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n")[0].decode())
        return cls(reader, writer)

    async def frame(self) -> Any:
        while not self.frames:
            data = await self.reader.read(1 << 20)
            if not data:
                raise ConnectionError("closed")
            self.frames.extend(self.parser.feed(data))
        return self.frames.pop(0)

    def _write(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        length = len(payload)
        first = (0x80 if fin else 0) | opcode
        if length < 126:
            header = struct.pack("!BB", first, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", first, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, length)
        mask = os.urandom(4)
        data = bytearray(payload)
        websocket_mask(mask, data)
        self.writer.write(header + mask)
        self.writer.write(data)

    async def send_text(self, text: str) -> None:
        self._write(Opcode.TEXT, text.encode())
        await self.writer.drain()

    async def send_message(self, data: bytes) -> None:
        self._write(Opcode.BINARY, data)
        await self.writer.drain()

    async def send_stream(self, size: int) -> int:
        crc = sent = 0
        opcode = Opcode.BINARY
        while sent < size:
            piece = BLOCK if size - sent >= MSG else BLOCK[: size - sent]
            self._write(opcode, piece, fin=False)
            await self.writer.drain()
            opcode = Opcode.CONTINUATION
            crc = zlib.crc32(piece, crc)
            sent += len(piece)
        self._write(opcode, b"", fin=True)
        await self.writer.drain()
        return crc

    async def receive_text(self) -> str:
        frame = await self.frame()
        return bytes(frame.payload).decode()

    async def receive_stream(self) -> tuple[int, int]:
        crc = got = 0
        while True:
            frame = await self.frame()
            crc = zlib.crc32(frame.payload, crc)
            got += len(frame.payload)
            if frame.fin:
                return got, crc

    def close(self) -> None:
        self.writer.close()


def response_json(request_id: str, status: int, body: bool) -> str:
    return json.dumps({"response": {"requestId": request_id, "statusCode": status, "body": body}})


async def answer_by_rendezvous(request: dict[str, Any]) -> None:
    """A stub (protocol.md 2.4: no method) or a big download: dial the request rendezvous."""
    rendezvous = await RawRendezvous.connect(request["address"])
    try:
        if "method" not in request:
            full = json.loads(await rendezvous.receive_text())["request"]
            got, crc = await rendezvous.receive_stream() if full.get("body") else (0, 0)
            await rendezvous.send_text(response_json(full["id"], 200, True))
            await rendezvous.send_message(f"{got} {crc}".encode())
        else:
            await rendezvous.send_text(response_json(request["id"], 200, True))
            await rendezvous.send_stream(big_size(request["requestTarget"]))
        # The relay closes the rendezvous once the response is delivered.
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(rendezvous.frame(), 60)
    finally:
        rendezvous.close()


async def control_channel(session: aiohttp.ClientSession, relay: str, tasks: set[asyncio.Task[Any]]) -> None:
    ws = await session.ws_connect(
        listen_url(relay, str(uuid.uuid4())), headers=auth_headers(relay), max_msg_size=WS_MAX, heartbeat=None
    )

    def spawn(coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def accepted(address: str) -> None:
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            peer = await session.ws_connect(address, max_msg_size=WS_MAX)
            try:
                await serve_ws(peer)
            finally:
                await peer.close()

    async def run_channel() -> None:
        waiting: dict[str, Any] | None = None  # an inline request whose body is the next binary message
        async for msg in ws:
            if msg.type is WSMsgType.BINARY and waiting is not None:
                status, data = http_answer(waiting["method"], waiting["requestTarget"], msg.data)
                await ws.send_str(response_json(waiting["id"], status, True))
                await ws.send_bytes(data)
                waiting = None
                continue
            if msg.type is not WSMsgType.TEXT:
                continue
            command = json.loads(msg.data)
            if "accept" in command:
                spawn(accepted(command["accept"]["address"]))
            elif "request" in command:
                request = command["request"]
                if "method" not in request or "/big" in request["requestTarget"]:
                    spawn(answer_by_rendezvous(request))
                elif request.get("body"):
                    waiting = request
                else:
                    status, data = http_answer(request["method"], request["requestTarget"], None)
                    await ws.send_str(response_json(request["id"], status, True))
                    await ws.send_bytes(data)

    spawn(run_channel())


async def listener_main(args: argparse.Namespace) -> None:
    tasks: set[asyncio.Task[Any]] = set()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(args.count):
            await control_channel(session, args.relay, tasks)
        print(f"ready {args.count}", flush=True)
        await until_stopped()
        for task in list(tasks):
            task.cancel()


# --- holder: many connections held open -----------------------------------------------------------


async def open_one(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    gate: asyncio.Semaphore,
    held: list[aiohttp.ClientWebSocketResponse],
    failures: list[str],
) -> None:
    """Open one connection and prove it alive with one echo; it stays in ``held``."""
    async with gate:
        try:
            ws = await asyncio.wait_for(session.ws_connect(url, headers=headers, heartbeat=None), 30)
            held.append(ws)
            await ws.send_bytes(SMALL)
            msg = await asyncio.wait_for(ws.receive(), 30)
            if msg.type is not WSMsgType.BINARY or msg.data != SMALL:
                raise ConnectionError(f"no echo: {msg.type}")
        except Exception as exc:
            failures.append(repr(exc)[:200].replace("\n", " "))


async def holder_main(args: argparse.Namespace) -> None:
    held: list[aiohttp.ClientWebSocketResponse] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    if args.mode == "relay":
        url, headers = connect_url(args.url), auth_headers(args.url)
    else:
        url, headers = f"{args.url}/ws", {}
    async with aiohttp.ClientSession(connector=connector) as session:
        print("ready", flush=True)
        reader = await stdin_reader()
        while line := (await reader.readline()).decode().split():
            if line[0] == "open":
                count, concurrency = int(line[1]), int(line[2])
                gate = asyncio.Semaphore(concurrency)
                failures: list[str] = []
                started = time.perf_counter()
                await asyncio.gather(
                    *(open_one(session, url, headers, gate, held, failures) for _ in range(count))
                )
                elapsed = time.perf_counter() - started
                first = failures[0] if failures else ""
                print(f"opened {count - len(failures)} {len(failures)} {elapsed:.6f} {first}", flush=True)
            elif line[0] == "close":
                await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
                held.clear()
                print("closed", flush=True)


# --- scenario 6: a plain TCP server and the two sides of hyco forward ------------------------------

#: Largest read of the TCP server and clients of scenario 6; writes go in 16 x 64 KiB pieces.
TCP_READ = 1 << 20
BIG = BLOCK * 16


async def serve_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Commands, one per line, on one connection until EOF: ``sink N`` reads N bytes and answers
    ``ok N CRC32``; ``source N`` sends N bytes of the repeated block; ``echo`` echoes everything until EOF.
    """
    try:
        while line := (await reader.readline()).decode().split():
            if line[0] == "echo":
                while data := await reader.read(TCP_READ):
                    writer.write(data)
                    await writer.drain()
                break
            size = int(line[1])
            if line[0] == "sink":
                crc = got = 0
                while got < size:
                    data = await reader.read(min(TCP_READ, size - got))
                    if not data:
                        return
                    crc = zlib.crc32(data, crc)
                    got += len(data)
                writer.write(f"ok {got} {crc}\n".encode())
                await writer.drain()
            elif line[0] == "source":
                sent = 0
                while sent < size:
                    piece = BIG if size - sent >= len(BIG) else BIG[: size - sent]
                    writer.write(piece)
                    await writer.drain()
                    sent += len(piece)
    except (ConnectionError, ValueError, IndexError):
        pass
    finally:
        writer.close()


async def tcp_main(args: argparse.Namespace) -> None:
    server = await asyncio.start_server(serve_tcp, "127.0.0.1", 0, limit=4 * TCP_READ, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"ready 127.0.0.1:{port}", flush=True)
    await until_stopped()
    server.close()


async def forward_main(args: argparse.Namespace) -> None:
    from hyco.tools.forward import Forwarder, LocalForward, RelayCredentials, RemoteForward

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    endpoint = args.relay.replace("wss://", "sb://", 1)  # sb:// is TLS
    connection_string = f"Endpoint={endpoint}/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY}"
    client_options = {"ca_file": args.ca_file} if args.ca_file else None
    credentials = RelayCredentials.from_connection_string(connection_string, client_options=client_options)
    local = [LocalForward.parse(args.local)] if args.local else []
    remote = [RemoteForward.parse(args.remote)] if args.remote else []
    options = {"chunk_size": args.chunk_size} if args.chunk_size else {}  # default: the CLI's (64 KiB)
    async with Forwarder(local, remote, credentials, **options) as forwarder:
        await forwarder.wait_online(30)
        addresses = [a for f in forwarder.local for a in f.addresses]
        print("ready " + (f"{addresses[0][0]}:{addresses[0][1]}" if addresses else "online"), flush=True)
        await until_stopped()


# --- plumbing -------------------------------------------------------------------------------------


async def until_stopped() -> None:
    """Wait for SIGTERM/SIGINT or for stdin to close."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(OSError, ValueError):
        reader = await stdin_reader()

        async def watch_stdin() -> None:
            while await reader.read(4096):
                pass
            stop.set()

        watcher = asyncio.ensure_future(watch_stdin())
    await stop.wait()
    with contextlib.suppress(NameError):
        watcher.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.proc")
    parser.add_argument("kind", choices=["relay", "direct", "listener", "holder", "tcp", "forward"])
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--config")
    parser.add_argument("--log-level", default="warning", help="the relay's log level")
    parser.add_argument("--relay")
    parser.add_argument("--url")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--mode", choices=["relay", "direct"], default="direct")
    parser.add_argument("--local", help="forward: a -L mapping, e.g. 127.0.0.1:0:bench")
    parser.add_argument("--remote", help="forward: a -R mapping, e.g. bench:127.0.0.1:PORT")
    parser.add_argument("--chunk-size", type=int, default=0, help="forward: largest read (experiments only)")
    parser.add_argument("--ca-file", help="forward: the CA of a wss relay")
    args = parser.parse_args()
    entry = {
        "relay": relay_main,
        "direct": direct_main,
        "listener": listener_main,
        "holder": holder_main,
        "tcp": tcp_main,
        "forward": forward_main,
    }
    with contextlib.suppress(KeyboardInterrupt):
        run(entry[args.kind](args), args.loop)


if __name__ == "__main__":
    main()
