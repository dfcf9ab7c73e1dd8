"""``hyco forward`` as real processes: help, bad credentials, port in use, config files, a working tunnel."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from hyco.cli import main
from hyco.cli.forward import load_config
from hyco.exceptions import InvalidInput
from hyco.server import Relay
from hyco.tools.forward import LocalForward, RemoteForward, Transport
from tests.conftest import KEY, KEY_NAME, TIMEOUT
from tests.tools.conftest import echo_handler, tcp_server

HYCO = [sys.executable, "-c", "from hyco.cli import main; main()"]


def connection_string(relay: Relay, key: str = KEY) -> str:
    return f"Endpoint={relay.url}/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={key}"


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HYCO_CONNECTION_STRING", "AZURE_BRIDGE_CONNECTIONSTRING")
    }
    env.update(extra)
    return env


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *HYCO, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env or clean_env()
    )
    out, _ = await asyncio.wait_for(process.communicate(), 3 * TIMEOUT)
    assert process.returncode is not None
    return process.returncode, out.decode()


def test_help_shows_the_flags_and_examples() -> None:
    result = CliRunner().invoke(main, ["forward", "--help"])
    assert result.exit_code == 0
    for text in ("-L", "-R", "-x", "AZURE_BRIDGE_CONNECTIONSTRING", "--config", "Examples:", "/udp"):
        assert text in result.output


def test_nothing_to_forward_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["forward", "-x", "Endpoint=sb://ns.example/"], env=clean_env())
    assert result.exit_code == 2
    assert "nothing to forward" in result.output


def test_a_bad_mapping_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["forward", "-L", "host:port:db", "-x", "Endpoint=sb://ns.example/"])
    assert result.exit_code == 2
    assert "'port' is not a port number" in result.output


def test_no_endpoint_is_a_clear_error() -> None:
    result = CliRunner().invoke(main, ["forward", "-L", "5000:db"], env=clean_env())
    assert result.exit_code == 1
    assert "AZURE_BRIDGE_CONNECTIONSTRING" in result.output


async def test_bad_credentials_exit_non_zero_with_a_clear_message(relay: Relay) -> None:
    code, out = await run("forward", "-R", "echo:1", "-x", connection_string(relay, key="d3Jvbmcta2V5"))
    assert code == 1, out
    assert "the relay refused your key" in out
    assert out.count("InvalidSignature") == 1  # said once, not also as a log line
    assert "d3Jvbmcta2V5" not in out  # never echo a key


async def test_unknown_hybrid_connection_exits_non_zero(relay: Relay) -> None:
    code, out = await run("forward", "-R", "no-such-hc:1", "-x", connection_string(relay))
    assert code == 1, out
    assert "no such hybrid connection" in out
    assert "Check the name" in out


async def test_port_in_use_exits_non_zero_with_a_clear_message(relay: Relay) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out = await run("forward", "-L", f"127.0.0.1:{port}:echo", "-x", connection_string(relay))
    assert code == 1, out
    assert "already in use" in out


@asynccontextmanager
async def forwarder_process(
    *args: str, env: dict[str, str]
) -> AsyncIterator[tuple[asyncio.subprocess.Process, asyncio.StreamReader]]:
    process = await asyncio.create_subprocess_exec(
        *HYCO, "forward", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env
    )
    assert process.stderr is not None
    try:
        yield process, process.stderr
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), TIMEOUT)


async def wait_for_line(stderr: asyncio.StreamReader, pattern: str) -> re.Match[str]:
    lines = []
    while line := (await stderr.readline()).decode():
        lines.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(lines)}")


async def test_a_tunnel_between_two_processes(relay: Relay) -> None:
    # -R reads the connection string from azbridge's variable, -L from -x; -L binds port 0 and logs the port.
    env = clean_env(AZURE_BRIDGE_CONNECTIONSTRING=connection_string(relay))
    async with (
        tcp_server(echo_handler) as target,
        asyncio.timeout(3 * TIMEOUT),
        forwarder_process("-R", f"echo:127.0.0.1:{target}", env=env) as (remote, remote_log),
    ):
        await wait_for_line(remote_log, r"-R echo -> .* online")
        async with forwarder_process(
            "-L", "127.0.0.1:0:echo", "-x", connection_string(relay), env=clean_env()
        ) as (local, local_log):
            port = int((await wait_for_line(local_log, r"listening on 127\.0\.0\.1:(\d+)")).group(1))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"between two processes")
            writer.write_eof()
            assert await reader.read() == b"between two processes"
            writer.close()
            line = await wait_for_line(local_log, r"closed: 21 B to relay, 21 B from relay, .* clean")
            assert line
            local.send_signal(signal.SIGTERM)
            assert await local.wait() == 0
        remote.send_signal(signal.SIGTERM)
        assert await remote.wait() == 0


def test_toml_config_file(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        """
AzureRelayConnectionString = "Endpoint=sb://ns.example/;SharedAccessKeyName=r;SharedAccessKey=a2V5"
GatewayPorts = "no"
LogLevel = "INFO"
AddressFamily = "any"

[[LocalForward]]
bind_address = "127.0.0.2"
port = 5432
relay_name = "db"

[[LocalForward]]
BindPort = "5353U"
RelayName = "dns"

[[LocalForward]]
local_socket = "/tmp/app.sock"
relay_name = "app"

[[RemoteForward]]
relay_name = "db"
host = "pg.internal"
hostport = 5432

[[RemoteForward]]
relay_name = "dns"
host = "10.0.0.2"
hostport = 53
protocol = "udp"
""",
        encoding="utf-8",
    )
    settings = load_config(config)
    assert settings["connection_string"].startswith("Endpoint=sb://ns.example/")
    assert settings["local"] == [
        LocalForward("db", "127.0.0.2", 5432),
        LocalForward("dns", "127.0.0.1", 5353, protocol=Transport.UDP),
        LocalForward("app", local_socket="/tmp/app.sock"),
    ]
    assert settings["remote"] == [
        RemoteForward("db", "pg.internal", 5432),
        RemoteForward("dns", "10.0.0.2", 53, protocol=Transport.UDP),
    ]


def test_config_file_errors_name_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[LocalForward]]\nport = 1\nrelay_name = "x"\ncolour = "red"\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match="colour"):
        load_config(config)
    config.write_text('Compression = "yes"\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match="Compression"):
        load_config(config)
    result = CliRunner().invoke(main, ["forward", "--config", str(config)], env=clean_env())
    assert result.exit_code == 1
    assert "unknown key 'Compression'" in result.output
