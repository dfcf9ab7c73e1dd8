"""Instructions the relay executes per rendezvous and per small HTTP GET, counted by valgrind's callgrind.

CPU time per operation scatters by 30 % and more on a shared machine (other processes take the caches and the
cores); the number of instructions the relay's process executes for the same work does not. This runs the
relay (uvloop, in a child process under ``valgrind --tool=callgrind``) three times, in parallel: a baseline,
the baseline plus ``--rendezvous`` more rendezvous, and the baseline plus ``--gets`` more small GETs, all one
at a time; the differences divided by the counts are the instructions per operation (user space only: the
kernel's share of each system call is not counted).

Usage, from the repository root (needs valgrind; each run takes a minute or two)::

    .venv/bin/python -m bench.callgrind [--rendezvous 200] [--gets 400]

To compare with another commit's relay, put that commit's ``src`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
from tests.server.wire import RawListener, send_connect

#: The relay under test: the tests' configuration ('echo' needs a token, 'open' none), no rate limit.
RELAY = """
import asyncio, signal, uvloop
from hyco.server import Limits, serve
from tests.conftest import test_config

async def main():
    async with serve(test_config(limits=Limits(handshake_rate_per_source=1e9))) as relay:
        print(relay.port, flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

uvloop.run(main())
"""
#: Operations of each kind run in every run before counting matters (imports, caches, first connections).
WARM_UP = 50
SMALL = b"hello"


async def drive(port: int, rendezvous: int, gets: int) -> None:
    """Run ``WARM_UP + rendezvous`` rendezvous and ``WARM_UP + gets`` small GETs, one at a time."""
    url = f"ws://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        listener = await RawListener.open(session, url, "echo")
        for _ in range(WARM_UP + rendezvous):
            sending = asyncio.ensure_future(send_connect(session, url))
            address = (await listener.next_command())["accept"]["address"]
            accepted = await session.ws_connect(address)
            sender = await sending
            await sender.send_bytes(b"x")
            assert (await accepted.receive()).data == b"x"
            await accepted.send_bytes(b"y")
            assert (await sender.receive()).data == b"y"
            await asyncio.gather(sender.close(), accepted.close())
        await listener.ws.close()
        http = await RawListener.open(session, url, "open")

        async def answer() -> None:
            while True:
                request = (await http.next_command())["request"]
                response = {"response": {"requestId": request["id"], "statusCode": 200, "body": True}}
                await http.ws.send_str(json.dumps(response))
                await http.ws.send_bytes(SMALL)

        answering = asyncio.ensure_future(answer())
        for _ in range(WARM_UP + gets):
            async with session.get(f"http://127.0.0.1:{port}/open/x") as got:
                assert await got.read() == SMALL, got.status
        answering.cancel()
        await http.ws.close()


async def count(rendezvous: int, gets: int, out: Path) -> int:
    """Instructions the relay executed for the warm-up plus ``rendezvous`` and ``gets`` operations."""
    relay = await asyncio.create_subprocess_exec(
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-c",
        RELAY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    assert relay.stdout is not None and relay.stderr is not None
    port = int(await relay.stdout.readline())
    try:
        await drive(port, rendezvous, gets)
    finally:
        relay.terminate()
        _, stderr = await relay.communicate()
    found = re.search(rb"Collected : (\d+)", stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{stderr.decode(errors='replace')[-2000:]}")
    return int(found.group(1))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rendezvous", type=int, default=200)
    parser.add_argument("--gets", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base, more_rendezvous, more_gets = await asyncio.gather(
            count(0, 0, Path(tmp, "base.out")),
            count(args.rendezvous, 0, Path(tmp, "rendezvous.out")),
            count(0, args.gets, Path(tmp, "gets.out")),
        )
    print(f"instructions per rendezvous: {(more_rendezvous - base) / args.rendezvous:,.0f}")
    print(f"instructions per small GET:  {(more_gets - base) / args.gets:,.0f}")


if __name__ == "__main__":
    asyncio.run(main())
