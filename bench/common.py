"""Shared pieces of the harness: keys, URLs, child processes, /proc readings, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyco.protocol.sas import create_token

ROOT = Path(__file__).resolve().parent.parent
KEY_NAME = "RootManageSharedAccessKey"
KEY = "YmVuY2gtb25seS1rZXktbmV2ZXItdXNlLWl0LWFueXdoZXJlLWVsc2U="
PATH = "bench"
#: One 64 KiB message of the stream scenarios (random, so nothing can compress or shortcut it).
BLOCK = bytes(zlib.crc32(i.to_bytes(4, "big")) & 0xFF for i in range(256)) * 256
MSG = 64 * 1024
assert len(BLOCK) == MSG
SMALL = b"x" * 64
#: Every wait in the harness is bounded by this (seconds); a scenario that hangs is cut and reported.
STEP_TIMEOUT = 120.0


def relay_config_text(port: int = 0, tls_dir: Path | None = None) -> str:
    """The relay's TOML: one namespace rule, one hybrid connection with generous deadlines.

    With ``tls_dir`` the relay serves wss with a development certificate for 127.0.0.1 minted there (the CA
    to trust is ``tls_dir/tls/ca.pem``).
    """
    tls = f'data_dir = "{tls_dir}"\n[server.tls]\nself_signed = ["127.0.0.1"]\n' if tls_dir else ""
    return (
        f'[server]\nlisten = "127.0.0.1:{port}"\n{tls}'
        f"[limits]\naccept_timeout = 60\nmax_hybrid_connections = 10\n"
        # Every client runs on 127.0.0.1: lift the per-source limits above what the scenarios open.
        f"max_connections_per_source = 100000\nhandshake_rate_per_source = 1000000\n"
        f'[[authorization_rules]]\nname = "{KEY_NAME}"\nprimary_key = "{KEY}"\nrights = ["Manage"]\n'
        f'[[hybrid_connections]]\npath = "{PATH}"\nrequest_timeout = 600\n'
    )


def token(relay_url: str, path: str = PATH) -> str:
    """A Manage token for ``path`` on the relay at ``relay_url``, valid for two hours."""
    host = relay_url.split("://", 1)[1].split(":")[0]
    return create_token(f"http://{host}/{path}/", KEY_NAME, KEY, int(time.time()) + 7200)


def auth_headers(relay_url: str) -> dict[str, str]:
    return {"ServiceBusAuthorization": token(relay_url)}


def connect_url(relay_url: str, path: str = PATH) -> str:
    return f"{relay_url}/$hc/{path}?sb-hc-action=connect"


def listen_url(relay_url: str, listener_id: str, path: str = PATH) -> str:
    return f"{relay_url}/$hc/{path}?sb-hc-action=listen&sb-hc-id={listener_id}"


async def stdin_reader() -> asyncio.StreamReader:
    """This process's standard input as an asyncio stream (the harness drives its children through it).

    Raises:
        OSError, ValueError: stdin cannot be watched (not a pipe, or closed).
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- event loop -----------------------------------------------------------------------------------


