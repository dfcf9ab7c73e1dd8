"""Fault injection: the relay, a listener or a sender killed (kill -9) at each point of a connection's life,
or a peer cut off without a FIN (half-open) mid-stream; what the survivor sees, how long it waits, and whether
the relay lets go of everything. Not a test.

``python -m bench.faults [--rounds 5] [--ping 2] [--points handshake,dial,stream,close] [--relay-points ...]``
(from the repository root, with ``PYTHONPATH=.:src``)

The whole run re-executes itself inside a private network namespace (``unshare -rn``: a new user and
network namespace, nothing touches the machine's network) when it can. A relay process listens there; the
survivor runs in this process on 127.0.0.1. The victim is a child process (``bench.faultpeer``), the
listener or the sender of the pair, that stops at a point (``handshake``: the sender waits for a listener
that has the accept command and has not dialed; ``dial``: half of the listener's rendezvous upgrade request
is written; ``stream``: the survivor streams 16 KiB messages that the victim echoes; ``close``: the victim
sent a Close that nobody answered yet):

* ``kill``: the victim gets SIGKILL (its kernel closes its sockets).
* ``kill-relay``: the relay process gets SIGKILL instead (a fresh relay serves each round).
* ``half-open`` (mid-stream only): the peer runs in a network namespace of its own, joined to the relay's by a
  veth pair; its end of the link is taken down. No FIN, no reset: its packets just stop, as when a machine
  loses power or its network. Only the relay's pings (``limits.ping_interval = --ping``) can tell.

For each fault, victim and point the table gives what the survivor saw (``close N``: a Close frame;
``handshake N``: the answer to its WebSocket upgrade; ``lost (...)``: the connection ended without either;
``hung``: nothing within accept_timeout + 2 x ping + 10 s), the time from the fault to it (median and worst of
``--rounds``), and whether the relay's accounting came back to where it was before the round (pending and
active connections, HTTP requests in flight, open files; ``None`` after ``kill-relay``).
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

from bench.common import (
    KEY,
    KEY_NAME,
    PATH,
    Child,
    auth_headers,
    children,
    connect_url,
    listen_url,
    median,
    open_files,
)
from bench.faultpeer import POINTS, RawDial

PEER_ADDRESS, RELAY_ADDRESS = "10.77.0.2", "10.77.0.1"
MESSAGE = os.urandom(16 * 1024)


def relay_config(ping: float, accept_timeout: float) -> str:
    return (
        '[server]\nlisten = "0.0.0.0:0"\n'
        f"[limits]\nping_interval = {ping}\naccept_timeout = {accept_timeout}\n"
        f'[[authorization_rules]]\nname = "{KEY_NAME}"\nprimary_key = "{KEY}"\nrights = ["Manage"]\n'
        f'[[hybrid_connections]]\npath = "{PATH}"\n'
    )


# --- the survivor, in this process ---------------------------------------------------------------------


async def survive(
    ws: aiohttp.ClientWebSocketResponse, streaming: asyncio.Event, resume: asyncio.Event, keep_sending: bool
) -> str:
    """Send MESSAGE and read its echo until the relay closes; returns ``close N``.

    Without ``keep_sending`` one message goes out, and after its echo nothing is read until ``resume``.
    """
    sent = False
    while True:
        if keep_sending or not sent:
            sent = True
            with contextlib.suppress(ConnectionError):
                await ws.send_bytes(MESSAGE)
        msg = await ws.receive()
        if msg.type is not WSMsgType.BINARY:
            return f"close {ws.close_code}"
        streaming.set()
        await resume.wait()


async def as_sender(
    session: aiohttp.ClientSession,
    relay: str,
    streaming: asyncio.Event,
    resume: asyncio.Event,
    keep_sending: bool,
) -> str:
    """The survivor as the sender: ``handshake N`` / ``lost (...)`` if it never got in, else how it closed."""
    try:
        ws = await session.ws_connect(connect_url(relay), headers=auth_headers(relay), heartbeat=None)
    except aiohttp.WSServerHandshakeError as exc:
        return f"handshake {exc.status}"
    except aiohttp.ClientError as exc:
        return f"lost ({type(exc).__name__})"
    try:
        return await survive(ws, streaming, resume, keep_sending)
    finally:
        await ws.close()


async def accounting(session: aiohttp.ClientSession, relay: str, pid: int) -> tuple[int, ...]:
    """What the relay holds: (pending, active, HTTP in flight, open files)."""
    async with session.get(f"http{relay[2:]}/$health") as resp:
        health = await resp.json()
    fds = open_files(pid)[0]
    return (
        int(health["pending_connections"]),
        int(health["active_connections"]),
        int(health["http_requests_in_flight"]),
        fds,
    )


async def back_to(session: aiohttp.ClientSession, relay: str, pid: int, baseline: tuple[int, ...]) -> bool:
    """Whether the relay's accounting comes back to ``baseline`` (open files: to at most it) within 10 s."""
    for _ in range(100):
        *counts, fds = await accounting(session, relay, pid)
        if tuple(counts) == baseline[:3] and fds <= baseline[3]:
            return True
        await asyncio.sleep(0.1)
    print(f"held: {(*counts, fds)} (before: {baseline})", file=sys.stderr, flush=True)
    return False


