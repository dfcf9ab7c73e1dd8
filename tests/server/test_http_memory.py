"""A large streamed HTTP body through a relay process must not grow the relay's memory (bounded memory).

The relay runs as a real ``hyco relay`` process so its resident set size can be read from /proc; the test
measures memory, never time. Size: ``HYCO_TESTS_BIG_BODY_MIB`` (default 1024, i.e. 1 GiB each way).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import KEY, KEY_NAME, TIMEOUT
from tests.server.rawclient import RawStreamClient
from tests.server.wire import RawListener, token_for

SIZE = int(os.environ.get("HYCO_TESTS_BIG_BODY_MIB", "1024")) * 1024 * 1024
CHUNK = 256 * 1024
#: "a few MiB": the growth allowed over the idle relay while gigabytes stream through.
MAX_GROWTH = 16 * 1024 * 1024

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc (Linux)")


def rss(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    assert match
    return int(match.group(1)) * 1024


@contextlib.asynccontextmanager
async def relay_process(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\n[[authorization_rules]]\nname = "{KEY_NAME}"\n'
        f'primary_key = "{KEY}"\nrights = ["Manage"]\n[[hybrid_connections]]\npath = "echo"\n'
        "request_timeout = 600\n"
    )
    hyco = Path(sys.executable).parent / "hyco"
    proc = await asyncio.create_subprocess_exec(
        str(hyco),
        "relay",
        "--config",
        str(config),
        "--log-level",
        "warning",
        "--workers",  # one process: its RSS is what is measured
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
            assert line, "the relay exited before it was ready"
            if "ready on" in line:
                url = line.split("ready on ")[1].strip()
                break
        yield url, proc.pid
    finally:
        proc.terminate()
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(proc.wait(), TIMEOUT)


async def pattern(total: int) -> AsyncIterator[bytes]:
    block = bytes(range(256)) * (CHUNK // 256)
    sent = 0
    while sent < total:
        piece = block[: min(CHUNK, total - sent)]
        sent += len(piece)
        yield piece


async def watch(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss(pid))
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_gigabyte_upload_and_download_keep_relay_memory_flat(tmp_path: Path) -> None:
    expected = hashlib.sha256()
    async for piece in pattern(SIZE):
        expected.update(piece)
    async with relay_process(tmp_path) as (url, pid), aiohttp.ClientSession() as session:
        http_url = "http" + url[2:]
        listener = await RawListener.open(session, url)
        headers = {"ServiceBusAuthorization": token_for(url, "echo")}
        # Warm up one small exchange so the baseline includes every code path's imports.
        warm = asyncio.ensure_future(session.get(f"{http_url}/echo", headers=headers))
        request = (await listener.next_command())["request"]
        await listener.ws.send_str(json.dumps({"response": {"requestId": request["id"], "statusCode": 200}}))
        (await warm).release()
        baseline = rss(pid)
        peak = [baseline]
        stop = asyncio.Event()
        watcher = asyncio.ensure_future(watch(pid, peak, stop))

        # Upload: chunked body of SIZE bytes -> stub -> the listener streams it off the rendezvous.
        upload = asyncio.ensure_future(session.post(f"{http_url}/echo", data=pattern(SIZE), headers=headers))
        stub = (await listener.next_command())["request"]
        rendezvous = await RawStreamClient.connect(stub["address"])
        assert json.loads(await rendezvous.text())["request"]["body"] is True
        got = hashlib.sha256()
        received = 0
        async for chunk in rendezvous.binary_chunks():
            got.update(chunk)
            received += len(chunk)
        assert (received, got.hexdigest()) == (SIZE, expected.hexdigest())
        await rendezvous.send_text(json.dumps({"response": {"requestId": stub["id"], "statusCode": 200}}))
        async with await asyncio.wait_for(upload, TIMEOUT) as resp:
            assert resp.status == 200
        rendezvous.close()

        # Download: the listener streams SIZE bytes as one fragmented message over its rendezvous.
        download = asyncio.ensure_future(session.get(f"{http_url}/echo/big", headers=headers))
        request = (await listener.next_command())["request"]
        rendezvous = await RawStreamClient.connect(request["address"])
        await rendezvous.send_text(
            json.dumps({"response": {"requestId": request["id"], "statusCode": 200, "body": True}})
        )
        sender = asyncio.ensure_future(rendezvous.send_binary_stream(pattern(SIZE)))
        async with await asyncio.wait_for(download, TIMEOUT) as resp:
            got = hashlib.sha256()
            received = 0
            async for chunk in resp.content.iter_chunked(CHUNK):
                got.update(chunk)
                received += len(chunk)
        await sender
        rendezvous.close()
        stop.set()
        await watcher
        assert (received, got.hexdigest()) == (SIZE, expected.hexdigest())
        growth = peak[0] - baseline
        print(
            f"relay RSS: baseline {baseline / 2**20:.1f} MiB, peak {peak[0] / 2**20:.1f} MiB, "
            f"growth {growth / 2**20:.1f} MiB for {SIZE / 2**20:.0f} MiB each way"
        )
        assert growth < MAX_GROWTH, f"relay RSS grew by {growth / 2**20:.1f} MiB"
