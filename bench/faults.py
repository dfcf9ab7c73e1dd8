"""Fault injection: a spliced peer killed (kill -9) or cut off without a FIN (half-open) mid-stream; how long
the survivor waits for its Close, and with which code. Not a test.

``python -m bench.faults [--rounds 5] [--ping 2]`` (from the repository root, with ``PYTHONPATH=.:src``)

The whole run re-executes itself inside a private network namespace (``unshare -rn``: a new user and
network namespace, nothing touches the machine's network) when it can. A relay process listens there; the
survivor runs in this process on 127.0.0.1 and streams 16 KiB messages that the peer echoes. The peer is a
child process (``peer``), the listener or the sender of the pair:

* ``kill``: the peer gets SIGKILL while the stream runs (its kernel closes its sockets).
* ``kill-relay``: the relay process gets SIGKILL instead (a fresh relay serves each round); both sides lose
  the connection without a Close (``1006`` on the survivor's side).
* ``half-open``: the peer runs in a network namespace of its own, joined to the relay's by a veth pair; its
  end of the link is taken down while the stream runs. No FIN, no reset: its packets just stop, as when a
  machine loses power or its network. Only the relay's pings (``limits.ping_interval = --ping``) can tell.

For each case and role the table gives the close code the survivor got and the time from the fault to that
Close (median and worst of ``--rounds``), and whether the relay's ``/$health`` came back to no active
connection (``None`` after ``kill-relay``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from bench.common import KEY, KEY_NAME, PATH, Child, auth_headers, children, connect_url, listen_url, median

PEER_ADDRESS, RELAY_ADDRESS = "10.77.0.2", "10.77.0.1"
MESSAGE = os.urandom(16 * 1024)


def relay_config(ping: float) -> str:
    return (
        '[server]\nlisten = "0.0.0.0:0"\n'
        f"[limits]\nping_interval = {ping}\naccept_timeout = 30\n"
        f'[[authorization_rules]]\nname = "{KEY_NAME}"\nprimary_key = "{KEY}"\nrights = ["Manage"]\n'
        f'[[hybrid_connections]]\npath = "{PATH}"\n'
    )


# --- the peer child: echoes one relayed connection -------------------------------------------------


async def peer_main(args: argparse.Namespace) -> None:
    """Print ``ready``; on ``go``: connect as ``--role`` (listener or sender), print ``online``, then echo."""
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    async with aiohttp.ClientSession() as session:
        if args.role == "listener":
            control = await session.ws_connect(
                listen_url(args.relay, str(uuid.uuid4())), headers=auth_headers(args.relay), heartbeat=None
            )
            print("online", flush=True)
            command = json.loads((await control.receive()).data)
            ws = await session.ws_connect(command["accept"]["address"], heartbeat=None)
        else:
            ws = await session.ws_connect(
                connect_url(args.relay), headers=auth_headers(args.relay), heartbeat=None
            )
            print("online", flush=True)
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)


# --- the driver --------------------------------------------------------------------------------------


async def stream_until_closed(ws: aiohttp.ClientWebSocketResponse, streaming: asyncio.Event) -> int | None:
    """Send MESSAGE and read its echo until the relay closes; returns the close code."""
    while True:
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(MESSAGE)
        msg = await ws.receive()
        if msg.type is not WSMsgType.BINARY:
            return ws.close_code
        streaming.set()


async def active_connections(session: aiohttp.ClientSession, relay: str) -> int:
    async with session.get(f"http{relay[2:]}/$health") as resp:
        return int((await resp.json())["active_connections"])


async def one_round(relay: str, case: str, role: str, start: Any, relay_pid: int) -> dict[str, Any]:
    """One fault: returns the survivor's close code and seconds from the fault to the Close."""
    port = relay.rsplit(":", 1)[1]
    half_open = case == "half-open"
    peer_relay = f"ws://{RELAY_ADDRESS}:{port}" if half_open else relay
    prefix = ("unshare", "-n") if half_open else ()
    async with aiohttp.ClientSession() as session:
        control = accepted = None
        if role == "sender":  # the survivor is the listener: online before the peer dials
            control = await session.ws_connect(
                listen_url(relay, str(uuid.uuid4())), headers=auth_headers(relay)
            )
            accepted = asyncio.ensure_future(control.receive(60))  # reading answers the relay's pings
        peer: Child = await start(
            "peer", ["peer", "--relay", peer_relay, "--role", role], module="bench.faults", prefix=prefix
        )
        if half_open:
            link_peer(peer.pid)
        peer_online = asyncio.ensure_future(peer.command("go"))
        if accepted is not None:
            accept = json.loads((await accepted).data)["accept"]
            ws = await session.ws_connect(accept["address"], heartbeat=None)
        else:
            await asyncio.wait_for(peer_online, 30)
            ws = await session.ws_connect(connect_url(relay), headers=auth_headers(relay), heartbeat=None)
        await asyncio.wait_for(peer_online, 30)
        streaming = asyncio.Event()
        stream = asyncio.ensure_future(stream_until_closed(ws, streaming))
        await asyncio.wait_for(streaming.wait(), 30)
        await asyncio.sleep(0.2)  # mid-stream
        faulted = time.monotonic()
        if half_open:
            run(["nsenter", "-t", str(peer.pid), "-n", "ip", "link", "set", "v1", "down"])
        else:
            os.kill(relay_pid if case == "kill-relay" else peer.pid, signal.SIGKILL)
        code = await asyncio.wait_for(stream, 120)
        seconds = time.monotonic() - faulted
        await ws.close()
        if control is not None:
            await control.close()
        released: bool | None = None  # the relay itself is gone after kill-relay
        if case != "kill-relay":
            released = False
            for _ in range(100):
                if await active_connections(session, relay) == 0:
                    released = True
                    break
                await asyncio.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(peer.pid, signal.SIGKILL)
        if half_open:
            run(["ip", "link", "del", "v0"], check=False)
    return {"code": code, "seconds": seconds, "released": released}