async def one_round(
    relay: str, case: str, role: str, point: str, start: Any, relay_pid: int, bound: float
) -> dict[str, Any]:
    """One fault: what the survivor saw, seconds from the fault to it, and whether the relay let go."""
    port = relay.rsplit(":", 1)[1]
    half_open = case == "half-open"
    peer_relay = f"ws://{RELAY_ADDRESS}:{port}" if half_open else relay
    prefix = ("unshare", "-n") if half_open else ()
    streaming, resume = asyncio.Event(), asyncio.Event()
    # The accounting's own session: the survivor must not reuse its kept-alive connection (a client retries a
    # request on a kept-alive connection that breaks, and would report the retry's error).
    async with aiohttp.ClientSession() as session, aiohttp.ClientSession() as asking:
        baseline = await accounting(asking, relay, relay_pid)
        control: aiohttp.ClientWebSocketResponse | None = None
        dial: RawDial | None = None
        accepted = None
        if role == "sender":  # the survivor is the listener: online before the peer dials
            control = await session.ws_connect(
                listen_url(relay, str(uuid.uuid4())), headers=auth_headers(relay)
            )
            accepted = asyncio.ensure_future(control.receive(60))  # reading answers the relay's pings
        peer: Child = await start(
            "peer",
            ["--relay", peer_relay, "--role", role, "--point", point],
            module="bench.faultpeer",
            prefix=prefix,
        )
        if half_open:
            link_peer(peer.pid)
        peer_online = asyncio.ensure_future(peer.command("go"))
        keep_sending = point != "close"
        if accepted is None:
            await asyncio.wait_for(peer_online, 30)
            outcome = asyncio.ensure_future(as_sender(session, relay, streaming, resume, keep_sending))
        else:
            address = json.loads((await asyncio.wait_for(accepted, 30)).data)["accept"]["address"]
            await asyncio.wait_for(peer_online, 30)
            if point in ("handshake", "dial"):
                dial = await RawDial.open(address)
                if point == "dial":
                    await dial.write_half()
                outcome = asyncio.ensure_future(resume.wait())  # finished after the fault
            else:
                ws = await session.ws_connect(address, heartbeat=None)
                outcome = asyncio.ensure_future(survive(ws, streaming, resume, keep_sending))
        at_point = await peer.line(30)
        assert at_point == "at-point", at_point
        if point == "stream":
            await asyncio.wait_for(streaming.wait(), 30)
            await asyncio.sleep(0.2)  # mid-stream
        faulted = time.monotonic()
        if half_open:
            run(["nsenter", "-t", str(peer.pid), "-n", "ip", "link", "set", "v1", "down"])
        else:
            os.kill(relay_pid if case == "kill-relay" else peer.pid, signal.SIGKILL)
        resume.set()
        try:
            if dial is not None:
                await outcome
                saw = await asyncio.wait_for(dial.finish(), bound)
            else:
                saw = await asyncio.wait_for(outcome, bound)
        except TimeoutError:
            saw = "hung"
        seconds = time.monotonic() - faulted
        if dial is not None:
            dial.close()
        if point not in ("handshake", "dial") and accepted is not None:
            await ws.close()
        if control is not None:
            await control.close()
        await session.close()  # its kept-alive connections are the survivor's, not the relay's to let go
        released: bool | None = None  # the relay itself is gone after kill-relay
        if case != "kill-relay":
            released = await back_to(asking, relay, relay_pid, baseline)
        with contextlib.suppress(ProcessLookupError):
            os.kill(peer.pid, signal.SIGKILL)
        if half_open:
            run(["ip", "link", "del", "v0"], check=False)
    return {"saw": saw, "seconds": seconds, "released": released}


