"""``hyco relay`` as users run it: the real console script in a subprocess, on port 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import ssl
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from hyco.protocol.connection_string import RelayConnectionString
from tests.conftest import TIMEOUT

HYCO = Path(sys.executable).parent / "hyco"
READY = re.compile(r"^hyco relay ready on (wss?)://127\.0\.0\.1:(\d+)$")


def relay_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYCO_")}
    env["HYCO_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(autouse=True)
def _console_script() -> None:
    assert HYCO.is_file(), f"the hyco console script is not installed next to {sys.executable}"


@dataclass
class RunningRelay:
    proc: asyncio.subprocess.Process
    scheme: str
    port: int
    banner: list[str] = field(default_factory=list)

    @property
    def connection_string(self) -> RelayConnectionString:
        (line,) = [x.strip() for x in self.banner if x.strip().startswith("Endpoint=")]
        return RelayConnectionString.parse(line)

    async def stop(self) -> tuple[int, str, str]:
        """SIGTERM; returns the exit code and the rest of stdout and stderr."""
        self.proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(self.proc.communicate(), TIMEOUT)
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode(), err.decode()


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await asyncio.wait_for(proc.wait(), TIMEOUT)


@asynccontextmanager
async def relay_process(data_dir: Path, *args: str) -> AsyncIterator[RunningRelay]:
    """Start ``hyco relay --listen 127.0.0.1:0 ARGS``; yields once the banner is printed; always killed."""
    proc = await asyncio.create_subprocess_exec(
        str(HYCO),
        "relay",
        "--listen",
        "127.0.0.1:0",
        *args,
        env=relay_env(data_dir),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None

        async def read_banner() -> RunningRelay:
            running: RunningRelay | None = None
            lines: list[str] = []
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    err = await proc.stderr.read() if proc.stderr else b""
                    raise AssertionError(f"hyco relay ended before its banner: {lines!r} {err.decode()!r}")
                line = raw.decode().rstrip("\n")
                lines.append(line)
                match = READY.match(line)
                if match:
                    running = RunningRelay(proc, match.group(1), int(match.group(2)))
                if running is not None and line.strip().startswith("health:"):  # the banner's last line
                    running.banner = lines
                    return running

        yield await asyncio.wait_for(read_banner(), TIMEOUT)
    finally:
        await _kill(proc)


async def run_to_exit(data_dir: Path, *args: str) -> tuple[int, str, str]:
    """Run ``hyco ARGS`` to completion (bounded by TIMEOUT); returns exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        str(HYCO),
        *args,
        env=relay_env(data_dir),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    finally:
        await _kill(proc)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def get_health(url: str, ssl_context: ssl.SSLContext | None = None) -> tuple[int, dict[str, object]]:
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{url}/$health", ssl=ssl_context or True) as response,
    ):
        return response.status, await response.json()


def generated_key(data_dir: Path) -> str:
    data = tomllib.loads((data_dir / "relay.toml").read_text(encoding="utf-8"))
    return data["authorization_rules"][0]["primary_key"]


# --- tests -------------------------------------------------------------------------------------------


async def test_default_start_banner_health_and_sigterm(tmp_path: Path) -> None:
    async with relay_process(tmp_path) as relay:
        assert relay.scheme == "ws"
        assert relay.port != 0
        status, body = await get_health(f"http://127.0.0.1:{relay.port}")
        assert status == 200
        assert body["status"] == "ready"

        key = generated_key(tmp_path)
        conn = relay.connection_string
        assert conn.shared_access_key == key
        assert conn.shared_access_key_name == "RootManageSharedAccessKey"
        assert conn.endpoint == f"ws://127.0.0.1:{relay.port}/"
        banner = "\n".join(relay.banner)
        assert f"created configuration with a new key: {tmp_path / 'relay.toml'}" in banner
        assert f"health: http://127.0.0.1:{relay.port}/$health" in banner

        code, _, err = await relay.stop()
    assert code == 0
    assert "shutting down" in err
    assert "Traceback" not in err
    # The key is printed on stdout only, never logged.
    assert key not in err


async def test_restart_reuses_the_generated_key(tmp_path: Path) -> None:
    async with relay_process(tmp_path) as first:
        key = first.connection_string.shared_access_key
        code, _, _ = await first.stop()
    assert code == 0

    async with relay_process(tmp_path) as second:
        assert second.connection_string.shared_access_key == key
        assert generated_key(tmp_path) == key
        banner = "\n".join(second.banner)
        assert f"configuration: {tmp_path / 'relay.toml'}" in banner
        assert "created configuration" not in banner
        code, _, _ = await second.stop()
    assert code == 0


async def test_self_signed_serves_wss_trusted_by_the_minted_ca(tmp_path: Path) -> None:
    async with relay_process(tmp_path, "--self-signed", "localhost") as relay:
        assert relay.scheme == "wss"
        ca = tmp_path / "tls" / "ca.pem"
        assert ca.is_file()
        assert f"development CA (trust it): {ca}" in "\n".join(relay.banner)
        assert relay.connection_string.endpoint == f"sb://127.0.0.1:{relay.port}/"

        status, body = await get_health(
            f"https://127.0.0.1:{relay.port}", ssl.create_default_context(cafile=str(ca))
        )
        assert status == 200
        assert body["status"] == "ready"

        # Without the CA the certificate is not trusted.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get_health(f"https://127.0.0.1:{relay.port}", ssl.create_default_context())

        code, _, err = await relay.stop()
    assert code == 0
    assert "Traceback" not in err


