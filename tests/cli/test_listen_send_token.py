"""``hyco token``, ``hyco send`` and ``hyco listen``, run as real processes against an in-process relay."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from hyco import AcceptContext, HybridConnectionClient, HybridConnectionListener, TokenProvider
from hyco.cli import main
from hyco.protocol.sas import parse_token, verify_signature
from hyco.server import Relay
from tests.conftest import KEY, KEY_NAME, TIMEOUT

#: A key that must never appear in any output.
CANARY = "Q0FOQVJZLWtleS1tdXN0LW5ldmVyLWJlLXByaW50ZWQ="

HYCO = [sys.executable, "-c", "from hyco.cli import main; main()"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the user's HYCO_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYCO_", "AZURE_BRIDGE_"))}
    env.update(extra)
    return env


def connection_string(relay: Relay, entity: str | None = "echo", key: str = KEY) -> str:
    cs = f"Endpoint={relay.url}/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={key}"
    return f"{cs};EntityPath={entity}" if entity else cs


def test_token_command() -> None:
    result = CliRunner().invoke(
        main, ["token", "-a", "sb://NS.example:8443/echo", "--key", KEY, "--ttl", "60"], env=clean_env()
    )
    assert result.exit_code == 0, result.output
    token = parse_token(result.output.strip())
    assert token.audience == "http://ns.example/echo/"
    assert token.key_name == KEY_NAME
    assert verify_signature(token, KEY)


def test_token_from_connection_string_in_the_environment() -> None:
    cs = f"Endpoint=sb://ns.example/;EntityPath=hc;SharedAccessKeyName=rule;SharedAccessKey={KEY}"
    result = CliRunner().invoke(main, ["token"], env=clean_env(HYCO_CONNECTION_STRING=cs))
    assert result.exit_code == 0, result.output
    token = parse_token(result.output.strip())
    assert (token.key_name, token.audience) == ("rule", "http://ns.example/hc/")


def test_token_from_connection_string_file_with_path(tmp_path: Path) -> None:
    file = tmp_path / "cs"
    file.write_text(f"Endpoint=sb://ns.example/;SharedAccessKeyName=rule;SharedAccessKey={KEY}\n")
    result = CliRunner().invoke(
        main, ["token", "--connection-string-file", str(file), "--path", "web"], env=clean_env()
    )
    assert result.exit_code == 0, result.output
    assert parse_token(result.output.strip()).audience == "http://ns.example/web/"


def test_token_for_the_namespace() -> None:
    """--namespace signs for http://HOST/ even when the connection string names a hybrid connection."""
    cs = (
        f"Endpoint=sb://NS.example:8443/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY};EntityPath=echo"
    )
    result = CliRunner().invoke(
        main, ["token", "--namespace", "--ttl", "600"], env=clean_env(HYCO_CONNECTION_STRING=cs)
    )
    assert result.exit_code == 0, result.output
    token = parse_token(result.output.strip())
    assert (token.audience, token.key_name) == ("http://ns.example/", KEY_NAME)
    assert verify_signature(token, KEY)
    assert 590 <= token.expiry - time.time() <= 600
    result = CliRunner().invoke(main, ["token", "--namespace", "-a", "sb://ns.example/echo", "-k", KEY])
    assert parse_token(result.output.strip()).audience == "http://ns.example/"
    result = CliRunner().invoke(
        main, ["token", "--namespace", "--path", "echo"], env=clean_env(HYCO_CONNECTION_STRING=cs)
    )
    assert result.exit_code == 2
    assert "give --namespace or --path, not both" in result.output


async def test_a_namespace_token_scrapes_metrics(relay: Relay) -> None:
    """What docs/operations.md gives Prometheus: `hyco token --namespace` without its scheme word, sent as
    ``Authorization: SharedAccessSignature <credentials>``; a hybrid connection's token is refused there."""
    import aiohttp

    env = clean_env(HYCO_CONNECTION_STRING=connection_string(relay))

    async def token(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *HYCO, "token", *args, env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        return out.decode().strip()

    scheme, credentials = (await token("--namespace")).split(" ", 1)
    entity_token = await token()
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"{scheme} {credentials}"}
        async with session.get(f"{relay.http_url}/$metrics", headers=headers) as resp:
            assert resp.status == 200
            assert "hyco_build_info" in await resp.text()
        async with session.get(f"{relay.http_url}/$metrics", headers={"Authorization": entity_token}) as resp:
            assert resp.status == 401


def test_token_needs_a_key() -> None:
    result = CliRunner().invoke(main, ["token", "-a", "sb://ns.example/echo"], env=clean_env())
    assert result.exit_code == 2
    assert "-k/--key" in result.output


