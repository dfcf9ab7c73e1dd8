"""Relay memory while HTTP uploads wait for their listener (issue 13, defect 5). Not a test: prints figures.

``python -m bench.uploads [--count 1000] [--size 1048576] [--hang-up]``

A relay process (``bench.proc relay``), one control channel in this process that takes the ``request``
stubs but does not dial their rendezvous yet, and ``--count`` concurrent POSTs of ``--size`` bytes (known
length, so each goes by rendezvous). Once every upload is in flight (``/$health``), the relay's RSS is read
from /proc; then the listener dials every rendezvous, reads each body and answers its length and CRC32,
which the sender checks. RSS is read again after the burst. ``--hang-up`` instead cancels the senders while
they wait and reports how long the relay keeps their exchanges. ``--extra-config 'KEY = VALUE'`` sets limits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
import zlib
from typing import Any

import aiohttp

from bench.common import auth_headers, children, listen_url, open_files, relay_config_text, rss
from bench.proc import WS_MAX, answer_by_rendezvous


async def in_flight(session: aiohttp.ClientSession, http: str) -> int:
    async with session.get(f"{http}/$health") as resp:
        return int((await resp.json())["http_requests_in_flight"])


async def wait_in_flight(session: aiohttp.ClientSession, http: str, want: int, timeout: float = 300) -> float:
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while await in_flight(session, http) != want:  # noqa: ASYNC110 - polls another process
            await asyncio.sleep(0.1)
    return time.monotonic() - started


async def main(args: argparse.Namespace) -> None:
    body = bytes(range(256)) * (args.size // 256)
    expected = f"{len(body)} {zlib.crc32(body)}"
    workdir = args.workdir
    cfg = workdir / "relay.toml"
    cfg.write_text(relay_config_text().replace("[limits]\n", "[limits]\n" + args.extra_config + "\n"))
    async with children() as start:
        relay = await start("relay", ["relay", "--config", str(cfg)])
        http = "http" + relay.ready[2:]
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            idle = rss(relay.pid)
            stubs: list[dict[str, Any]] = []
            ws = await session.ws_connect(
                listen_url(relay.ready, str(uuid.uuid4())),
                headers=auth_headers(relay.ready),
                max_msg_size=WS_MAX,
            )

            async def collect() -> None:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT and "request" in (command := json.loads(msg.data)):
                        stubs.append(command["request"])

            collector = asyncio.ensure_future(collect())

            refused: list[str] = []

            async def upload() -> str:
                headers = auth_headers(relay.ready)
                try:
                    async with session.post(f"{http}/bench/up", data=body, headers=headers) as r:
                        answer = f"{r.status} {await r.text()}"
                except aiohttp.ClientError as exc:
                    answer = type(exc).__name__
                if not answer.startswith("200"):
                    refused.append(answer)
                return answer

            started = time.monotonic()
            senders = [asyncio.ensure_future(upload()) for _ in range(args.count)]
            async with asyncio.timeout(300):
                while len(stubs) + len(refused) != args.count:  # noqa: ASYNC110 - fed by two kinds of task
                    await asyncio.sleep(0.1)
            await asyncio.sleep(2)  # let the relay's socket buffers fill as far as they will
            waiting = rss(relay.pid)
            files = open_files(relay.pid)[0]
            print(
                f"{args.count} uploads of {args.size} B waiting: relay RSS {idle / 2**20:.0f} -> "
                f"{waiting / 2**20:.0f} MiB ({(waiting - idle) / args.count / 1024:.0f} KiB per upload), "
                f"{files} open files; {len(refused)} refused, first: {refused[:1]}"
            )
            if args.hang_up:
                for task in senders:
                    task.cancel()
                gone = await wait_in_flight(session, http, 0)
                print(f"senders hung up: exchanges gone after {gone:.1f} s")
            else:
                await asyncio.gather(*(answer_by_rendezvous(stub) for stub in list(stubs)))
                answers = await asyncio.gather(*senders, return_exceptions=True)
                good = sum(1 for a in answers if a == f"200 {expected}")
                other = next((a for a in answers if a != f"200 {expected}"), None)
                took = time.monotonic() - started
                print(f"answered: {good}/{args.count} bodies intact in {took:.1f} s; first other: {other!r}")
            await wait_in_flight(session, http, 0)
            await asyncio.sleep(2)
            print(f"after the burst: relay RSS {rss(relay.pid) / 2**20:.0f} MiB")
            collector.cancel()
            await ws.close()


def run_cli() -> None:
    import tempfile
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1024 * 1024)
    parser.add_argument("--hang-up", action="store_true")
    parser.add_argument("--extra-config", default="", help="TOML appended to the relay's [limits]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = Path(tmp)
        asyncio.run(main(args))


if __name__ == "__main__":
    run_cli()
