"""Load with checksums: many relayed connections at once, every byte echoed and CRC32-checked. Not a test.

``python -m bench.load [--connections 10000] [--bytes 65536] [--senders 4] [--listeners 3]`` (from the
repository root, with ``PYTHONPATH=.:src``)

A relay process (``bench.proc relay``, per-source limits lifted: every client is on 127.0.0.1), listener
processes (``bench.proc listener``: two control channels each, every accepted connection echoes) and sender
processes (this module's ``sender``). The senders open their share of the connections (50 at a time each)
and hold them all; then every connection sends ``--bytes`` of random data in 16 KiB messages, each echoed
back and compared byte for byte, and a CRC32 over each direction; then all close. A relayed connection costs
the relay two sockets, so when the relay's open-files limit cannot hold them all at once, they run in rounds
(each round as many as fit); the summary says how many were open at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from bench.common import auth_headers, children, connect_url, open_files, relay_config_text, rss, stdin_reader

MESSAGE = 16 * 1024


# --- the sender child -------------------------------------------------------------------------------


async def sender_main(args: argparse.Namespace) -> None:
    held: list[Held] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        print("ready", flush=True)
        reader = await stdin_reader()
        while line := (await reader.readline()).decode().split():
            if line[0] == "open":
                result = await open_all(session, args.relay, int(line[1]), held)
            elif line[0] == "go":
                result = await move_all(held, int(line[1]))
            else:  # close
                await asyncio.gather(*(h.close() for h in held), return_exceptions=True)
                result = {"closed": len(held)}
                held.clear()
            print(json.dumps(result), flush=True)


class Held:
    """A held connection that reads all the time, into ``inbox``, as a live client does: reading answers the
    relay's pings (a client that neither reads nor answers for ``limits.ping_interval`` is cut as frozen)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            msg = await self.ws.receive()
            self.inbox.put_nowait(msg)
            if msg.type is not WSMsgType.BINARY:
                return

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


async def open_all(
    session: aiohttp.ClientSession, relay: str, count: int, held: list[Held]
) -> dict[str, Any]:
    gate = asyncio.Semaphore(50)
    errors: list[str] = []

    async def one() -> None:
        async with gate:
            try:
                ws = await asyncio.wait_for(
                    session.ws_connect(connect_url(relay), headers=auth_headers(relay), heartbeat=None), 60
                )
            except Exception as exc:
                errors.append(repr(exc)[:200])
            else:
                held.append(Held(ws))

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    return {
        "opened": count - len(errors),
        "failed": len(errors),
        "seconds": time.monotonic() - started,
        "first_error": errors[:1],
    }


async def move_all(held: list[Held], size: int) -> dict[str, Any]:
    checked = mismatched = 0
    errors: list[str] = []

    async def one(connection: Held) -> None:
        nonlocal checked, mismatched
        ws = connection.ws
        sent_crc = echoed_crc = done = 0
        try:
            while done < size:
                data = os.urandom(min(MESSAGE, size - done))
                await ws.send_bytes(data)
                msg = await asyncio.wait_for(connection.inbox.get(), 120)
                if msg.type is not WSMsgType.BINARY:
                    raise ConnectionError(f"closed before its echo: {msg.type.name} {ws.close_code}")
                if msg.data != data:
                    mismatched += 1
                    raise ConnectionError("echo altered")
                sent_crc, echoed_crc = zlib.crc32(data, sent_crc), zlib.crc32(msg.data, echoed_crc)
                done += len(data)
            if sent_crc != echoed_crc:
                mismatched += 1
            checked += done
        except Exception as exc:
            errors.append(repr(exc)[:200])

    started = time.monotonic()
    await asyncio.gather(*(one(h) for h in held))
    return {
        "bytes_checked": checked,
        "mismatched": mismatched,
        "failed": len(errors),
        "seconds": time.monotonic() - started,
        "first_error": errors[:1],
    }


# --- the driver ---------------------------------------------------------------------------------------


async def settled_fds(pid: int, baseline: int) -> int:
    """The relay's open files once its closing connections are gone (within 10 % of the baseline), or 30 s."""
    deadline = time.monotonic() + 30
    while (count := open_files(pid)[0]) > baseline * 1.1 + 8 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.5)  # another process's /proc: nothing to wait on
    return count


