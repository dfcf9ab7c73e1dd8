"""examples/article_listener.py (the article's raw websocket-client listener) against the relay, ws and wss.

A hyco SDK sender talks to it byte-exact; it copes with control channel notifications (an HTTP ``request``
with and without a body, an ``accept`` for a sender that already gave up); killed between an accept and its
dial, the relay keeps serving and the waiting sender gets the documented 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from hyco import HybridConnectionClient, HybridConnectionStream, TokenProvider
from hyco.exceptions import EndpointNotFound, StreamBroken
from hyco.protocol import create_token
from hyco.server import Limits
from tests.conftest import KEY, KEY_NAME, TIMEOUT
from tests.interop.conftest import Interop
from tests.interop.test_hyco_ws import MESSAGES

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "article_listener.py"
TOKENS = TokenProvider.from_shared_access_key(KEY_NAME, KEY)


class ArticleListener:
    """The example as a subprocess; its stdout lines are kept for assertions and failure messages."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def wait_line(self, prefix: str) -> str:
        """The next stdout line starting with ``prefix`` (earlier ones are kept); fails on EOF or timeout."""
        assert self.proc.stdout is not None
        while True:
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
            except TimeoutError:
                pytest.fail(f"no line {prefix!r} within {TIMEOUT} s; got {self.lines}")
            if not raw:
                pytest.fail(f"the listener exited before printing {prefix!r}; got {self.lines}")
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            if line.startswith(prefix):
                return line


@contextlib.asynccontextmanager
async def article_listener(env: Interop, path: str = "echo") -> AsyncIterator[ArticleListener]:
    """Run the example on ``path`` until its control channel is open; killed on exit."""
    cs = f"Endpoint={env.relay.url}/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY};EntityPath={path}"
    ca = [env.node_env["NODE_EXTRA_CA_CERTS"]] if env.scheme == "wss" else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), cs, *ca, stdout=asyncio.subprocess.PIPE, limit=1024 * 1024
    )
    listener = ArticleListener(proc)
    try:
        await listener.wait_line("listening")
        yield listener
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def client(env: Interop) -> HybridConnectionClient:
    options = {"ssl": env.client_ssl} if env.client_ssl is not None else {}
    return HybridConnectionClient(f"{env.relay.url}/echo", TOKENS, **options)


async def connect(env: Interop) -> HybridConnectionStream:
    return await asyncio.wait_for(client(env).connect(), TIMEOUT)


async def echo_round(stream: HybridConnectionStream, data: str | bytes) -> None:
    if isinstance(data, str):
        await stream.send_text(data)
    else:
        await stream.send_bytes(data)
    assert await asyncio.wait_for(stream.receive(), TIMEOUT) == data


async def test_article_listener_echoes_a_hyco_sender_byte_exact(interop: Interop) -> None:
    async with article_listener(interop) as listener:
        stream = await connect(interop)
        try:
            await listener.wait_line("accepted ")
            for _, data in MESSAGES:  # text and binary, empty to 1 MiB
                await echo_round(stream, data)
        finally:
            await stream.close()
        await listener.wait_line("sender closed")


async def test_article_listener_answers_http_requests_and_keeps_serving(
    interop: Interop, session: aiohttp.ClientSession
) -> None:
    url = interop.relay.url.replace("ws", "http", 1) + "/echo"
    token = create_token("http://127.0.0.1/echo/", KEY_NAME, KEY, 2**31 - 1)
    async with article_listener(interop) as listener:
        async with session.get(url, headers={"ServiceBusAuthorization": token}) as response:
            assert (response.status, response.reason) == (
                501,
                "This listener serves WebSocket connections only",
            )
        await listener.wait_line("notification: answered request")
        # An inline request with a body: the body follows on the control channel as a binary message.
        async with session.post(
            url, data=b"x" * 1000, headers={"ServiceBusAuthorization": token}
        ) as response:
            assert response.status == 501
        await listener.wait_line("notification: skipped a 1000-byte request body")
        stream = await connect(interop)
        try:
            await echo_round(stream, "still serving")
        finally:
            await stream.close()


async def test_article_listener_survives_an_accept_for_a_sender_that_gave_up(relay_factory) -> None:
    env = await _short_accept_interop(relay_factory)
    async with article_listener(env) as listener:
        busy = await connect(env)  # served inside on_message: the listener reads no notification meanwhile
        await listener.wait_line("accepted ")
        with pytest.raises(EndpointNotFound, match="None of the connected listeners accepted"):
            await connect(env)  # its accept waits unread on the control channel until the relay gives up
        await busy.close()
        await listener.wait_line("sender closed")
        failed = await listener.wait_line("rendezvous failed")
        assert "403" in failed, listener.lines
        stream = await connect(env)
        try:
            await echo_round(stream, b"after the late accept")
        finally:
            await stream.close()


async def test_killed_between_accept_and_dial_the_relay_keeps_serving(relay_factory) -> None:
    env = await _short_accept_interop(relay_factory)
    async with article_listener(env) as listener:
        busy = await connect(env)
        await listener.wait_line("accepted ")
        waiting = asyncio.ensure_future(connect(env))
        listener.proc.kill()  # the accept for `waiting` is sent or about to be; it will never be dialed
        with pytest.raises(EndpointNotFound):
            await waiting
        # The spliced sender learns that its listener is gone: not a clean close.
        with pytest.raises(StreamBroken):
            await asyncio.wait_for(busy.receive(), TIMEOUT)
        await busy.close()
    # A new listener on the same path serves the next sender.
    async with article_listener(env) as listener:
        stream = await connect(env)
        try:
            await echo_round(stream, "the relay kept serving")
        finally:
            await stream.close()


async def _short_accept_interop(relay_factory) -> Interop:
    # A sender gives up on an unanswered accept after 1 s, so these tests need not wait 30 s.
    relay = await relay_factory(limits=Limits(accept_timeout=1.0))
    return Interop(relay, "ws")
