"""Interop with Microsoft's official Java SDK (com.microsoft.azure:azure-relay) through the relay.

The SDK hard-codes ``wss`` (protocol.md 1.1), so every test runs against a TLS relay whose certificate comes
from a minted development CA, trusted through a PKCS12 trust store the fixture builds with ``keytool``.
The peers are tests/interop/java (built by scripts/test); see that folder's README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hyco import HybridConnectionClient, HybridConnectionListener, TokenProvider
from hyco.server import Relay
from tests.conftest import KEY, KEY_NAME, TIMEOUT
from tests.interop.nodeproc import NodeProcess
from tests.interop.test_hyco_ws import MESSAGES, Message, decoded, stdin_line

JAVA_DIR = Path(__file__).parent / "java"
CLASSPATH_FILE = JAVA_DIR / "target" / "classpath.txt"
TOKENS = TokenProvider.from_shared_access_key(KEY_NAME, KEY)


def java_classpath() -> str:
    """The peers' classpath; skips (with the reason) when scripts/test could not build them."""
    if not CLASSPATH_FILE.is_file():
        pytest.skip(
            "the Java peers are not built: scripts/test builds tests/interop/java with Maven, which needs "
            "com.microsoft.azure:azure-relay from Maven Central (see tests/interop/java/README.md)"
        )
    return f"{JAVA_DIR / 'target' / 'classes'}{os.pathsep}{CLASSPATH_FILE.read_text().strip()}"


@dataclass
class JavaEnv:
    """A TLS relay plus what the Java peers and the hyco SDK need to reach it."""

    relay: Relay
    java_options: list[str]
    client_ssl: ssl.SSLContext

    def address(self, path: str = "echo") -> str:
        # What a Java user writes: sb://host:port/path (the SDK dials wss://host:port/$hc/path).
        return self.relay.url.replace("wss://", "sb://", 1) + f"/{path}"