async def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    code, _, err = await run_to_exit(tmp_path, "relay", "--listen", "127.0.0.1:0", "--config", str(missing))
    assert code != 0
    assert str(missing) in err
    assert "Traceback" not in err
    assert not (tmp_path / "relay.toml").exists()


async def test_config_with_unknown_key(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text('[server]\nlisten = "127.0.0.1:0"\nlisen_typo = "x"\n', encoding="utf-8")
    code, _, err = await run_to_exit(tmp_path, "relay", "--config", str(file))
    assert code != 0
    assert "lisen_typo" in err
    assert str(file) in err
    assert "Traceback" not in err


async def test_bad_listen_option(tmp_path: Path) -> None:
    code, _, err = await run_to_exit(tmp_path, "relay", "--listen", "nohost")
    assert code != 0
    assert "--listen" in err
    assert "Traceback" not in err


async def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = await run_to_exit(tmp_path, "relay", "--listen", f"127.0.0.1:{port}")
    assert code != 0
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
    assert "ready" not in out


async def test_help(tmp_path: Path) -> None:
    code, out, err = await run_to_exit(tmp_path, "relay", "--help")
    assert code == 0, err
    assert "--self-signed" in out
    assert "Examples:" in out
    assert "hyco relay --config relay.toml" in out
    assert not (tmp_path / "relay.toml").exists()


def try_it_lines(relay: RunningRelay) -> list[str]:
    """The banner's "try it" shell lines."""
    start = next(i for i, line in enumerate(relay.banner) if "try it" in line)
    return [line.strip() for line in relay.banner[start + 1 : start + 4]]


async def run_shell(script: str, env: dict[str, str], scratch: Path) -> tuple[int, str, str]:
    """Run ``script`` with bash in its own process group; whatever it left in the background is then killed.

    Output goes to files: a background process keeps a pipe open after the script ends.
    """
    with open(scratch / "out", "w+b") as out, open(scratch / "err", "w+b") as err:
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", script, env=env, stdout=out, stderr=err, start_new_session=True
        )
        try:
            code = await asyncio.wait_for(proc.wait(), 3 * TIMEOUT)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        out.seek(0)
        err.seek(0)
        return code, out.read().decode(), err.read().decode()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "self-signed"])
async def test_the_banner_try_it_lines_work_as_printed(tmp_path: Path, tls: bool) -> None:
    args = ("--self-signed", "localhost") if tls else ()
    async with relay_process(tmp_path, *args) as relay:
        lines = try_it_lines(relay)
        assert lines[0].startswith("export HYCO_CONNECTION_STRING=")
        # Not on PATH here: the banner names the script that runs, by its full path.
        assert lines[1].startswith(f"{HYCO} listen --echo")
        if tls:
            assert f"--ca-file {tmp_path / 'tls' / 'ca.pem'}" in lines[2]
        env = {k: v for k, v in relay_env(tmp_path).items() if k != "HYCO_DATA_DIR"}
        env["PATH"] = "/usr/bin:/bin"
        code, out, err = await run_shell("\n".join(lines), env, tmp_path)
        assert (code, out) == (0, "hello\n"), err
        await relay.stop()


async def test_the_banner_says_hyco_when_it_is_on_path(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(HYCO),
        "relay",
        "--listen",
        "127.0.0.1:0",
        env={**relay_env(tmp_path), "PATH": f"{HYCO.parent}:/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(TIMEOUT):
            while not (line := (await proc.stdout.readline()).decode()).strip().startswith("export"):
                assert line
            assert (await proc.stdout.readline()).decode().strip() == "hyco listen --echo &"
    finally:
        await _kill(proc)


async def test_print_connection_string_matches_the_banner(tmp_path: Path) -> None:
    code, printed, err = await run_to_exit(tmp_path, "relay", "--print-connection-string")
    assert code == 0, err
    assert printed.startswith("Endpoint=ws://127.0.0.1:9350/;SharedAccessKeyName=RootManageSharedAccessKey;")
    async with relay_process(tmp_path) as relay:  # the same generated key
        assert (
            relay.connection_string.shared_access_key
            == RelayConnectionString.parse(printed).shared_access_key
        )


async def test_a_configuration_without_rules_warns(tmp_path: Path) -> None:
    file = tmp_path / "norules.toml"
    file.write_text('[server]\nlisten = "127.0.0.1:0"\n\n[[hybrid_connections]]\npath = "echo"\n')
    async with relay_process(tmp_path, "--config", str(file)) as relay:
        code, _, err = await relay.stop()
    assert code == 0
    assert "warning: the configuration has no authorization rules" in err


async def test_ctrl_c_stops_the_relay_with_130(tmp_path: Path) -> None:
    async with relay_process(tmp_path) as relay:
        relay.proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(relay.proc.communicate(), TIMEOUT)
    assert relay.proc.returncode == 130
    assert "shutting down" in err.decode()


async def test_an_untrusted_certificate_names_the_option_that_trusts_it(tmp_path: Path) -> None:
    async with relay_process(tmp_path, "--self-signed", "localhost") as relay:
        cs = f"{relay.connection_string};EntityPath=echo"
        code, _, err = await run_to_exit(tmp_path, "send", "-x", cs)
        assert code == 1
        assert "is not trusted" in err and "--ca-file" in err
        # --insecure gets through (to the missing listener), with a warning.
        code, _, err = await run_to_exit(tmp_path, "send", "-x", cs, "--insecure")
        assert code == 1
        assert "warning: --insecure" in err
        assert "no such hybrid connection 'echo'" in err
        await relay.stop()
