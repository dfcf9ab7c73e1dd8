"""The real ``hyco relay`` process: ``--reload`` (SIGHUP) keeps connections, and a kill -9 in the middle of
management writes loses nothing that was acknowledged."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp

from hyco.protocol.sas import create_token
from tests.cli.test_relay_cli import generated_key, relay_process, run_to_exit
from tests.conftest import TIMEOUT


def manage_headers(data_dir: Path) -> dict[str, str]:
    token = create_token(
        "http://127.0.0.1/", "RootManageSharedAccessKey", generated_key(data_dir), int(time.time()) + 600
    )
    return {"Authorization": token}


async def test_reload_reads_the_file_and_keeps_listeners(tmp_path: Path) -> None:
    async with relay_process(tmp_path) as relay, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{relay.port}"
        headers = manage_headers(tmp_path)
        listen_token = create_token(
            "http://127.0.0.1/echo",
            "RootManageSharedAccessKey",
            generated_key(tmp_path),
            int(time.time()) + 600,
        )
        ws = await session.ws_connect(
            f"ws://127.0.0.1:{relay.port}/$hc/echo?sb-hc-action=listen",
            headers={"ServiceBusAuthorization": listen_token},
        )
        with (tmp_path / "relay.toml").open("a", encoding="utf-8") as config:
            config.write('\n[[hybrid_connections]]\npath = "fromfile"\nuser_metadata = "reloaded"\n')
        code, out, err = await run_to_exit(tmp_path, "relay", "--reload")
        assert code == 0, err
        assert "reload" in out
        # The relay signals nothing to an outside client when it reloaded: poll the new entity (bounded).
        async with asyncio.timeout(TIMEOUT):
            while True:
                async with session.get(
                    f"{base}/$management/hybridConnections/fromfile", headers=headers
                ) as resp:
                    if resp.status == 200:
                        assert (await resp.json())["properties"]["userMetadata"] == "reloaded"
                        break
                await asyncio.sleep(0.05)
        async with session.get(f"{base}/$health") as resp:
            assert (await resp.json())["listeners"] == 1
        assert not ws.closed
        await ws.close()


async def test_reload_without_a_running_relay_says_so(tmp_path: Path) -> None:
    code, _, err = await run_to_exit(tmp_path, "relay", "--reload")
    assert code != 0
    assert "no running relay found" in err


async def test_kill_9_during_management_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    acknowledged: list[str] = []
    async with relay_process(tmp_path) as relay, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{relay.port}/$management/hybridConnections"
        headers = manage_headers(tmp_path)

        async def write_forever() -> None:
            i = 0
            while True:
                async with session.put(
                    f"{base}/e{i}", json={"properties": {"userMetadata": str(i)}}, headers=headers
                ) as resp:
                    assert resp.status == 200
                acknowledged.append(f"e{i}")
                i += 1

        writer = asyncio.ensure_future(write_forever())
        async with asyncio.timeout(TIMEOUT * 2):
            while len(acknowledged) < 30:
                await asyncio.sleep(0.01)
        relay.proc.send_signal(signal.SIGKILL)  # a PUT is in flight
        await relay.proc.wait()
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    async with (
        relay_process(tmp_path) as again,
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{again.port}/$management/hybridConnections", headers=manage_headers(tmp_path)
        ) as resp,
    ):
        names = {item["name"] for item in (await resp.json())["value"]}
    assert set(acknowledged) <= names
