"""One conformance check for every relayed-stream implementation (style.md habit 12).

:func:`check_relay_stream` takes a factory of connected stream pairs and checks the contract that
:class:`hyco.HybridConnectionStream` documents: bytes and messages both ways, ``b""`` tolerated, half-close
(protocol.md 3.5: ``shutdown()`` sends Close and keeps reading), a read pending while the stream is closed
ends, use after close raises :class:`~hyco.exceptions.StreamClosed`, and a peer that vanishes surfaces as
:class:`~hyco.exceptions.StreamBroken`. Modelled on trio's ``check_two_way_stream`` and
``check_half_closeable_stream``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from hyco.exceptions import StreamBroken, StreamClosed

__all__ = ["RelayStreamLike", "check_relay_stream"]


class RelayStreamLike(Protocol):
    """The part of :class:`hyco.HybridConnectionStream` the check exercises."""

    async def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes; ``b""`` at the peer's end of data."""

    async def write(self, data: bytes) -> None:
        """Send bytes."""

    async def send_bytes(self, data: bytes) -> None:
        """Send one binary message."""

    async def receive(self) -> str | bytes | None:
        """Receive one message; None at the peer's end of data."""

    async def shutdown(self) -> None:
        """Half-close: no more writes, reads go on."""

    async def close(self) -> None:
        """Close both directions."""


S = TypeVar("S", bound=RelayStreamLike)


async def _read_all(stream: RelayStreamLike) -> bytes:
    chunks = bytearray()
    while data := await stream.read():
        chunks += data
    return bytes(chunks)


async def check_relay_stream(
    make_pair: Callable[[], Awaitable[tuple[S, S]]],
    reset: Callable[[S], Awaitable[None]],
    *,
    timeout: float = 10.0,
) -> None:
    """Run the conformance checks; raise :class:`AssertionError` on the first violation.

    Args:
        make_pair: returns two connected, open streams ``(a, b)``; called once per check. The caller
            closes them afterwards (the check closes some itself).
        reset: breaks a stream abruptly (drops its connection without a Close), as a crashing peer would.
        timeout: seconds each check may take.

    Raises:
        AssertionError: the streams broke the contract; the message says how.
        TimeoutError: a check hung (a read that should have ended did not).
    """
    async with asyncio.timeout(timeout):
        # Bytes and messages, both ways; empty writes are harmless.
        a, b = await make_pair()
        await a.write(b"hello")
        await a.write(b"")
        got = b""
        while len(got) < 5:
            got += await b.read(5 - len(got))
        assert got == b"hello", f"read {got!r}, expected b'hello'"
        await b.send_bytes(b"\x00\xffbinary")
        assert await a.receive() == b"\x00\xffbinary", "a binary message changed on the way"

        # Half-close: a stops sending, still reads what b sends afterwards.
        await a.shutdown()
        await a.shutdown()  # idempotent
        assert await b.read() == b"", "the peer's shutdown() did not end the data"
        try:
            await a.write(b"after shutdown")
        except StreamClosed:
            pass
        else:
            raise AssertionError("write after shutdown() did not raise StreamClosed")
        await b.write(b"late answer")
        assert await _read_all_until(a, b"late answer") == b"late answer", "data after half-close lost"
        await b.shutdown()
        assert await a.read() == b"", "the second shutdown() did not end the data"
        await a.close()
        await b.close()

    async with asyncio.timeout(timeout):
        # A read pending while its own stream is closed ends (with b"" or StreamClosed), never hangs.
        a, b = await make_pair()
        pending = asyncio.ensure_future(b.read())
        await asyncio.sleep(0)
        # Both ends close (a close() may wait for the peer's Close, as .NET's CloseAsync does).
        await asyncio.gather(b.close(), a.close())
        with contextlib.suppress(StreamClosed):
            assert await pending == b"", "a read pending during close() returned data"
        # Use after close raises StreamClosed.
        for use in (b.read(), b.write(b"x"), b.receive()):
            try:
                await use
            except StreamClosed:
                continue
            raise AssertionError("using a closed stream did not raise StreamClosed")
        await b.close()  # idempotent

    async with asyncio.timeout(timeout):
        # A peer that vanishes (no Close) surfaces as StreamBroken, not as a clean end of data.
        a, b = await make_pair()
        await reset(b)
        try:
            await _read_all(a)
        except StreamBroken:
            pass
        else:
            raise AssertionError("a vanished peer looked like a clean close (expected StreamBroken)")
        await a.close()


async def _read_all_until(stream: RelayStreamLike, expected: bytes) -> bytes:
    chunks = bytearray()
    while len(chunks) < len(expected):
        data = await stream.read(len(expected) - len(chunks))
        if not data:
            break
        chunks += data
    return bytes(chunks)