async def main(args: argparse.Namespace) -> dict[str, Any]:
    cfg = args.workdir / "relay.toml"
    cfg.write_text(relay_config_text())
    async with children() as start:
        relay = await start("relay", ["relay", "--config", str(cfg)])
        for _ in range(args.listeners):
            await start("listener", ["listener", "--relay", relay.ready, "--count", "2"])
        senders = [
            await start("sender", ["sender", "--relay", relay.ready], module="bench.load")
            for _ in range(args.senders)
        ]
        fds, limit = open_files(relay.pid)
        fit = max(1, (limit - fds - 64) // 2)  # the relay holds two sockets per relayed connection
        per_round = min(fit, args.at_once or fit)
        idle_rss = rss(relay.pid)
        report: dict[str, Any] = {
            "command": " ".join(["python -m bench.load", *sys.argv[1:]]),
            "connections": args.connections,
            "bytes_each": args.bytes,
            "relay_open_files_limit": limit,
            "rounds": [],
        }
        remaining = args.connections
        while remaining:
            count = min(per_round, remaining)
            remaining -= count
            shares = [
                count // len(senders) + (1 if i < count % len(senders) else 0) for i in range(len(senders))
            ]
            opened = [
                json.loads(r)
                for r in await asyncio.gather(
                    *(s.command(f"open {n}", timeout=900) for s, n in zip(senders, shares, strict=True))
                )
            ]
            held_rss, held_fds = rss(relay.pid), open_files(relay.pid)[0]
            moved = [
                json.loads(r)
                for r in await asyncio.gather(*(s.command(f"go {args.bytes}", timeout=1800) for s in senders))
            ]
            await asyncio.gather(*(s.command("close", timeout=600) for s in senders))
            round_report = {
                "open_at_once": sum(o["opened"] for o in opened),
                "open_failed": sum(o["failed"] for o in opened),
                "open_seconds": round(max(o["seconds"] for o in opened), 1),
                "relay_rss_mib_held": round(held_rss / 2**20, 1),
                "relay_fds_held": held_fds,
                "bytes_checked": sum(m["bytes_checked"] for m in moved),
                "mismatched": sum(m["mismatched"] for m in moved),
                "move_failed": sum(m["failed"] for m in moved),
                "move_seconds": round(max(m["seconds"] for m in moved), 1),
                "first_errors": [e for r in (*opened, *moved) for e in r["first_error"]][:3],
            }
            round_report["relay_fds_after_close"] = await settled_fds(relay.pid, fds)
            report["rounds"].append(round_report)
            print(json.dumps(round_report), flush=True)
        report["relay_rss_mib"] = {
            "idle": round(idle_rss / 2**20, 1),
            "after": round(rss(relay.pid) / 2**20, 1),
        }
        report["relay_fds_after"] = await settled_fds(relay.pid, fds)
    return report


def summary(report: dict[str, Any]) -> str:
    rounds = report["rounds"]
    total = sum(r["open_at_once"] for r in rounds)
    checked = sum(r["bytes_checked"] for r in rounds)
    lost = sum(r["open_failed"] + r["move_failed"] + r["mismatched"] for r in rounds)
    moving = sum(r["move_seconds"] for r in rounds)
    return (
        f"{total} of {report['connections']} relayed connections opened in {len(rounds)} round(s) "
        f"(at most {max(r['open_at_once'] for r in rounds)} at once; relay open-files limit "
        f"{report['relay_open_files_limit']}); {checked / 2**20:.0f} MiB echoed and checked "
        f"({checked / 2**20 / max(moving, 1e-9):.1f} MiB/s each way), {lost} failed or altered; relay RSS "
        f"{report['relay_rss_mib']['idle']} -> {max(r['relay_rss_mib_held'] for r in rounds)} MiB held -> "
        f"{report['relay_rss_mib']['after']} MiB after, open files back to {report['relay_fds_after']}"
    )


def run_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="role")
    child = sub.add_parser("sender", help="(a child of the driver)")
    child.add_argument("--relay", required=True)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--bytes", type=int, default=64 * 1024, help="echoed per connection")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--listeners", type=int, default=3)
    parser.add_argument(
        "--at-once", type=int, default=0, help="cap a round (default: what the relay's limit fits)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.role == "sender":
        asyncio.run(sender_main(args))
        return
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = Path(tmp)
        report = asyncio.run(main(args))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(summary(report))
    rounds = report["rounds"]
    if any(r["open_failed"] or r["move_failed"] or r["mismatched"] for r in rounds):
        sys.exit(1)


if __name__ == "__main__":
    run_cli()