def run(command: list[str], check: bool = True) -> None:
    subprocess.run(command, check=check, capture_output=True, timeout=30)


def link_peer(pid: int) -> None:
    """A veth pair between this namespace (RELAY_ADDRESS) and the peer's (PEER_ADDRESS)."""
    run(["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", str(pid)])
    run(["ip", "addr", "add", f"{RELAY_ADDRESS}/24", "dev", "v0"])
    run(["ip", "link", "set", "v0", "up"])
    inside = f"ip link set lo up && ip addr add {PEER_ADDRESS}/24 dev v1 && ip link set v1 up"
    run(["nsenter", "-t", str(pid), "-n", "sh", "-c", inside])


def plan(points: list[str], relay_points: list[str], netns: bool) -> list[tuple[str, str, str]]:
    """The (fault, peer, point) rounds: each peer killed at each of ``points``, the relay killed at each of
    ``relay_points`` (where the listener is; mid-stream also where the sender is), half-open peers
    mid-stream."""
    rounds = []
    for point in POINTS:
        if point in points:
            rounds += [("kill", "listener", point), ("kill", "sender", point)]
        if point in relay_points:
            rounds.append(("kill-relay", "listener", point))
            if point == "stream":
                rounds.append(("kill-relay", "sender", point))
    if netns and "stream" in points:
        rounds += [("half-open", "listener", "stream"), ("half-open", "sender", "stream")]
    return rounds


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    cfg = args.workdir / "relay.toml"
    cfg.write_text(relay_config(args.ping, args.accept_timeout))
    # Every survivor must learn within this: the sender's wait for an accept, the relay's pings, some slack.
    bound = args.accept_timeout + 2 * args.ping + 10
    rows = []
    async with children() as start:
        relay_child = await start("relay", ["relay", "--config", str(cfg)])
        for case, role, point in plan(args.points, args.relay_points, args.netns):
            results = []
            for _ in range(args.rounds):
                if relay_child.proc.returncode is not None or case == "kill-relay":
                    relay_child = await start("relay", ["relay", "--config", str(cfg)])  # a fresh victim
                relay = "ws://127.0.0.1:" + relay_child.ready.rsplit(":", 1)[1]
                results.append(await one_round(relay, case, role, point, start, relay_child.pid, bound))
                if case == "kill-relay":
                    await relay_child.proc.wait()
            rows.append(
                {
                    "case": case,
                    "peer": role,
                    "point": point,
                    "saw": sorted({r["saw"] for r in results}),
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
    parser.add_argument("--rounds", type=int, default=5, help="rounds per fault, peer and point")
    parser.add_argument(
        "--points",
        type=lambda text: [point for point in text.split(",") if point],
        default=list(POINTS),
        help=f"comma-separated, of: {','.join(POINTS)} (default: all)",
    )
    parser.add_argument(
        "--relay-points",
        type=lambda text: [point for point in text.split(",") if point],
        default=list(POINTS),
        help="where the relay is killed, as --points (default: all)",
    )
    parser.add_argument(
        "--accept-timeout", type=float, default=5.0, help="the relay's limits.accept_timeout (default 5)"
    )
    parser.add_argument("--ping", type=float, default=2.0, help="the relay's limits.ping_interval")
    parser.add_argument("--no-netns", action="store_true", help="kill -9 only, in this network namespace")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = set(args.points + args.relay_points) - set(POINTS)
    if unknown:
        parser.error(f"unknown points: {', '.join(sorted(unknown))}")
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
        f"\n{'fault':>10} {'peer':>9} {'point':>9} {'survivor saw':>34} {'median ms':>10} {'worst ms':>9} "
        f"{'released':>9}"
    )
    for r in rows:
        saw = ", ".join(r["saw"])
        print(
            f"{r['case']:>10} {r['peer']:>9} {r['point']:>9} {saw:>34} {r['median_ms']:>10} {r['max_ms']:>9} "
            f"{r['released']!s:>9}"
        )


if __name__ == "__main__":
    run_cli()
