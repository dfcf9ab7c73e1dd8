"""Per-source limits (issue 13): connections per client address and handshakes/requests per second, through
real sockets on 127.0.0.1; the token bucket's arithmetic and its bounded table on a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from hyco.server import Limits, Relay
from hyco.server.sources import RateLimited, SourceLimits
from tests.conftest import TIMEOUT, test_config
from tests.server.wire import RawListener, handshake_error, recording_session, send_connect


@contextlib.asynccontextmanager
async def relay(**limits: float) -> AsyncIterator[Relay]:
    r = Relay(test_config(limits=Limits(**limits)))  # type: ignore[arg-type]
    await r.start()
    try:
        yield r
    finally:
        await r.close()


async def held_connection(r: Relay) -> asyncio.StreamWriter:
    """A kept-alive connection the relay has counted (it answered a request on it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    writer.write(b"GET /$health HTTP/1.1\r\nHost: relay\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 200"), head
    return writer


async def first_answer(r: Relay) -> bytes:
    """What the relay says on a fresh connection before the client sends anything (b"" if nothing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    try:
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()


async def admitted_after_close(r: Relay) -> None:
    """Wait until a fresh connection is admitted again (the relay saw a connection close)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            writer = await held_connection_or_none(r)
            if writer is not None:
                writer.close()
                return


async def held_connection_or_none(r: Relay) -> asyncio.StreamWriter | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    writer.write(b"GET /$health HTTP/1.1\r\nHost: relay\r\n\r\n")
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        head = b""
    if head.startswith(b"HTTP/1.1 200"):
        return writer
    writer.close()
    return None


async def test_connections_over_the_per_source_limit_get_503_before_a_byte_is_read(caplog):
    caplog.set_level(logging.INFO, "hyco.relay")
    async with relay(max_connections_per_source=3) as r:
        held = [await held_connection(r) for _ in range(3)]
        for _ in range(5):
            answer = await first_answer(r)
            assert answer.startswith(b"HTTP/1.1 503 ServerBusy: 3 connections are open from your address"), (
                answer
            )
            assert b"max_connections_per_source" in answer and b"Connection: close" in answer
        # An ordinary client (which sends its request at once) reads the same answer.
        async with aiohttp.ClientSession() as session, session.get(f"{r.http_url}/$health") as resp:
            assert resp.status == 503
            assert "max_connections_per_source" in (await resp.json())["error"]["message"]
        refusals = [
            rec for rec in caplog.records if "refused a connection from 127.0.0.1" in rec.getMessage()
        ]
        assert refusals  # logged (throttled per address: test_refusals_are_logged_once_a_second_per_address)
        held.pop().close()
        await admitted_after_close(r)  # the count went down when the connection ended
        for writer in held:
            writer.close()


async def test_a_listeners_rendezvous_dial_stops_counting_once_upgraded():
    # listener + sender + the listener's dial = 3 connections; once the dial is upgraded it no longer
    # counts, so a third ordinary connection fits under a limit of 3 (it would not if the dial still counted).
    async with relay(max_connections_per_source=3) as r, aiohttp.ClientSession() as session:
        listener = await RawListener.open(session, r.url)
        sender_task = asyncio.ensure_future(send_connect(session, r.url))
        accepted = await listener.accept()
        sender = await asyncio.wait_for(sender_task, TIMEOUT)
        await sender.send_bytes(b"ping")
        assert (await asyncio.wait_for(accepted.receive(), TIMEOUT)).data == b"ping"
        writer = await held_connection(r)
        writer.close()
        await asyncio.gather(accepted.close(), sender.close(), listener.ws.close())


async def test_a_spliced_sender_counts_until_its_connection_ends():
    # The engine takes spliced sockets away from the HTTP server; the sender's connection must still count
    # for its address while it is open, and stop counting when it ends.
    async with relay(max_connections_per_source=3) as r, aiohttp.ClientSession() as session:
        listener = await RawListener.open(session, r.url)
        sender_task = asyncio.ensure_future(send_connect(session, r.url))
        accepted = await listener.accept()
        sender = await asyncio.wait_for(sender_task, TIMEOUT)
        await sender.send_bytes(b"ping")
        assert (await asyncio.wait_for(accepted.receive(), TIMEOUT)).data == b"ping"
        writer = await held_connection(r)  # listener + sender + this one: the limit
        assert (await first_answer(r)).startswith(b"HTTP/1.1 503")
        await asyncio.gather(accepted.close(), sender.close())
        await admitted_after_close(r)  # the sender's connection ended: it no longer counts
        writer.close()
        await listener.ws.close()


async def test_handshakes_and_requests_over_the_rate_get_429_with_retry_after():
    # rate 0.5/s: a burst of one, the next token in two seconds (far longer than the test takes).
    async with relay(handshake_rate_per_source=0.5) as r, recording_session() as session:
        async with session.get(f"{r.http_url}/open") as resp:
            assert resp.status == 502  # admitted (no listener connected)
        async with session.get(f"{r.http_url}/open") as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "2"
            assert "handshake_rate_per_source" in (await resp.json())["error"]["message"]
        refusal = await handshake_error(send_connect(session, r.url))
        assert refusal.status == 429
        assert "Too Many Requests" in refusal.message
        async with session.get(f"{r.http_url}/$health") as resp:
            assert resp.status == 200  # health is not charged


def test_the_bucket_refills_at_the_rate_and_bursts_up_to_it():
    now = [0.0]
    limits = SourceLimits(10, 2.0, clock=lambda: now[0])
    limits.take("a")
    limits.take("a")
    with pytest.raises(RateLimited) as refused:
        limits.take("a")
    assert refused.value.retry_after == 1
    limits.take("b")  # another address has its own bucket
    now[0] = 0.5  # one token back
    limits.take("a")
    with pytest.raises(RateLimited):
        limits.take("a")
    now[0] = 100.0  # never more than the burst
    for _ in range(2):
        limits.take("a")
    with pytest.raises(RateLimited):
        limits.take("a")


def test_the_tables_stay_bounded_under_a_spray_of_addresses():
    limits = SourceLimits(2, 1.0, max_sources=100, clock=lambda: 0.0)
    for i in range(10_000):
        limits.take(f"10.0.{i // 256}.{i % 256}")
    assert limits.sources == 100
    assert limits.open_connection("x") is None
    assert limits.open_connection("x") is None
    assert limits.open_connection("x") is not None  # refused, not counted
    limits.close_connection("x")
    limits.close_connection("x")
    assert limits.connections("x") == 0
    assert limits.sources == 100  # no entry left behind for an address without connections


def test_refusals_are_logged_once_a_second_per_address(caplog):
    caplog.set_level(logging.INFO, "hyco.relay")
    now = [0.0]
    limits = SourceLimits(1, 1.0, clock=lambda: now[0])
    assert limits.open_connection("a") is None
    for _ in range(5):
        assert limits.open_connection("a") is not None
    assert limits.open_connection("b") is None
    assert limits.open_connection("b") is not None
    now[0] = 1.0
    assert limits.open_connection("a") is not None
    lines = [rec.getMessage() for rec in caplog.records]
    assert [line.split(":")[0] for line in lines] == [
        "refused a connection from a",
        "refused a connection from b",
        "refused a connection from a",
    ]
    assert lines[2].endswith("(4 more like it not logged)")
