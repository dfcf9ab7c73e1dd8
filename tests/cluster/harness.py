"""Real parts for cluster tests: a nats-server with JetStream, hyco relay nodes as processes, haproxy.

Everything binds 127.0.0.1 port 0 and reports its address: nats-server in its log line, each node in its
banner, haproxy on a listening socket the test opens and hands over (``bind fd@N``). Every process is killed
when its context exits. :class:`NetCut` is a TCP pass-through a test can cut, to partition one node from NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hyco import HybridConnectionClient, HybridConnectionListener, TokenProvider
from tests.conftest import KEY, KEY_NAME, TIMEOUT

BIN = Path(sys.executable).parent
HYCO = BIN / "hyco"
NATS_SERVER = BIN / "nats-server"
READY = re.compile(r"^hyco relay ready on ws://127\.0\.0\.1:(\d+)$")
NATS_READY = re.compile(rb"Listening for client connections on [0-9.]+:(\d+)")

NODE_CONFIG = f"""\
[server]
create_on_listen = false

[[authorization_rules]]
name = "{KEY_NAME}"
primary_key = "{KEY}"
rights = ["Manage", "Listen", "Send"]

[[hybrid_connections]]
path = "echo"

[[hybrid_connections]]
path = "spread"

[limits]
accept_timeout = {{accept_timeout}}
handshake_rate_per_source = {{handshake_rate}}
"""


def require_haproxy() -> str:
    """haproxy's path; skips (with the reason) only where it is not installed (scripts/test installs it)."""
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if path is None:
        pytest.skip("haproxy is not installed (scripts/test runs `apt-get install -y haproxy` as root)")
    return path


class Drain:
    """Reads a process's stream into a buffer so the process never blocks on a full pipe."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.data = bytearray()
        self._task = asyncio.ensure_future(self._run(stream))

    async def _run(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.data += chunk

    def text(self, last: int = 3000) -> str:
        return self.data.decode("utf-8", "replace")[-last:]

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await asyncio.wait_for(proc.wait(), TIMEOUT)


@dataclass
class NatsServer:
    """A nats-server with JetStream; :meth:`stop` and :meth:`start` again reuse its port."""

    store: Path
    port: int = 0
    proc: asyncio.subprocess.Process | None = None
    log: Drain | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            str(NATS_SERVER),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port or -1),
            "-js",
            "-sd",
            str(self.store),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        seen = b""
        async with asyncio.timeout(TIMEOUT):
            while (match := NATS_READY.search(seen)) is None:
                line = await self.proc.stderr.readline()
                assert line, f"nats-server ended: {seen.decode()}"
                seen += line
            while b"Server is ready" not in seen:
                line = await self.proc.stderr.readline()
                assert line, f"nats-server ended: {seen.decode()}"
                seen += line
        self.port = int(match.group(1))
        self.log = Drain(self.proc.stderr)

    async def stop(self) -> None:
        if self.proc is not None:
            await _kill(self.proc)
        if self.log is not None:
            await self.log.stop()


class _OnLocalPort:
    """Something reached at ``ws://`` / ``http://`` on 127.0.0.1:``port``."""

    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class RelayNode(_OnLocalPort):
    """One ``hyco relay --cluster`` process."""

    node_id: str
    proc: asyncio.subprocess.Process
    port: int
    stdout: Drain
    stderr: Drain

    def describe(self) -> str:
        return f"node {self.node_id} (exit {self.proc.returncode}): {self.stderr.text()}"

    async def health(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
            session.get(f"{self.http_url}/$health") as response,
        ):
            assert response.status == 200, self.describe()
            body: dict[str, Any] = await response.json()
            return body

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)


