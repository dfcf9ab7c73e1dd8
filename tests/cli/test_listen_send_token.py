"""``hyco token``, ``hyco send`` and ``hyco listen``, run as real processes against an in-process relay."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from click.testing import CliRunner

from hyco import AcceptContext, HybridConnectionClient, HybridConnectionListener, TokenProvider
from hyco.cli import main
from hyco.protocol.sas import parse_token, verify_signature
from hyco.server import Relay
from tests.conftest import KEY, KEY_NAME, TIMEOUT

HYCO = [sys.executable, "-c", "from hyco.cli import main; main()"]


def test_token_command() -> None:
    result = CliRunner().invoke(main, ["token", "sb://NS.example:8443/echo", "--key", KEY, "--ttl", "60"])
    assert result.exit_code == 0, result.output
    token = parse_token(result.output.strip())
    assert token.audience == "http://ns.example/echo/"
    assert token.key_name == KEY_NAME
    assert verify_signature(token, KEY)


def test_token_from_connection_string() -> None:
    cs = f"Endpoint=sb://ns.example/;EntityPath=hc;SharedAccessKeyName=rule;SharedAccessKey={KEY}"
    result = CliRunner().invoke(main, ["token", cs])
    assert result.exit_code == 0, result.output
    assert parse_token(result.output.strip()).key_name == "rule"


def test_token_needs_a_key() -> None:
    result = CliRunner().invoke(main, ["token", "sb://ns.example/echo"], env={"HYCO_KEY": ""})
    assert result.exit_code == 2
    assert "--key" in result.output


async def run(*args: str, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        *HYCO,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 3 * TIMEOUT)
    assert process.returncode is not None
    return process.returncode, out, err


async def test_send_pipes_stdin_and_stdout(relay: Relay, tp: TokenProvider) -> None:
    async with HybridConnectionListener(f"{relay.url}/echo", tp) as listener:

        async def upper_echo() -> None:
            stream = await listener.accept()
            assert stream is not None
            async with stream:
                data = b""
                while chunk := await stream.read():
                    data += chunk
                await stream.write(data.upper())

        server = asyncio.create_task(upper_echo())
        code, out, err = await run("send", f"{relay.url}/echo", "--key", KEY, stdin=b"hello from stdin\n")
        await asyncio.wait_for(server, TIMEOUT)
    assert code == 0, err
    assert out == b"HELLO FROM STDIN\n"


async def test_send_reports_rejection(relay: Relay, tp: TokenProvider) -> None:
    def reject(ctx: AcceptContext) -> bool:
        ctx.reject(418, "Not today")
        return False

    async with HybridConnectionListener(f"{relay.url}/echo", tp, accept_handler=reject):
        code, _, err = await run("send", f"{relay.url}/echo", "--key", KEY)
    assert code == 3
    assert b"418 Not today" in err


async def test_send_unknown_path(relay: Relay) -> None:
    code, _, err = await run("send", f"{relay.url}/nope", "--key", KEY)
    assert code == 1
    assert b"404" in err


@asynccontextmanager
async def listen_process(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        *HYCO,
        "listen",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(3 * TIMEOUT):  # process start-up includes Python imports
            while b"online" not in (line := await process.stderr.readline()):
                assert line, "hyco listen exited before coming online"
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        await process.communicate()


async def roundtrip(relay: Relay, tp: TokenProvider, payload: bytes) -> bytes:
    async with await HybridConnectionClient(f"{relay.url}/echo", tp).connect() as stream:
        await stream.write(payload)
        await stream.shutdown()
        received = b""
        while data := await stream.read():
            received += data
        return received


async def test_listen_echo(relay: Relay, tp: TokenProvider) -> None:
    async with listen_process(f"{relay.url}/echo", "--key", KEY, "--echo"):
        async with asyncio.timeout(TIMEOUT):
            assert await roundtrip(relay, tp, b"one") == b"one"
            assert await roundtrip(relay, tp, b"two") == b"two"


async def test_listen_exec_once(relay: Relay, tp: TokenProvider) -> None:
    async with listen_process(f"{relay.url}/echo", "--key", KEY, "--exec", "tr a-z A-Z", "--once") as proc:
        async with asyncio.timeout(TIMEOUT):
            assert await roundtrip(relay, tp, b"shout") == b"SHOUT"
            assert await proc.wait() == 0


async def test_listen_stdio_then_exit(relay: Relay, tp: TokenProvider) -> None:
    async with listen_process(f"{relay.url}/echo", "--key", KEY) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"from the listener's stdin")
        proc.stdin.close()
        async with asyncio.timeout(TIMEOUT):
            assert await roundtrip(relay, tp, b"to the listener's stdout") == b"from the listener's stdin"
            assert await proc.stdout.read() == b"to the listener's stdout"
            assert await proc.wait() == 0


async def test_listen_wrong_key_fails(relay: Relay) -> None:
    code, _, err = await run("listen", f"{relay.url}/echo", "--key", "wrong", "--echo")
    assert code == 1
    assert b"401" in err
