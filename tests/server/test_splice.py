"""The splice's rules, driven through in-memory peers (no sockets): hyco.testing.memory_peer."""

from __future__ import annotations

import asyncio

import pytest

from hyco.server.peer import MessageKind
from hyco.server.splice import Splice, splice
from hyco.testing import memory_peer
from tests.conftest import TIMEOUT


def start(a, b, close_timeout: float = TIMEOUT):
    s = Splice(a, b, close_timeout)
    return s, asyncio.ensure_future(s.run())


async def test_messages_keep_order_and_type_both_ways():
    a, b = memory_peer("a"), memory_peer("b")
    _, task = start(a, b)
    a.remote_send("one")
    a.remote_send(b"\x00two")
    b.remote_send(b"three")
    first, second = await b.remote_receive(), await b.remote_receive()
    assert (first.kind, first.data) == (MessageKind.TEXT, b"one")
    assert (second.kind, second.data) == (MessageKind.BINARY, b"\x00two")
    third = await a.remote_receive()
    assert (third.kind, third.data) == (MessageKind.BINARY, b"three")
    a.remote_close()
    assert (await b.remote_receive()).kind is MessageKind.CLOSE
    b.remote_close()
    result = await asyncio.wait_for(task, TIMEOUT)
    assert (result.bytes_a_to_b, result.messages_a_to_b) == (7, 2)
    assert (result.bytes_b_to_a, result.messages_b_to_a) == (5, 1)
    assert result.first_to_close == "a"
    assert a.aborted and b.aborted


async def test_half_close_forwards_close_and_keeps_other_direction():
    a, b = memory_peer("a"), memory_peer("b")
    _, task = start(a, b)
    a.remote_close(1000, "Shutdown")
    close = await b.remote_receive()
    assert (close.kind, close.code, close.reason) == (MessageKind.CLOSE, 1000, "Shutdown")
    # a has not been sent a Close: the relay does not echo on its own.
    assert a.unread == 0
    for i in range(5):
        b.remote_send(b"late %d" % i)
    assert [(await a.remote_receive()).data for _ in range(5)] == [b"late %d" % i for i in range(5)]
    assert not task.done()
    b.remote_close(4000, "done")
    echo = await a.remote_receive()
    assert (echo.kind, echo.code, echo.reason) == (MessageKind.CLOSE, 4000, "done")
    result = await asyncio.wait_for(task, TIMEOUT)
    assert (result.first_to_close, result.close_code, result.vanished) == ("a", 1000, "")


async def test_vanished_peer_gets_the_other_a_1011_and_a_deadline():
    a, b = memory_peer("a"), memory_peer("b")
    _, task = start(a, b, close_timeout=0.05)
    a.remote_vanish()
    close = await b.remote_receive()
    assert (close.kind, close.code) == (MessageKind.CLOSE, 1011)
    # b never answers: the splice still ends by itself and drops both transports.
    result = await asyncio.wait_for(task, TIMEOUT)
    assert result.vanished == "a"
    assert a.aborted and b.aborted


@pytest.mark.parametrize("code", [1005, 1006, 1015])
async def test_reserved_close_codes_are_forwarded_as_1000(code):
    a, b = memory_peer("a"), memory_peer("b")
    _, task = start(a, b)
    a.remote_close(code)
    assert (await b.remote_receive()).code == 1000
    b.remote_close()
    await asyncio.wait_for(task, TIMEOUT)


async def test_a_full_receiver_stops_the_splice_from_reading_the_sender():
    a, b = memory_peer("a"), memory_peer("b", capacity=2)
    _, task = start(a, b)
    for i in range(10):
        a.remote_send(b"%d" % i)
    for _ in range(20):
        await asyncio.sleep(0)
    # Two delivered, one held by the blocked pump, the rest still unread at the sender.
    assert b.unread == 2
    assert a.pending_input == 7
    got = [(await b.remote_receive()).data for _ in range(10)]
    assert got == [b"%d" % i for i in range(10)]
    a.remote_close()
    await b.remote_receive()
    b.remote_close()
    await asyncio.wait_for(task, TIMEOUT)


async def test_shutdown_sends_both_a_close_and_ends_when_they_answer():
    a, b = memory_peer("a"), memory_peer("b")
    s, task = start(a, b)
    await s.shutdown(1001, "bye")
    for peer in (a, b):
        msg = await peer.remote_receive()
        assert (msg.kind, msg.code, msg.reason) == (MessageKind.CLOSE, 1001, "bye")
        peer.remote_close(1001)
    await asyncio.wait_for(task, TIMEOUT)


async def test_messages_to_a_broken_peer_are_dropped_until_the_sender_closes():
    a, b = memory_peer("a"), memory_peer("b")
    task = asyncio.ensure_future(splice(a, b, close_timeout=0.05))
    b._gone = True  # writes to b now fail, but b's receive side has not noticed yet
    a.remote_send(b"lost")
    a.remote_close()
    b.remote_vanish()
    result = await asyncio.wait_for(task, TIMEOUT)
    assert result.messages_a_to_b == 0
