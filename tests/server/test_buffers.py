"""Request bodies waiting for their listener hold bounded relay memory (issue 13, defect 5): each relayed
request reserves its worst-case body bytes from ``limits.max_buffered_bytes``; beyond it senders get 503; the
reservations come back when requests end; and a relay process's RSS stays within the budget under a burst and
does not grow from one burst to the next."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from hyco.server import Limits
from hyco.server.buffers import UPLOAD_WINDOW
from tests.conftest import KEY, KEY_NAME, TIMEOUT
from tests.server.test_http import read_body, respond
from tests.server.test_http_memory import rss
from tests.server.wire import RawListener, token_for

MIB = 1024 * 1024
BODY = bytes(i % 251 for i in range(MIB))


def auth(url: str) -> dict[str, str]:
    return {"ServiceBusAuthorization": token_for(url, "echo")}


async def answer(session: aiohttp.ClientSession, stub: dict[str, str]) -> None:
    """Dial a stub's rendezvous, check the body, answer 200 with its length."""
    rendezvous = await session.ws_connect(stub["address"], max_msg_size=0)
    full = json.loads((await rendezvous.receive(TIMEOUT)).data)["request"]
    body = await read_body(rendezvous)
    await respond(rendezvous, full["id"], 200, "OK", None, str(len(body) if body == BODY else -1).encode())
    await rendezvous.receive(TIMEOUT)  # the relay closes it after the response
    await rendezvous.close()


async def test_uploads_beyond_the_buffer_budget_get_503_and_reservations_come_back(relay_factory):
    relay = await relay_factory(limits=Limits(max_buffered_bytes=2 * UPLOAD_WINDOW))
    async with aiohttp.ClientSession() as session:
        listener = await RawListener.open(session, relay.url)

        async def upload() -> tuple[int, str]:
            async with session.post(f"{relay.http_url}/echo/up", data=BODY, headers=auth(relay.url)) as resp:
                return resp.status, await resp.text()

        waiting = [asyncio.ensure_future(upload()) for _ in range(2)]
        stubs = [(await listener.next_command())["request"] for _ in waiting]
        status, text = await asyncio.wait_for(upload(), TIMEOUT)
        assert status == 503
        assert "limits.max_buffered_bytes" in json.loads(text)["error"]["message"]
        await asyncio.gather(*(answer(session, stub) for stub in stubs))
        assert [await asyncio.wait_for(w, TIMEOUT) for w in waiting] == [(200, str(MIB))] * 2
        # Both reservations came back: another upload is admitted (its stub reaches the listener).
        again = asyncio.ensure_future(upload())
        await answer(session, (await listener.next_command())["request"])
        assert await asyncio.wait_for(again, TIMEOUT) == (200, str(MIB))
        await listener.ws.close()


@contextlib.asynccontextmanager
async def relay_process(tmp_path: Path, limits: str) -> AsyncIterator[tuple[str, int]]:
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\n[limits]\n{limits}\n'
        f'[[authorization_rules]]\nname = "{KEY_NAME}"\nprimary_key = "{KEY}"\nrights = ["Manage"]\n'
        '[[hybrid_connections]]\npath = "echo"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "hyco"),
        # One process: its RSS is what is measured (with workers, each has its own budget).
        *("relay", "--config", str(config), "--log-level", "warning", "--workers", "1"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        while "ready on" not in (line := (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()):
            assert line, "the relay exited before it was ready"
        yield line.split("ready on ")[1].strip(), proc.pid
    finally:
        proc.terminate()
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(proc.wait(), TIMEOUT)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc (Linux)")
async def test_a_burst_of_waiting_uploads_stays_within_the_budget_and_memory_is_reused(tmp_path):
    budget = 32 * MIB  # 85 streamed uploads
    uploads = 150
    async with (
        relay_process(tmp_path, f"max_buffered_bytes = {budget}\nhandshake_rate_per_source = 100000") as (
            url,
            pid,
        ),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
    ):
        http = "http" + url[2:]
        listener = await RawListener.open(session, url, max_msg_size=0)
        idle = rss(pid)
        after: list[int] = []
        for _ in range(2):
            refused: list[int] = []
            stubs: list[dict[str, str]] = []

            async def upload(refused: list[int] = refused) -> int:
                async with session.post(f"{http}/echo/up", data=BODY, headers=auth(url)) as resp:
                    await resp.read()
                    if resp.status != 200:
                        refused.append(resp.status)
                    return resp.status

            async def collect(stubs: list[dict[str, str]] = stubs) -> None:
                # One reader for the whole burst: cancelling a read mid-message could lose a command.
                async for msg in listener.ws:
                    stubs.append(json.loads(msg.data)["request"])

            senders = [asyncio.ensure_future(upload()) for _ in range(uploads)]
            reader = asyncio.ensure_future(collect())
            async with asyncio.timeout(6 * TIMEOUT):
                while len(stubs) + len(refused) < uploads:
                    await asyncio.sleep(0.02)
            reader.cancel()
            held = rss(pid)
            assert held - idle < budget + 16 * MIB, (idle, held)  # the budget plus the sockets' own buffers
            assert set(refused) == {503} and len(stubs) == budget // UPLOAD_WINDOW
            await asyncio.gather(*(answer(session, stub) for stub in stubs))
            assert sorted(await asyncio.gather(*senders)) == [200] * len(stubs) + [503] * len(refused)
            after.append(rss(pid))
        # The second burst reuses the first one's memory (a leak of an eighth of the bytes uploaded shows
        # here or above). Not tighter than 12 MiB: on a loaded machine the allocator's high-water mark moved
        # by 9-10 MiB.
        assert after[1] - after[0] < 12 * MIB, (idle, after)
        await listener.ws.close()
