"""What a scenario works with: options, the processes under test, results, and the relay profiler."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp

from bench import tunnels
from bench.common import (
    BLOCK,
    MSG,
    Child,
    auth_headers,
    connect_url,
    relay_config_text,
    spawn,
    start_haproxy,
)

#: Every peer a figure can have; the tunnels only in scenario 6.
TARGETS = ("hyco", "hyco-wss", "direct", "haproxy", *tunnels.NAMES)


@dataclass
class Options:
    quick: bool
    loop: str
    workdir: Path
    haproxy: str | None
    profile_dir: Path | None = None
    run_index: int = 0
    pyspy: str | None = None
    tunnels: list[tunnels.Prepared] = field(default_factory=list)
    #: ``hyco relay --workers N`` (the CLI, on uvloop when installed) instead of one in-process relay.
    workers: int = 1


@dataclass
class Metric:
    """One figure of one scenario, measured for each target (``hyco``, ``direct``, ``haproxy``)."""

    key: str
    label: str
    unit: str
    better: str  # "higher" or "lower"
    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


@cache
def expected_crc(size: int) -> int:
    """CRC32 of ``size`` bytes of the repeated 64 KiB block (computed once, outside any timing)."""
    crc = sent = 0
    while sent < size:
        piece = BLOCK if size - sent >= MSG else BLOCK[: size - sent]
        crc = zlib.crc32(piece, crc)
        sent += len(piece)
    return crc


class Env:
    """The processes of one scenario run; everything started here is stopped by :meth:`close`."""

    def __init__(self, options: Options, scenario: int) -> None:
        self.options = options
        self.scenario = scenario
        self.children: list[Child] = []
        self.haproxy_note = "" if options.haproxy else "haproxy not found (apt-get install haproxy)"

    @property
    def quick(self) -> bool:
        return self.options.quick

    async def _track(self, child: Child) -> Child:
        self.children.append(child)
        return child

    async def relay(self, *, tls: bool = False) -> Child:
        """The relay in its own process; with ``tls`` it serves wss (CA: :meth:`relay_ca`); with
        ``--workers`` above 1, the CLI's relay with that many workers (no TLS: workers refuse it)."""
        name = "relay-tls" if tls else "relay"
        cfg = self.options.workdir / f"{name}.toml"
        cfg.write_text(relay_config_text(tls_dir=self.options.workdir / name if tls else None))
        level = os.environ.get("HYCO_BENCH_RELAY_LOG")  # experiments: the cost of the info lines
        if self.options.workers > 1 and not tls:
            args = ["relay", "--config", str(cfg), "--workers", str(self.options.workers)]
            args += ["--log-level", level or "warning"]
            child = await spawn("relay", args, module="hyco", ready_prefix="hyco relay ready on")
            return await self._track(child)
        args = ["relay", "--loop", self.options.loop, "--config", str(cfg)]
        if level:
            args += ["--log-level", level]
        return await self._track(await spawn(name, args))

    def relay_ca(self) -> Path:
        """The CA file that signs the certificate of ``relay(tls=True)``."""
        return self.options.workdir / "relay-tls" / "tls" / "ca.pem"

    async def direct(self) -> Child:
        return await self._track(await spawn("direct", ["direct", "--loop", self.options.loop]))

    async def listener(self, relay: Child, count: int = 1) -> Child:
        args = ["listener", "--loop", self.options.loop, "--relay", relay.ready, "--count", str(count)]
        return await self._track(await spawn("listener", args))

    async def holder(self, url: str, mode: str) -> Child:
        args = ["holder", "--loop", self.options.loop, "--url", url, "--mode", mode]
        return await self._track(await spawn("holder", args))

    async def tcp_server(self) -> Child:
        """Scenario 6's plain TCP server; ``ready`` is ``127.0.0.1:PORT``."""
        return await self._track(await spawn("tcp", ["tcp", "--loop", self.options.loop]))

    async def forward(
        self,
        relay: Child,
        *,
        local: str | None = None,
        remote: str | None = None,
        ca_file: Path | None = None,
    ) -> Child:
        """One side of ``hyco forward`` (``-L local`` or ``-R remote``) on ``relay``, in its own process;
        ``ca_file`` to trust a wss relay."""
        args = ["forward", "--loop", self.options.loop, "--relay", relay.ready]
        args += ["--local", local] if local else ["--remote", remote or ""]
        if ca_file is not None:
            args += ["--ca-file", str(ca_file)]
        if chunk := os.environ.get("HYCO_BENCH_FORWARD_CHUNK"):  # experiments: another read size
            args += ["--chunk-size", chunk]
        name = "forward -L" if local else "forward -R"
        return await self._track(await spawn(name, args))

    async def tunnel(self, prepared: tunnels.Prepared, tcp_server: Child) -> tunnels.Tunnel:
        """``prepared``'s server and client carrying scenario 6's TCP server; both stopped by :meth:`close`.

        Raises:
            RuntimeError: it did not come up (see :func:`bench.tunnels.start`).
        """
        port = int(tcp_server.ready.rsplit(":", 1)[1])
        tunnel = await tunnels.start(prepared, self.options.workdir, port)
        await self._track(tunnel.server)
        await self._track(tunnel.client)
        return tunnel

    async def haproxy(self, direct: Child, maxconn: int = 9900) -> Child | None:
        if not self.options.haproxy:
            return None
        port = int(direct.ready.rsplit(":", 1)[1])
        try:
            child = await start_haproxy(self.options.haproxy, self.options.workdir, port, maxconn)
        except RuntimeError as exc:
            self.haproxy_note = f"haproxy failed to start: {exc}"
            return None
        return await self._track(child)

    async def stop(self, child: Child) -> None:
        await child.stop()
        with contextlib.suppress(ValueError):
            self.children.remove(child)

    async def close(self) -> None:
        for child in reversed(self.children):
            await child.stop()
        self.children.clear()

    # --- addresses ---

    def ws_targets(self, relay: Child, direct: Child, haproxy: Child | None) -> dict[str, str]:
        """WebSocket base URL per target (the relay's own URL for hyco)."""
        targets = {"hyco": relay.ready, "direct": "ws://" + direct.ready.split("://", 1)[1]}
        if haproxy is not None:
            targets["haproxy"] = f"ws://{haproxy.ready}"
        return targets

    def http_targets(self, relay: Child, direct: Child, haproxy: Child | None) -> dict[str, str]:
        targets = {"hyco": "http" + relay.ready[2:], "direct": direct.ready}
        if haproxy is not None:
            targets["haproxy"] = f"http://{haproxy.ready}"
        return targets

    async def open_ws(
        self, session: aiohttp.ClientSession, target: str, base: str
    ) -> aiohttp.ClientWebSocketResponse:
        if target == "hyco":
            return await session.ws_connect(
                connect_url(base), headers=auth_headers(base), max_msg_size=16 << 20, heartbeat=None
            )
        return await session.ws_connect(f"{base}/ws", max_msg_size=16 << 20, heartbeat=None)

    # --- profiling ---

    @contextlib.asynccontextmanager
    async def profiled(self, relay: Child, name: str, enabled: bool = True) -> AsyncIterator[None]:
        """Sample the relay process (or another child) with py-spy while the block runs (``--profile``,
        first run only)."""
        out_dir, pyspy = self.options.profile_dir, self.options.pyspy
        if not enabled or out_dir is None or pyspy is None or self.options.run_index:
            yield
            return
        out = out_dir / f"profile-{self.options.loop}-{name}.txt"
        proc = await asyncio.create_subprocess_exec(
            pyspy,
            "record",
            "--pid",
            str(relay.pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)  # let it attach
        try:
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