def run(command: list[str], check: bool = True) -> None:
    subprocess.run(command, check=check, capture_output=True, timeout=30)


def link_peer(pid: int) -> None:
    """A veth pair between this namespace (RELAY_ADDRESS) and the peer's (PEER_ADDRESS)."""
    run(["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", str(pid)])
    run(["ip", "addr", "add", f"{RELAY_ADDRESS}/24", "dev", "v0"])
    run(["ip", "link", "set", "v0", "up"])
    inside = f"ip link set lo up && ip addr add {PEER_ADDRESS}/24 dev v1 && ip link set v1 up"
    run(["nsenter", "-t", str(pid), "-n", "sh", "-c", inside])


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    cfg = args.workdir / "relay.toml"
    cfg.write_text(relay_config(args.ping))
    cases = ["kill", "kill-relay"] + (["half-open"] if args.netns else [])
    rows = []
    async with children() as start:
        relay_child = await start("relay", ["relay", "--config", str(cfg)])
        for case in cases:
            for role in ("listener", "sender"):
                results = []
                for _ in range(args.rounds):
                    if relay_child.proc.returncode is not None or case == "kill-relay":
                        relay_child = await start("relay", ["relay", "--config", str(cfg)])  # a fresh victim
                    relay = "ws://127.0.0.1:" + relay_child.ready.rsplit(":", 1)[1]
                    results.append(await one_round(relay, case, role, start, relay_child.pid))
                    if case == "kill-relay":
                        await relay_child.proc.wait()
                rows.append(
                    {
                        "case": case,
                        "peer": role,
                        "codes": sorted({r["code"] for r in results}, key=str),
                        "median_ms": round(median([r["seconds"] for r in results]) * 1000, 1),
                        "max_ms": round(max(r["seconds"] for r in results) * 1000, 1),
                        "released": None if case == "kill-relay" else all(r["released"] for r in results),
                        "rounds": len(results),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def run_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="role_")
    child = sub.add_parser("peer", help="(a child of the driver)")
    child.add_argument("--relay", required=True)
    child.add_argument("--role", choices=("listener", "sender"), required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ping", type=float, default=2.0, help="the relay's limits.ping_interval")
    parser.add_argument("--no-netns", action="store_true", help="kill -9 only, in this network namespace")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role_ == "peer":
        asyncio.run(peer_main(args))
        return
    if not args.inside and not args.no_netns and shutil.which("unshare"):
        probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            os.execvp(
                "unshare", ["unshare", "-rn", sys.executable, "-m", "bench.faults", *sys.argv[1:], "--inside"]
            )
        print(
            f"no private network namespace here ({probe.stderr.decode().strip()}): kill -9 only", flush=True
        )
    args.netns = args.inside
    if args.inside:
        run(["ip", "link", "set", "lo", "up"])
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = Path(tmp)
        rows = asyncio.run(main(args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    print(
        f"\n{'fault':>10} {'peer':>9} {'survivor got':>14} {'median ms':>10} {'worst ms':>9} {'released':>9}"
    )
    for r in rows:
        codes = ",".join(str(c) for c in r["codes"])
        print(
            f"{r['case']:>10} {r['peer']:>9} {codes:>14} {r['median_ms']:>10} {r['max_ms']:>9} "
            f"{r['released']!s:>9}"
        )


if __name__ == "__main__":
    run_cli()
