"""Tunnels a user would pick instead of ``hyco forward``, as scenario 6's peers: rathole, frp (with TLS, its
default, and without: ``frp-notls``), chisel, bore.

Each is built from its registry by the bench setup (:func:`prepare`) into a cache directory
(``~/.cache/hyco-bench``, or ``$HYCO_BENCH_TOOLS``) the first time, so later runs start at once:

* rathole and bore: ``cargo install --version V --root CACHE CRATE`` (without ``--locked``: the newest
  compatible dependencies, as a user's plain ``cargo install`` gets them);
* frp (frps, frpc) and chisel: ``go get MODULE@V`` in a small module under the cache, then ``go install`` of
  the commands into ``CACHE/bin`` (``go install PKG@V`` asks the registry for the module's version list, which
  it refuses for these modules; an exact version is served).

A tool whose toolchain is missing, or whose build fails, is skipped with a printed reason; the build log is
kept in ``CACHE/logs``. Nothing here runs in the tests: they pass ``--tunnels none``.

Each tunnel runs as a server and a client process on 127.0.0.1 with ports the harness picks, carrying one
TCP service to scenario 6's TCP server; :func:`start` returns once a 1-byte echo has made it through.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bench.common import Child, die_with_parent, free_port

#: Longest a first build may take (seconds); compiling frp or rathole takes minutes on a small machine.
BUILD_TIMEOUT = 1800.0
#: Longest a tunnel may take from start to its first echo (seconds).
START_TIMEOUT = 30.0
#: bore's control port: fixed in bore (``shared::CONTROL_PORT``), not configurable.
BORE_CONTROL_PORT = 7835


def cache_dir() -> Path:
    return Path(os.environ.get("HYCO_BENCH_TOOLS", "~/.cache/hyco-bench")).expanduser()


@dataclass(frozen=True)
class Tool:
    """One tunnel: how to build it and the binaries it needs."""

    name: str
    toolchain: str  # "cargo" or "go"
    package: str  # the crate, or the Go module
    version: str
    binaries: tuple[str, ...]
    commands: tuple[str, ...] = ()  # Go: the packages to install
    cargo_options: tuple[str, ...] = ()

    def install_line(self) -> str:
        if self.toolchain == "cargo":
            return " ".join(["cargo install --version", self.version, *self.cargo_options, self.package])
        return f"go install {' '.join(self.commands)} (module {self.package}@{self.version})"


TOOLS: tuple[Tool, ...] = (
    # rathole: its plain TCP transport only, which the bench runs (no TLS, Noise or WebSocket to compile).
    Tool(
        "rathole",
        "cargo",
        "rathole",
        "0.5.0",
        ("rathole",),
        cargo_options=("--no-default-features", "--features", "server,client"),
    ),
    Tool(
        "frp",
        "go",
        "github.com/fatedier/frp",
        "v0.65.0",
        ("frps", "frpc"),
        ("github.com/fatedier/frp/cmd/frps", "github.com/fatedier/frp/cmd/frpc"),
    ),
    Tool(
        "chisel", "go", "github.com/jpillora/chisel", "v1.11.3", ("chisel",), ("github.com/jpillora/chisel",)
    ),
    Tool("bore", "cargo", "bore-cli", "0.6.0", ("bore",)),
)
#: The same frp binaries with TLS off between frpc and frps (``transport.tls.enable = false``; frp's default
#: is on since 0.50): the peer of hyco over ws, while frp with TLS is the peer of hyco over wss.
TOOLS = (*TOOLS, replace(next(t for t in TOOLS if t.name == "frp"), name="frp-notls"))
NAMES = tuple(tool.name for tool in TOOLS)


@dataclass
class Prepared:
    """A tool ready to run (``bin`` set) or skipped (``reason`` set)."""

    tool: Tool
    bin: Path | None = None
    reason: str = ""


def _installed(tool: Tool, bin_dir: Path) -> bool:
    return all(os.access(bin_dir / b, os.X_OK) for b in tool.binaries)


def _build(tool: Tool, root: Path) -> str:
    """Build ``tool`` into ``root/bin``; returns "" or why it failed."""
    log = root / "logs" / f"{tool.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if tool.toolchain == "cargo":
        steps = [
            [
                "cargo",
                "install",
                "--version",
                tool.version,
                *tool.cargo_options,
                "--root",
                str(root),
                tool.package,
            ]
        ]
        cwd, env = root, dict(os.environ)
    else:
        cwd = root / "gomod"
        cwd.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GOBIN": str(root / "bin"), "GOFLAGS": "-mod=mod"}
        steps = [] if (cwd / "go.mod").exists() else [["go", "mod", "init", "hyco-bench-tools"]]
        steps += [
            ["go", "get", *(f"{c}@{tool.version}" for c in tool.commands)],
            ["go", "install", *tool.commands],
        ]
    deadline = time.monotonic() + BUILD_TIMEOUT
    with log.open("w") as out:
        for step in steps:
            out.write(f"$ {' '.join(step)}\n")
            out.flush()
            try:
                done = subprocess.run(
                    step,
                    cwd=cwd,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=deadline - time.monotonic(),
                )
            except subprocess.TimeoutExpired:
                return f"build timed out after {BUILD_TIMEOUT:.0f} s (log: {log})"
            if done.returncode:
                return f"build failed: `{' '.join(step)}` exited {done.returncode} (log: {log})"
    return ""


def prepare(mode: str, announce: Callable[[str], None] = print) -> list[Prepared]:
    """Each tool's binaries, building the missing ones when ``mode`` is ``install``.

    Args:
        mode: ``install`` (build what is missing when its toolchain is there), ``installed`` (use only what
            the cache holds) or ``none`` (skip every tunnel).
        announce: where progress lines go.

    Returns:
        One entry per tool of :data:`TOOLS`, ready or skipped with its reason.
    """
    root = cache_dir()
    bin_dir = root / "bin"
    out: list[Prepared] = []
    for tool in TOOLS:
        if mode == "none":
            out.append(Prepared(tool, reason="skipped: --tunnels none"))
            continue
        if not _installed(tool, bin_dir):
            if mode != "install":
                out.append(
                    Prepared(
                        tool, reason=f"not in {bin_dir} and --tunnels {mode} (build: {tool.install_line()})"
                    )
                )
                continue
            if shutil.which(tool.toolchain) is None:
                out.append(
                    Prepared(
                        tool, reason=f"`{tool.toolchain}` not found, so `{tool.install_line()}` cannot run"
                    )
                )
                continue
            announce(
                f"building {tool.name} {tool.version}: {tool.install_line()} (first run only; minutes) ..."
            )
            started = time.monotonic()
            if reason := _build(tool, root):
                out.append(Prepared(tool, reason=reason))
                continue
            announce(f"    built {tool.name} in {time.monotonic() - started:.0f} s")
            if not _installed(tool, bin_dir):
                out.append(
                    Prepared(tool, reason=f"the build left no {', '.join(tool.binaries)} in {bin_dir}")
                )
                continue
        out.append(Prepared(tool, bin=bin_dir))
    return out


# --- running ---------------------------------------------------------------------------------------


@dataclass
class Tunnel:
    """A running tunnel: its processes (server first) and the address its entry listens on."""

    server: Child
    client: Child
    entry: str


def _configs(tool: Tool, bin_dir: Path, workdir: Path, backend: int) -> tuple[list[str], list[str], int, int]:
    """(server argv, client argv, server's control port, entry port) for ``tool`` carrying ``backend``."""
    control, entry = free_port(), free_port()
    if tool.name == "rathole":
        server_cfg, client_cfg = workdir / "rathole-server.toml", workdir / "rathole-client.toml"
        token = "bench-only-token"
        server_cfg.write_text(
            f'[server]\nbind_addr = "127.0.0.1:{control}"\n'
            f'[server.services.bench]\ntoken = "{token}"\nbind_addr = "127.0.0.1:{entry}"\n'
        )
        client_cfg.write_text(
            f'[client]\nremote_addr = "127.0.0.1:{control}"\n'
            f'[client.services.bench]\ntoken = "{token}"\nlocal_addr = "127.0.0.1:{backend}"\n'
        )
        rathole = str(bin_dir / "rathole")
        return [rathole, "--server", str(server_cfg)], [rathole, "--client", str(client_cfg)], control, entry
    if tool.name in ("frp", "frp-notls"):
        server_cfg, client_cfg = workdir / f"{tool.name}-s.toml", workdir / f"{tool.name}-c.toml"
        server_cfg.write_text(f'bindAddr = "127.0.0.1"\nbindPort = {control}\n')
        tls = "true" if tool.name == "frp" else "false"
        client_cfg.write_text(
            f'serverAddr = "127.0.0.1"\nserverPort = {control}\ntransport.tls.enable = {tls}\n'
            f'[[proxies]]\nname = "bench"\ntype = "tcp"\nlocalIP = "127.0.0.1"\nlocalPort = {backend}\n'
            f"remotePort = {entry}\n"
        )
        return (
            [str(bin_dir / "frps"), "-c", str(server_cfg)],
            [str(bin_dir / "frpc"), "-c", str(client_cfg)],
            control,
            entry,
        )
    if tool.name == "chisel":
        chisel = str(bin_dir / "chisel")
        server = [chisel, "server", "--host", "127.0.0.1", "--port", str(control)]
        client = [chisel, "client", f"http://127.0.0.1:{control}", f"127.0.0.1:{entry}:127.0.0.1:{backend}"]
        return server, client, control, entry
    if tool.name == "bore":
        bore = str(bin_dir / "bore")
        server = [
            bore,
            "server",
            "--bind-addr",
            "127.0.0.1",
            "--min-port",
            str(entry),
            "--max-port",
            str(entry),
        ]
        client = [
            bore,
            "local",
            str(backend),
            "--local-host",
            "127.0.0.1",
            "--to",
            "127.0.0.1",
            "--port",
            str(entry),
        ]
        return server, client, BORE_CONTROL_PORT, entry
    raise ValueError(f"unknown tunnel {tool.name!r}")


async def _launch(name: str, argv: list[str], log: Path) -> Child:
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, preexec_fn=die_with_parent
        )
    return Child(name, proc)


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _echoes(port: int) -> bool:
    """One byte echoed by scenario 6's TCP server through the tunnel's entry on ``port``."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"echo\nx")
        return await asyncio.wait_for(reader.read(1), 2) == b"x"
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def _until(check: Callable[[], object], what: str, processes: list[Child], log: Path) -> None:
    """Poll ``check`` (a coroutine function) until it is true; fail if a process exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    delay = 0.02
    while not await check():  # type: ignore[misc]
        for child in processes:
            if child.proc.returncode is not None:
                raise RuntimeError(
                    f"{child.name} exited with {child.proc.returncode} before {what} ({_tail(log)})"
                )
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {START_TIMEOUT:.0f} s ({_tail(log)})")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return f"last log line: {lines[-1][:200]!r}" if lines else f"log: {log}"


async def start(prepared: Prepared, workdir: Path, backend: int) -> Tunnel:
    """Run ``prepared``'s server and client carrying 127.0.0.1:``backend``; ready once a byte echoes through.

    Raises:
        RuntimeError: the tunnel did not come up (a port taken, a process exited, no echo in time); its
            processes are stopped first.
    """
    tool, bin_dir = prepared.tool, prepared.bin
    assert bin_dir is not None
    server_argv, client_argv, control, entry = _configs(tool, bin_dir, workdir, backend)
    if tool.name == "bore" and not _port_free(control):
        raise RuntimeError(f"bore's fixed control port {control} is taken")
    log = workdir / f"{tool.name}.log"
    log.write_text("")
    started: list[Child] = []
    try:
        started.append(await _launch(f"{tool.name} server", server_argv, log))
        await _until(lambda: _accepts(control), "server listening", started, log)
        started.append(await _launch(f"{tool.name} client", client_argv, log))
        await _until(lambda: _echoes(entry), "echo through the tunnel", started, log)
    except BaseException:
        for child in reversed(started):
            await child.stop()
        raise
    server, client = started
    return Tunnel(server, client, f"127.0.0.1:{entry}")