def test_an_address_flag_given_a_connection_string_is_refused_without_echoing_it() -> None:
    cs = f"Endpoint=sb://ns.example/;EntityPath=hc;SharedAccessKeyName=rule;SharedAccessKey={CANARY}"
    result = CliRunner().invoke(main, ["token", "-a", cs], env=clean_env())
    assert result.exit_code == 2
    assert "pass it with -x" in result.output
    assert CANARY not in result.output


@pytest.mark.parametrize("name", ["relay", "listen", "send", "token", "expose", "forward"])
def test_every_help_has_an_example_and_the_shared_flags(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
    assert "-v, --verbose" in result.output and "--log-level" in result.output
    if name != "relay":
        for flag in ("-x, --connection-string", "--connection-string-file", "-k, --key", "-K, --key-name"):
            assert flag in result.output
        assert "HYCO_CONNECTION_STRING" in result.output
        assert "visible to other users" in result.output  # why the environment and the file exist
        assert "--ca-file" in result.output and "--insecure" in result.output


async def run(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        *HYCO,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or clean_env(),
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
        env = clean_env(HYCO_CONNECTION_STRING=connection_string(relay))
        code, out, err = await run("send", stdin=b"hello from stdin\n", env=env)
        await asyncio.wait_for(server, TIMEOUT)
    assert code == 0, err
    assert out == b"HELLO FROM STDIN\n"


async def test_send_reports_rejection(relay: Relay, tp: TokenProvider) -> None:
    def reject(ctx: AcceptContext) -> bool:
        ctx.reject(418, "Not today")
        return False

    async with HybridConnectionListener(f"{relay.url}/echo", tp, accept_handler=reject):
        code, _, err = await run("send", "-a", f"{relay.url}/echo", "--key", KEY)
    assert code == 3
    assert b"418 Not today" in err


async def test_send_unknown_hybrid_connection_says_so(relay: Relay) -> None:
    code, _, err = await run("send", "-x", connection_string(relay, "nope"))
    assert code == 1
    assert b"no such hybrid connection 'nope'" in err
    assert b"Check the name" in err


async def test_send_without_a_listener_says_no_listener_is_connected(relay: Relay) -> None:
    code, _, err = await run("send", "-x", connection_string(relay))
    assert code == 1
    assert b"no listener is connected to 'echo' right now" in err
    assert b"Start the listener" in err


async def test_send_without_a_key_says_which_flag(relay: Relay) -> None:
    code, _, err = await run("send", "-a", f"{relay.url}/echo")
    assert code == 1
    assert b"pass -k/--key" in err.replace(b"\n", b" ").lower()


async def test_sb_address_against_a_plain_relay_says_it_is_plain(relay: Relay) -> None:
    address = f"sb://127.0.0.1:{relay.url.rsplit(':', 1)[1]}/echo"
    code, _, err = await run("send", "-a", address, "-k", KEY, "--connect-timeout", "5")
    assert code == 1
    assert b"the relay is plain ws://; use a ws:// address" in err


async def test_insecure_warns(relay: Relay) -> None:
    code, _, err = await run("send", "-x", connection_string(relay, "nope"), "--insecure")
    assert code == 1
    assert b"warning: --insecure" in err


@asynccontextmanager
async def listen_process(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        *HYCO,
        "listen",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
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
    async with listen_process("-a", f"{relay.url}/echo", "--key", KEY, "--echo"):
        async with asyncio.timeout(TIMEOUT):
            assert await roundtrip(relay, tp, b"one") == b"one"
            assert await roundtrip(relay, tp, b"two") == b"two"


async def test_listen_exec_once(relay: Relay, tp: TokenProvider) -> None:
    async with listen_process(
        "-a", f"{relay.url}/echo", "--key", KEY, "--exec", "tr a-z A-Z", "--once"
    ) as proc:
        async with asyncio.timeout(TIMEOUT):
            assert await roundtrip(relay, tp, b"shout") == b"SHOUT"
            assert await proc.wait() == 0


async def test_listen_stdio_then_exit(relay: Relay, tp: TokenProvider) -> None:
    async with listen_process("-a", f"{relay.url}/echo", "--key", KEY) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"from the listener's stdin")
        proc.stdin.close()
        async with asyncio.timeout(TIMEOUT):
            assert await roundtrip(relay, tp, b"to the listener's stdout") == b"from the listener's stdin"
            assert await proc.stdout.read() == b"to the listener's stdout"
            assert await proc.wait() == 0


async def test_listen_wrong_key_fails_with_one_message(relay: Relay) -> None:
    code, _, err = await run("listen", "-a", f"{relay.url}/echo", "--key", "d3Jvbmcta2V5", "--echo")
    assert code == 1
    assert b"the relay refused your key" in err
    assert err.count(b"InvalidSignature") == 1  # reported once, not also as a state change
    assert b"d3Jvbmcta2V5" not in err


async def test_listen_reports_online_once(relay: Relay, tp: TokenProvider) -> None:
    process = await asyncio.create_subprocess_exec(
        *HYCO,
        "listen",
        "-x",
        connection_string(relay),
        "--echo",
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    assert process.stderr is not None
    async with asyncio.timeout(3 * TIMEOUT):
        first = await process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        _, rest = await process.communicate()
    assert first.decode().strip() == f"online: listening on {relay.url}/echo"
    assert b"online" not in rest


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
async def test_ctrl_c_exits_130_and_sigterm_0(relay: Relay, signum: int, status: int) -> None:
    async with listen_process("-x", connection_string(relay), "--echo") as proc:
        proc.send_signal(signum)
        async with asyncio.timeout(TIMEOUT):
            assert await proc.wait() == status


async def test_no_secret_in_any_output(relay: Relay, tmp_path: Path) -> None:
    """A canary key, given every way a key can be given, never appears in output, even with -v."""
    file = tmp_path / "cs"
    file.write_text(connection_string(relay, key=CANARY))
    runs = [
        ("send", "-x", connection_string(relay, key=CANARY), "-v"),
        ("send", "-x", connection_string(relay, "nope", key=CANARY), "-v"),
        ("send", "-x", connection_string(relay, key=CANARY).replace("Endpoint", "Endpont"), "-v"),
        ("send", "-x", connection_string(relay, key=CANARY).replace("SharedAccessKey=", "SharedAccessKey:")),
        ("send", "-a", connection_string(relay, key=CANARY)),
        ("listen", "-a", f"{relay.url}/echo", "-k", CANARY, "--echo", "-v"),
        ("listen", "--connection-string-file", str(file), "--echo", "--log-level", "debug"),
        ("expose", "8000", "-x", connection_string(relay, key=CANARY), "-v"),
        ("token", "-a", "not a url", "-k", CANARY),
        ("forward", "-R", "echo:1", "-x", connection_string(relay, None, key=CANARY), "-v"),
    ]
    for args in runs:
        code, out, err = await run(*args, env=clean_env(HYCO_SAS=""))
        assert code != 0, args
        assert not leaked(out + err), args
    # From the environment too.
    code, out, err = await run(
        "send", "-v", env=clean_env(HYCO_CONNECTION_STRING=connection_string(relay, key=CANARY))
    )
    assert code == 1
    assert not leaked(out + err)


def leaked(output: bytes) -> bool:
    """Whether any 12-character piece of the canary key is in ``output`` (a cut-off key leaks too)."""
    return any(CANARY[i : i + 12].encode() in output for i in range(len(CANARY) - 11))


async def test_send_wait_connects_once_a_listener_comes(relay: Relay, tp: TokenProvider) -> None:
    refused = asyncio.Event()
    loop = asyncio.get_running_loop()

    class OnRefusal(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "refused" in record.getMessage() and "404" in record.getMessage():
                loop.call_soon_threadsafe(refused.set)

    handler = OnRefusal()
    relay_log = logging.getLogger("hyco.relay")
    level = relay_log.level
    relay_log.setLevel(logging.INFO)  # refusals are logged at INFO
    relay_log.addHandler(handler)
    try:
        env = clean_env(HYCO_CONNECTION_STRING=connection_string(relay))
        sender = asyncio.create_task(run("send", "--wait", stdin=b"late listener", env=env))
        await asyncio.wait_for(refused.wait(), 3 * TIMEOUT)  # the sender tried before any listener was there
        async with HybridConnectionListener(f"{relay.url}/echo", tp) as listener:
            stream = await asyncio.wait_for(listener.accept(), 3 * TIMEOUT)
            assert stream is not None
            async with stream:
                assert await stream.read() == b"late listener"
                await stream.write(b"ok")
                await stream.shutdown()
            code, out, err = await asyncio.wait_for(sender, 3 * TIMEOUT)
    finally:
        relay_log.removeHandler(handler)
        relay_log.setLevel(level)
    assert (code, out) == (0, b"ok"), err


async def test_send_wait_gives_up_after_the_connect_timeout(relay: Relay) -> None:
    env = clean_env(HYCO_CONNECTION_STRING=connection_string(relay))
    code, _, err = await run("send", "--wait", "--connect-timeout", "1", env=env)
    assert code == 1
    assert b"no listener is connected to 'echo'" in err


async def test_masking_keeps_the_advice_readable(relay: Relay) -> None:
    code, _, err = await run("listen", "-x", connection_string(relay, key="d3Jvbmcta2V5"), "--echo")
    assert code == 1
    assert b"SharedAccessKeyName" in err and b"SharedAccessKey)" in err  # names of parts are not secrets
    assert b"d3Jvbmcta2V5" not in err
