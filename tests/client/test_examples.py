"""The programs in examples/ run as written against an in-process relay."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from hyco import TokenProvider
from hyco.server import Relay
from tests.conftest import KEY, TIMEOUT

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def run_example(name: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / name),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 3 * TIMEOUT)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_walkthrough_prints_every_step(relay: Relay) -> None:
    out = await run_example("walkthrough.py", f"{relay.url}/echo", KEY)
    lines = out.splitlines()
    assert [line.split("]")[0] + "]" for line in lines] == [f"[{i}]" for i in range(1, 9)]
    assert "listener received: 'Hello from the sender!'" in out
    assert "sender received: 'Hello back from the listener!'" in out


async def test_blocking_example(relay: Relay) -> None:
    assert (await run_example("blocking.py", f"{relay.url}/echo", KEY)).strip() == "QUIET WORDS"


async def test_echo_listener_and_sender_examples(relay: Relay, tp: TokenProvider) -> None:
    listener = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "echo_listener.py"),
        f"{relay.url}/echo",
        KEY,
        stdout=asyncio.subprocess.PIPE,
    )
    assert listener.stdout is not None
    try:
        async with asyncio.timeout(3 * TIMEOUT):
            assert (await listener.stdout.readline()).strip() == b"online"
        out = await run_example("sender.py", f"{relay.url}/echo", KEY, "echo me")
        assert out.strip() == "echo me"
    finally:
        listener.terminate()
        await listener.wait()