def run(main: Coroutine[Any, Any, Any], loop: str) -> Any:
    """Run ``main`` on uvloop or the default asyncio loop."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# --- /proc ----------------------------------------------------------------------------------------


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes."""
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) * 1024 if match else 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (all its threads) and its live descendants (the
    workers of ``hyco relay --workers N``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            children += map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    for child in children:
        with contextlib.suppress(OSError):  # it ended meanwhile
            own += cpu_seconds(child)
    return own


def accept_queue(port: int) -> int:
    """Connections the kernel completed on the listening socket of ``port`` that nobody accepted yet (the
    ``rx_queue`` of a LISTEN socket in /proc/net/tcp; 0 when there is no such socket)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return int(fields[4].split(":")[1], 16)
    return 0


def open_files(pid: int) -> tuple[int, int]:
    """(open descriptors, soft limit) of ``pid``."""
    count = len(os.listdir(f"/proc/{pid}/fd"))
    limit = 0
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            limit = int(line.split()[3])
    return count, limit


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    import aiohttp

    versions = {"python": sys.version.split()[0], "aiohttp": aiohttp.__version__}
    with contextlib.suppress(ImportError):
        import uvloop

        versions["uvloop"] = uvloop.__version__
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "kernel": os.uname().release,
        "open_files_limit": __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE),
        "load_before": os.getloadavg(),
        **versions,
    }


# --- statistics -----------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


# --- child processes ------------------------------------------------------------------------------


def die_with_parent() -> None:
    """Run in the child before exec: SIGTERM it when the harness dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class Child:
    """A child process of the harness speaking a line protocol on stdin/stdout."""

    name: str
    proc: asyncio.subprocess.Process
    ready: str = ""
    cpu_start: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def line(self, timeout: float = STEP_TIMEOUT) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise RuntimeError(f"{self.name} exited (code {await self.proc.wait()})")
        return raw.decode().strip()

    async def command(self, text: str, timeout: float = STEP_TIMEOUT) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.line(timeout)

    def mark_cpu(self) -> None:
        with contextlib.suppress(OSError):
            self.cpu_start = cpu_seconds(self.pid)

    def cpu_since_mark(self) -> float:
        try:
            return cpu_seconds(self.pid) - self.cpu_start
        except OSError:
            return 0.0

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()


async def spawn(
    name: str,
    args: list[str],
    *,
    ready_prefix: str = "ready",
    stderr: Any = None,
    module: str = "bench.proc",
    prefix: tuple[str, ...] = (),
) -> Child:
    """Start ``[PREFIX...] python -m MODULE ARGS`` and wait for its ``ready ...`` line."""
    proc = await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-m",
        module,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr if stderr is not None else asyncio.subprocess.DEVNULL,
        cwd=str(ROOT),
        limit=1 << 20,
        preexec_fn=die_with_parent,
    )
    child = Child(name, proc)
    try:
        while True:
            line = await child.line(30)
            if line.startswith(ready_prefix):
                child.ready = line[len(ready_prefix) :].strip()
                break
    except BaseException:
        await child.stop()
        raise
    return child


@contextlib.asynccontextmanager
async def children() -> AsyncIterator[Callable[..., Coroutine[Any, Any, Child]]]:
    """Start children with the yielded function; all are stopped on exit."""
    started: list[Child] = []

    async def start(name: str, args: list[str], **kwargs: Any) -> Child:
        child = await spawn(name, args, **kwargs)
        started.append(child)
        return child

    try:
        yield start
    finally:
        for child in reversed(started):
            await child.stop()


def find_haproxy() -> str | None:
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )


def haproxy_config(port: int, backend_port: int, maxconn: int) -> str:
    return (
        f"global\n  maxconn {maxconn}\n  log stderr format raw local0 emerg\n"
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 600s\n  timeout server 600s\n"
        f"frontend bench\n  bind 127.0.0.1:{port}\n  maxconn {maxconn}\n  default_backend direct\n"
        f"backend direct\n  server direct 127.0.0.1:{backend_port} maxconn {maxconn}\n"
    )


async def start_haproxy(binary: str, workdir: Path, backend_port: int, maxconn: int = 9900) -> Child:
    """haproxy as a plain TCP proxy in front of the direct server; ready once its port accepts."""
    port = free_port()
    cfg = workdir / f"haproxy-{port}.cfg"
    cfg.write_text(haproxy_config(port, backend_port, maxconn))
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-db",
        "-f",
        str(cfg),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    child = Child("haproxy", proc, ready=f"127.0.0.1:{port}")
    deadline = time.monotonic() + 10
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return child
        except OSError:
            if proc.returncode is not None or time.monotonic() > deadline:
                await child.stop()
                raise RuntimeError("haproxy did not start") from None
            await asyncio.sleep(0.05)
