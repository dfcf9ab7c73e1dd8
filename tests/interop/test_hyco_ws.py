"""Interop with the official Node ``hyco-ws`` 1.0.5 package (protocol.md 3 and 10), on ws and on wss.

Every test runs twice: against a plain ``ws://`` relay, and against a ``wss://`` relay whose certificate comes
from a minted development CA that Node trusts through ``NODE_EXTRA_CA_CERTS``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest

from tests.conftest import KEY, KEY_NAME, TIMEOUT
from tests.interop.conftest import Interop
from tests.interop.nodeproc import Event, NodeProcess, node_process
from tests.server.wire import RawListener, send_connect, token_for

Message = tuple[str, str | bytes]  # ("text", str) or ("binary", bytes)

MESSAGES: list[Message] = [
    ("text", ""),
    ("text", "hello"),
    ("text", "héllo wörld ✓ 𝄞 日本語 \u0000 end"),
    ("binary", b""),
    ("binary", bytes(range(256))),
    ("binary", random.Random(20240601).randbytes(1024 * 1024)),
    ("text", "ü" * 40_000),  # 80 000 UTF-8 bytes: more than a 16-bit frame length
]


# --- helpers ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def ws_listener(
    env: Interop, path: str = "echo", *, key: str = KEY, extra_env: dict[str, str] | None = None
) -> AsyncIterator[NodeProcess]:
    """ws_listener.js on ``path``; waits for its control channel to open unless extra_env is given."""
    async with node_process(
        "ws_listener.js", env.uri(path, "listen"), KEY_NAME, key, env={**env.node_env, **(extra_env or {})}
    ) as proc:
        if extra_env is None:
            event = await proc.next_event()
            assert event == {"event": "listening"}, proc.describe()
        yield proc


def stdin_line(message: Message) -> dict[str, str]:
    kind, payload = message
    if kind == "binary":
        assert isinstance(payload, bytes)
        return {"type": "binary", "data": base64.b64encode(payload).decode()}
    return {"type": "text", "data": payload}  # type: ignore[dict-item]


def decoded(event: Event) -> Message:
    assert event["event"] == "message", event
    if event["type"] == "binary":
        return ("binary", base64.b64decode(event["data"]))
    return ("text", event["data"])


async def run_sender(
    env: Interop, path: str, messages: list[Message]
) -> tuple[int, list[Event], NodeProcess]:
    """ws_sender.js: send ``messages``, end stdin, wait for it to exit; returns (exit code, events, proc)."""
    uri = env.uri(path, "connect")
    async with node_process("ws_sender.js", uri, KEY_NAME, KEY, env=env.node_env) as proc:
        for m in messages:
            proc.send_json(stdin_line(m))
        await proc.close_stdin()
        code = await proc.wait_exit()
        await proc.rest_of_events()
        return code, list(proc.events), proc


async def echo_through_node(env: Interop, messages: list[Message], path: str = "echo") -> list[Event]:
    """A hyco-ws sender round trip against a listener that echoes; asserts byte-exact echoes."""
    code, events, proc = await run_sender(env, path, messages)
    assert code == 0, proc.describe()
    assert events[0] == {"event": "open"}, proc.describe()
    assert [decoded(e) for e in events[1:-1]] == messages, proc.describe()
    assert events[-1]["event"] == "close" and events[-1]["code"] == 1000, proc.describe()
    return events


def summary(messages: list[Message]) -> list[tuple[str, int]]:
    """Readable form for assertion messages (a 1 MiB diff is useless)."""
    return [(k, len(p)) for k, p in messages]


# --- 1. hyco-ws listener + hyco-ws sender ---------------------------------------------------------


async def test_hyco_ws_sender_and_listener_echo_byte_exact(interop: Interop) -> None:
    async with ws_listener(interop) as listener:
        await echo_through_node(interop, MESSAGES)

        connection = await listener.wait_for("connection")
        url = urlsplit(connection["url"])
        assert (url.scheme, url.hostname, url.port) == (interop.scheme, "127.0.0.1", interop.relay.port)
        assert url.path == "/$hc/echo"
        assert dict(parse_qsl(url.query))["sb-hc-action"] == "accept"
        headers = {k.lower() for k in connection["headers"]}
        assert "sec-websocket-key" in headers, connection["headers"]
        assert "servicebusauthorization" not in headers, connection["headers"]
        # The sender closed with 1000 once every echo came back; the listener sees that close.
        closed = await listener.wait_for("connection_close")
        assert closed["code"] == 1000, listener.describe()
        assert not [e for e in listener.events if e["event"] == "error"], listener.describe()


# --- 2. hyco-ws listener + raw Python sender ------------------------------------------------------


async def test_hyco_ws_listener_sees_connect_headers_suffix_and_query(
    interop: Interop, session: aiohttp.ClientSession
) -> None:
    async with ws_listener(interop) as listener:
        sender = await asyncio.wait_for(
            send_connect(
                session,
                interop.relay.url,
                "echo/sub/dir",
                token=token_for(interop.relay.url, "echo"),
                query="x=1&y=two&empty=",
                headers={"X-Hyco-Interop": "custom-value-42"},
            ),
            TIMEOUT,
        )
        try:
            connection = await listener.wait_for("connection")

            url = urlsplit(connection["url"])
            assert (url.scheme, url.hostname, url.port) == (interop.scheme, "127.0.0.1", interop.relay.port)
            assert url.path == "/$hc/echo/sub/dir", connection["url"]
            # protocol.md 1.6: the sender's non-sb-hc query first, in order, then sb-hc-action / sb-hc-id.
            assert url.query.startswith("x=1&y=two&empty=&"), connection["url"]
            query = parse_qsl(url.query, keep_blank_values=True)
            assert query[:3] == [("x", "1"), ("y", "two"), ("empty", "")]
            assert dict(query)["sb-hc-action"] == "accept"

            headers = {k.lower(): v for k, v in connection["headers"].items()}
            assert headers.get("sec-websocket-key"), connection["headers"]
            assert headers.get("host") == f"127.0.0.1:{interop.relay.port}", connection["headers"]
            assert headers.get("x-hyco-interop") == "custom-value-42", connection["headers"]
            assert "servicebusauthorization" not in headers, connection["headers"]

            # And the connection really is spliced to the hyco-ws listener.
            await sender.send_str("ping ✓")
            msg = await sender.receive(TIMEOUT)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.TEXT, "ping ✓")
            await sender.send_bytes(bytes(range(256)))
            msg = await sender.receive(TIMEOUT)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, bytes(range(256)))
        finally:
            await sender.close()
        closed = await listener.wait_for("connection_close")
        assert closed["code"] == 1000, listener.describe()


# --- 3. raw Python listener + hyco-ws sender ------------------------------------------------------


async def test_raw_listener_and_hyco_ws_sender_byte_exact_and_close_code(
    interop: Interop, session: aiohttp.ClientSession
) -> None:
    listener = await RawListener.open(session, interop.relay.url)
    try:
        async with node_process(
            "ws_sender.js", interop.uri("echo", "connect"), KEY_NAME, KEY, env=interop.node_env
        ) as sender:
            # stdin stays open, so the sender does not close by itself: the listener closes first.
            for m in MESSAGES:
                sender.send_json(stdin_line(m))
            rendezvous = await listener.accept()
            try:
                assert await sender.next_event() == {"event": "open"}, sender.describe()
                received: list[Message] = []
                for _ in MESSAGES:
                    msg = await rendezvous.receive(TIMEOUT)
                    assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
                    kind = "text" if msg.type is aiohttp.WSMsgType.TEXT else "binary"
                    received.append((kind, msg.data))
                assert received == MESSAGES, summary(received)

                for kind, payload in reversed(MESSAGES):
                    if kind == "text":
                        assert isinstance(payload, str)
                        await rendezvous.send_str(payload)
                    else:
                        assert isinstance(payload, bytes)
                        await rendezvous.send_bytes(payload)
                echoed = [decoded(await sender.next_event()) for _ in MESSAGES]
                assert echoed == list(reversed(MESSAGES)), summary(echoed)
            finally:
                await asyncio.wait_for(rendezvous.close(code=4321, message=b"raw listener bye"), TIMEOUT)

            closed = await sender.next_event()
            assert closed == {"event": "close", "code": 4321, "reason": "raw listener bye"}, sender.describe()
            assert await sender.wait_exit() == 0, sender.describe()
            assert rendezvous.close_code == 4321
    finally:
        await listener.ws.close()


# --- 4. bad credentials do not disturb good peers -------------------------------------------------


@pytest.mark.slow
async def test_listener_with_wrong_key_gets_401_while_relay_keeps_serving(interop: Interop) -> None:
    wrong_key = "d3JvbmctbGlzdGVuZXIta2V5LW5vdC1hbnl3aGVyZQ=="
    async with ws_listener(interop) as good:
        # hyco-ws reconnects from both its error and close handlers with no delay (protocol.md 10); the
        # script exits after this many control-channel errors (enough for a storm, few enough to end in time
        # on a loaded machine: 500 over wss did not, once).
        async with ws_listener(
            interop, key=wrong_key, extra_env={"HYCO_INTEROP_EXIT_AFTER_ERRORS": "200"}
        ) as bad:
            error = await bad.wait_for("error")
            assert error.get("status") == 401, bad.describe()
            # The first 401 is in: the reconnect storm is under way (200 errors take ~0.2 s on ws and
            # ~0.6 s on wss here, unloaded). An echo through the good pair meanwhile.
            await echo_through_node(interop, [("text", "during"), ("binary", bytes(range(256)))])

            exited = await bad.wait_for("exit")
            assert exited["reason"] == "too many errors", bad.describe()
            assert await bad.wait_exit() == 1, bad.describe()
            statuses = {e.get("status") for e in bad.events if e["event"] == "error"}
            assert statuses == {401}, bad.describe()
            assert not [e for e in bad.events if e["event"] in ("listening", "connection")], bad.describe()

        # ...and after it.
        await echo_through_node(interop, [("text", "after"), ("binary", b"\x00\xff")])
        # The good listener never lost its control channel and served both connections.
        await good.wait_for(lambda e: e["event"] == "connection_close")
        await good.wait_for(lambda e: e["event"] == "connection_close")
        assert [e["event"] for e in good.events].count("listening") == 1, good.describe()
        assert [e["event"] for e in good.events].count("connection") == 2, good.describe()
        assert not [e for e in good.events if e["event"] == "error"], good.describe()


# --- 5. sender without a listener -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["echo", "no-such-connection"])
async def test_hyco_ws_sender_without_listener_gets_404(interop: Interop, path: str) -> None:
    code, events, proc = await run_sender(interop, path, [("text", "nobody home")])
    assert code == 1, proc.describe()
    errors = [e for e in events if e["event"] == "error"]
    assert errors and errors[0].get("status") == 404, proc.describe()
    # protocol.md 3.4: the reason phrase says which 404 it is.
    expected = "no listeners connected" if path == "echo" else "does not exist"
    assert expected in errors[0].get("reason", ""), proc.describe()
    assert not [e for e in events if e["event"] in ("open", "message")], proc.describe()