@pytest.fixture(scope="module")
def trust_store(minted_ca: tuple[ssl.SSLContext, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    keytool = shutil.which("keytool")
    assert keytool is not None, "keytool (JDK 17) is needed to build the Java trust store"
    store = tmp_path_factory.mktemp("java") / "truststore.p12"
    subprocess.run(
        [
            keytool,
            "-importcert",
            "-noprompt",
            "-alias",
            "hyco-dev-ca",
            "-file",
            str(minted_ca[1]),
            "-keystore",
            str(store),
            "-storetype",
            "PKCS12",
            "-storepass",
            "changeit",
        ],
        check=True,
        capture_output=True,
    )
    return store


@pytest.fixture
async def java_env(
    relay_factory: Callable[..., Awaitable[Relay]],
    minted_ca: tuple[ssl.SSLContext, Path],
    trust_store: Path,
) -> JavaEnv:
    relay = await relay_factory(ssl_context=minted_ca[0])
    options = [f"-Djavax.net.ssl.trustStore={trust_store}", "-Djavax.net.ssl.trustStorePassword=changeit"]
    return JavaEnv(relay, options, ssl.create_default_context(cafile=str(minted_ca[1])))


@contextlib.asynccontextmanager
async def java_process(env: JavaEnv, main: str, *args: str) -> AsyncIterator[NodeProcess]:
    """``java hyco.interop.<main> args...``; killed and reaped on exit, always."""
    java = shutil.which("java")
    assert java is not None, "java (JDK 17) is not on PATH"
    proc = await asyncio.create_subprocess_exec(
        java,
        *env.java_options,
        "-cp",
        java_classpath(),
        f"hyco.interop.{main}",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,
    )
    p = NodeProcess(f"{main} {args[0]}", proc)  # name by address only: the other arguments are a key
    try:
        yield p
    finally:
        await p._cleanup()


@contextlib.asynccontextmanager
async def java_listener(env: JavaEnv, path: str = "echo", *extra: str) -> AsyncIterator[NodeProcess]:
    async with java_process(env, "WsListener", env.address(path), KEY_NAME, KEY, *extra) as proc:
        await proc.wait_for("listening", timeout=3 * TIMEOUT)  # a JVM start
        yield proc


async def run_java_sender(
    env: JavaEnv, messages: list[Message], path: str = "echo", key: str = KEY
) -> tuple[int, list[dict[str, object]], NodeProcess]:
    async with java_process(env, "WsSender", env.address(path), KEY_NAME, key) as proc:
        for m in messages:
            proc.send_json(stdin_line(m))
        await proc.close_stdin()
        code = await proc.wait_exit(3 * TIMEOUT)
        await proc.rest_of_events()
        return code, list(proc.events), proc


# The SDK's message limit is 64 KiB (RelayConstants.DEFAULT_CONNECTION_BUFFER_SIZE): HybridConnectionClient
# has no setter for it, and a listener's rendezvous closed (1001) on a 1 MiB message even after
# setMaxWebSocketBufferSize (docs/interop.md). Byte-exact tests stay at or under 64 KiB per message.
SENDER_MESSAGES = [(k, d) for k, d in MESSAGES if len(d.encode() if isinstance(d, str) else d) <= 64 * 1024]


async def test_java_listener_serves_hyco_sdk_sender(java_env: JavaEnv) -> None:
    async with java_listener(java_env) as listener:
        client = HybridConnectionClient(java_env.address(), TOKENS, ssl=java_env.client_ssl)
        stream = await asyncio.wait_for(client.connect(), TIMEOUT)
        try:
            for kind, data in SENDER_MESSAGES:
                if isinstance(data, str):
                    await stream.send_text(data)
                else:
                    await stream.send_bytes(data)
                echoed = await asyncio.wait_for(stream.receive(), TIMEOUT)
                assert echoed == data, (kind, len(data), listener.describe())
        finally:
            await stream.close()
        await listener.wait_for("connection_close")


async def test_hyco_sdk_listener_serves_java_sender(java_env: JavaEnv) -> None:
    seen: list[str | bytes] = []

    async def serve(listener: HybridConnectionListener) -> None:
        async for stream in listener:
            async with stream:
                async for message in stream:
                    seen.append(message)
                    if isinstance(message, str):
                        await stream.send_text(message)
                    else:
                        await stream.send_bytes(message)

    async with HybridConnectionListener(java_env.address(), TOKENS, ssl=java_env.client_ssl) as listener:
        server = asyncio.ensure_future(serve(listener))
        try:
            code, events, proc = await run_java_sender(java_env, SENDER_MESSAGES)
        finally:
            server.cancel()
    assert code == 0, proc.describe()
    assert [decoded(e) for e in events if e["event"] == "message"] == SENDER_MESSAGES
    assert seen == [data for _, data in SENDER_MESSAGES]


async def test_java_listener_serves_java_sender(java_env: JavaEnv) -> None:
    async with java_listener(java_env):
        code, events, proc = await run_java_sender(java_env, SENDER_MESSAGES)
    assert code == 0, proc.describe()
    assert [decoded(e) for e in events if e["event"] == "message"] == SENDER_MESSAGES


async def test_java_listener_rejects_with_its_custom_status(java_env: JavaEnv) -> None:
    async with java_listener(java_env, "echo", "reject", "418", "Not today"):
        code, events, proc = await run_java_sender(java_env, [("text", "hi")])
    assert code == 1, proc.describe()
    error = next(e for e in events if e["event"] == "error")
    assert "418" in str(error["message"]), proc.describe()


@pytest.mark.parametrize(
    ("path", "key", "status"),
    [
        # 401: Jetty's client refuses a 401 that names no WWW-Authenticate scheme; a Java user sees that.
        (
            "echo",
            "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=",
            "Authentication challenge without WWW-Authenticate",
        ),
        ("no-such-entity", KEY, "404"),  # unknown hybrid connection
        ("echo", KEY, "404"),  # no listener connected
    ],
    ids=["401-bad-token", "404-unknown-path", "404-no-listener"],
)
async def test_java_sender_sees_each_refusal(java_env: JavaEnv, path: str, key: str, status: str) -> None:
    code, events, proc = await run_java_sender(java_env, [("text", "hi")], path=path, key=key)
    assert code == 1, proc.describe()
    error = next(e for e in events if e["event"] == "error")
    assert status in str(error["message"]), proc.describe()