async def wait_until(check: Any, what: str, timeout: float = TIMEOUT) -> Any:
    """Poll ``await check()`` (``/$health`` reads: the relay exposes nothing to wait on) until truthy."""
    async with asyncio.timeout(timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(0.05)
    raise AssertionError(what)  # pragma: no cover - the timeout raises first


@contextlib.asynccontextmanager
async def relay_node(
    tmp: Path,
    node_id: str,
    nats_url: str,
    *,
    lease_seconds: float = 3.0,
    accept_timeout: float = 5.0,
    handshake_rate: float = 200.0,
) -> AsyncIterator[RelayNode]:
    """Start a cluster node on 127.0.0.1:0; yields once its banner says it is ready; always killed.

    ``handshake_rate``: the per-source rate limit (every client here is 127.0.0.1; a benchmark raises it).
    """
    data = tmp / node_id
    data.mkdir(parents=True, exist_ok=True)
    config = data / "relay.toml"
    config.write_text(
        NODE_CONFIG.format(accept_timeout=accept_timeout, handshake_rate=handshake_rate)
        + f'\n[cluster]\nnats = "{nats_url}"\nlease_seconds = {lease_seconds}\nrequest_timeout = 1.0\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYCO_")}
    env.update(HYCO_DATA_DIR=str(data), PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        str(HYCO),
        "relay",
        "--config",
        str(config),
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        node_id,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr = Drain(proc.stderr)
    try:
        port = 0
        async with asyncio.timeout(TIMEOUT):
            while not port:
                line = (await proc.stdout.readline()).decode().rstrip("\n")
                assert line, f"node {node_id} ended before its banner: {stderr.text()}"
                if match := READY.match(line):
                    port = int(match.group(1))
        node = RelayNode(node_id, proc, port, Drain(proc.stdout), stderr)
        yield node
    finally:
        await _kill(proc)
        await stderr.stop()


@dataclass
class Haproxy(_OnLocalPort):
    """haproxy, round-robin over the nodes, on a port-0 socket handed to it."""

    port: int
    proc: asyncio.subprocess.Process
    log: Drain = field(repr=False)


@contextlib.asynccontextmanager
async def haproxy(tmp: Path, nodes: list[RelayNode]) -> AsyncIterator[Haproxy]:
    """Start haproxy in TCP mode with fast health checks and redispatch (a dead node is skipped)."""
    exe = require_haproxy()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    servers = "\n".join(
        f"    server {n.node_id} 127.0.0.1:{n.port} check inter 300ms fall 1 rise 1" for n in nodes
    )
    config = tmp / "haproxy.cfg"
    config.write_text(
        f"""global
    maxconn 4000
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout tunnel 60s
    retries 3
    option redispatch
frontend relay
    bind fd@{sock.fileno()}
    default_backend nodes
backend nodes
    balance roundrobin
{servers}
"""
    )
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-db",
        "-f",
        str(config),
        pass_fds=(sock.fileno(),),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    port = sock.getsockname()[1]
    sock.close()  # haproxy holds its own copy
    log = Drain(proc.stderr)
    try:
        balancer = Haproxy(port, proc, log)

        async def answers() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
                    session.get(f"{balancer.http_url}/$health") as response,
                ):
                    return response.status == 200
            return False

        await wait_until(answers, f"haproxy did not answer: {log.text()}")
        yield balancer
    finally:
        await _kill(proc)
        await log.stop()


class NetCut:
    """A TCP pass-through to ``target`` on 127.0.0.1:0 that a test can :meth:`cut` (drop every connection
    and refuse new ones) and :meth:`heal`: a real network partition between one node and NATS."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.cut_now = False
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_now:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.close()
            return
        self._open.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._open.difference_update((writer, up_writer))

    def cut(self) -> None:
        self.cut_now = True
        for writer in list(self._open):
            writer.transport.abort()

    def heal(self) -> None:
        self.cut_now = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


TOKENS = TokenProvider.from_shared_access_key(KEY_NAME, KEY)


@contextlib.asynccontextmanager
async def tagged_listener(url: str, tag: str, **options: Any) -> AsyncIterator[HybridConnectionListener]:
    """An SDK listener on ``url`` (``ws://host:port/path``): every stream first gets ``tag``, then echoes."""

    async def serve(stream: Any) -> None:
        with contextlib.suppress(Exception):
            async with stream:
                await stream.send_text(tag)
                async for message in stream:
                    await (
                        stream.send_text(message) if isinstance(message, str) else stream.send_bytes(message)
                    )

    async with HybridConnectionListener(url, TOKENS, reconnect_delays=(0, 0.2), **options) as listener:
        tasks: set[asyncio.Task[None]] = set()

        async def accept_all() -> None:
            async for stream in listener:
                task = asyncio.ensure_future(serve(stream))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        acceptor = asyncio.ensure_future(accept_all())
        try:
            yield listener
        finally:
            acceptor.cancel()
            for task in list(tasks):
                task.cancel()


async def open_tagged(url: str) -> tuple[Any, str]:
    """Connect a sender to ``url``; returns the open stream and the tag of the listener that took it."""
    stream = await asyncio.wait_for(HybridConnectionClient(url, TOKENS).connect(), TIMEOUT)
    tag = await asyncio.wait_for(stream.receive(), TIMEOUT)
    return stream, tag


async def ask(url: str) -> str:
    """Which listener answers a sender on ``url``."""
    stream, tag = await open_tagged(url)
    await stream.close()
    return str(tag)
