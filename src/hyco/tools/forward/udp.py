"""UDP over a relayed stream: one stream per session, one WebSocket message per datagram.

Both sides use the same session loop (:func:`relay_datagrams`): datagrams from the local socket wait in a
bounded queue (a full queue drops, as a full UDP buffer would) and go out one binary message each; messages
from the relay are handed to ``deliver``. A session with no datagram either way for ``idle`` seconds ends on
the side that notices first; the other side follows when it sees the Close.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hyco.client.stream import HybridConnectionStream
from hyco.tools.forward._report import logger

__all__ = [
    "DEFAULT_UDP_IDLE_TIMEOUT",
    "QUEUE_SIZE",
    "Activity",
    "DatagramHandler",
    "new_queue",
    "offer",
    "relay_datagrams",
]

#: A UDP session with no datagram either way for this long is closed (seconds).
DEFAULT_UDP_IDLE_TIMEOUT = 60.0
#: Datagrams waiting for a session's relayed stream; more are dropped, as a full UDP buffer would.
QUEUE_SIZE = 256


@dataclass
class Activity:
    """When a session last carried a datagram (monotonic seconds), and the bytes it carried each way."""

    last: float = field(default_factory=time.monotonic)
    to_relay: int = 0
    from_relay: int = 0

    def touch(self) -> None:
        """Note traffic now."""
        self.last = time.monotonic()

    async def wait_idle(self, idle: float) -> None:
        """Return once no traffic was noted for ``idle`` seconds."""
        # Sleep until the deadline the last traffic set, then look again: traffic moves the deadline, and
        # waking once per idle period is cheaper than an event per datagram.
        while (remaining := self.last + idle - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)


def new_queue() -> asyncio.Queue[bytes]:
    """A session's bounded queue of datagrams waiting to go to the relay."""
    return asyncio.Queue(QUEUE_SIZE)


def offer(queue: asyncio.Queue[bytes], data: bytes) -> None:
    """Queue one datagram for the relay; drop it when the queue is full (UDP: never buffer without bound)."""
    with contextlib.suppress(asyncio.QueueFull):
        queue.put_nowait(data)


class DatagramHandler(asyncio.DatagramProtocol):
    """A datagram endpoint that hands every datagram to ``received(data, addr)``."""

    def __init__(self, received: Callable[[bytes, Any], None], name: str) -> None:
        self.received = received
        self.name = name

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Hand the datagram on."""
        self.received(data, addr)

    def error_received(self, exc: Exception) -> None:
        """Note a socket error and carry on."""
        # ICMP port unreachable and the like: UDP has no connection to fail, so just note it.
        logger.debug("! %s: %s", self.name, exc)


async def relay_datagrams(
    stream: HybridConnectionStream,
    outgoing: asyncio.Queue[bytes],
    deliver: Callable[[bytes], None],
    activity: Activity,
    idle: float,
) -> str:
    """Move datagrams between a queue/deliver pair and a relayed stream until idle, closed or broken.

    Returns:
        How the session ended, for the log line. Failures are reported there, never raised.
    """

    async def up() -> str:
        while True:
            data = await outgoing.get()
            await stream.send_bytes(data)
            activity.to_relay += len(data)

    async def down() -> str:
        while (message := await stream.receive()) is not None:
            data = message.encode() if isinstance(message, str) else message
            activity.touch()
            activity.from_relay += len(data)
            deliver(data)
        return "closed by the remote side"

    async def watch() -> str:
        await activity.wait_idle(idle)
        return f"idle for {idle:g} s"

    tasks = [asyncio.ensure_future(c) for c in (up(), down(), watch())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = done.pop()
        exc = first.exception()
        if exc is not None:
            return f"relay error: {exc}"
        return first.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
