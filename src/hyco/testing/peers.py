"""An in-memory implementation of :class:`hyco.server.splice.Peer`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hyco.server.peer import Message, MessageKind, PeerGone

__all__ = ["MemoryPeer", "memory_peer"]


class MemoryPeer:
    """One WebSocket end held in memory.

    Args:
        name: the peer's name in splice results.
        capacity: messages the relay may have sent that the remote has not read yet before ``send`` waits
            (0 = unbounded).
    """

    def __init__(self, name: str, capacity: int = 0) -> None:
        self.name = name
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._capacity = capacity
        self._space = asyncio.Event()
        self.aborted = False
        self._gone = False

    # --- the splice's side (Peer protocol) ---

    async def receive(self) -> Message:
        """Next message the remote sent."""
        return await self._inbox.get()

    async def send(self, message: Message) -> None:
        """Deliver a data message to the remote; waits while ``capacity`` unread messages are queued."""
        while self._capacity and self._outbox.qsize() >= self._capacity:
            self._space.clear()
            await self._space.wait()
        if self._gone or self.aborted:
            raise PeerGone(self.name)
        self._outbox.put_nowait(message)

    def send_now(self, messages: Sequence[Message]) -> bool:
        """Deliver messages to the remote at once, unless ``capacity`` unread messages are queued (then
        deliver nothing and return False)."""
        if self._gone or self.aborted:
            raise PeerGone(self.name)
        if self._capacity and self._outbox.qsize() >= self._capacity:
            return False
        for message in messages:
            self._outbox.put_nowait(message)
        return True

    async def send_close(self, code: int, reason: str) -> None:
        """Deliver a Close to the remote (never waits: control frames jump the queue on a real socket)."""
        if self._gone or self.aborted:
            raise PeerGone(self.name)
        self._outbox.put_nowait(Message(MessageKind.CLOSE, code=code, reason=reason))

    def abort(self) -> None:
        """Drop the (imaginary) transport."""
        self.aborted = True

    # --- the test's side (the remote party) ---

    def remote_send(self, data: bytes | str) -> None:
        """The remote sends a binary (bytes) or text (str) message."""
        if isinstance(data, str):
            self._inbox.put_nowait(Message(MessageKind.TEXT, data.encode()))
        else:
            self._inbox.put_nowait(Message(MessageKind.BINARY, data))

    def remote_close(self, code: int = 1000, reason: str = "") -> None:
        """The remote sends a Close frame."""
        self._inbox.put_nowait(Message(MessageKind.CLOSE, code=code, reason=reason))

    def remote_vanish(self) -> None:
        """The remote's connection breaks without a Close; later sends to it fail."""
        self._gone = True
        self._inbox.put_nowait(Message(MessageKind.GONE))

    async def remote_receive(self, timeout: float = 10.0) -> Message:
        """Next message the relay sent to the remote."""
        message = await asyncio.wait_for(self._outbox.get(), timeout)
        self._space.set()
        return message

    @property
    def unread(self) -> int:
        """Messages the relay sent that the remote has not read."""
        return self._outbox.qsize()

    @property
    def pending_input(self) -> int:
        """Messages the remote sent that the relay has not read."""
        return self._inbox.qsize()


def memory_peer(name: str, capacity: int = 0) -> MemoryPeer:
    """A new :class:`MemoryPeer`."""
    return MemoryPeer(name, capacity)
