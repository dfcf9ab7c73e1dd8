"""The relay's WebSocket seam: one socket end as the relay core sees it.

The splice, the control channel and the forwarders talk to a :class:`Peer`, never to the WebSocket library;
the engine's lean sockets (``hyco.server.framepeer``, ``hyco.server.controlpeer``) implement it, and
``hyco.testing`` ships in-memory peers for tests. A faster engine plugs in by implementing this protocol.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ChannelPeer", "LinkablePeer", "Message", "MessageKind", "Peer", "PeerGone"]


class MessageKind(enum.Enum):
    """What a peer delivered."""

    TEXT = "text"
    BINARY = "binary"
    CLOSE = "close"
    GONE = "gone"  # the peer vanished or broke the protocol; no Close frame to forward


@dataclass(frozen=True, slots=True)
class Message:
    """One message from a peer. ``data`` is the raw payload (UTF-8 bytes for text)."""

    kind: MessageKind
    data: bytes = b""
    code: int = 1000
    reason: str = ""


class PeerGone(Exception):
    """Raised by :meth:`Peer.send` when the peer's socket can no longer be written."""


class Peer(Protocol):
    """One WebSocket end as the splice sees it."""

    name: str

    async def receive(self) -> Message:
        """The next data message, a CLOSE, or GONE. Pings are answered below this seam."""
        ...

    async def send(self, message: Message) -> None:
        """Send a TEXT or BINARY message; waits while the peer's buffer is full. Raises PeerGone."""
        ...

    async def send_close(self, code: int, reason: str) -> None:
        """Send a Close frame without waiting for the answer. Raises PeerGone."""
        ...

    def abort(self) -> None:
        """Drop the transport. Idempotent."""
        ...


class ChannelPeer(Peer, Protocol):
    """A Peer that can also take whole messages without waiting: a listener's control channel."""

    def send_now(self, messages: Sequence[Message]) -> bool:
        """Write ``messages`` (TEXT, BINARY or CLOSE), in order, at once if the peer's send buffer has room;
        write nothing and return False if it has not (then ``send`` and ``send_close`` wait for room).
        Raises PeerGone."""
        ...


class LinkablePeer:
    """A Peer that moves data frames to a linked Peer by itself, below the seam (the engine's fast path).

    Once :meth:`link` is called, data frames go straight to ``other`` as they arrive (fragments as fragments,
    with backpressure: reading pauses while ``other``'s send buffer is full), and ``receive()`` returns only
    CLOSE or GONE. Data for a peer that was sent a Close, or that vanished, is dropped. A nominal base class
    rather than a Protocol: the splice asks ``isinstance`` once per connection, and a Protocol check costs
    more than the rest of the splice's set-up.
    """

    __slots__ = ()

    def link(self, other: LinkablePeer) -> None:
        """Forward data frames to ``other`` from now on (frames that arrived before are forwarded first)."""
        raise NotImplementedError

    @property
    def forwarded(self) -> tuple[int, int]:
        """Payload bytes and whole messages moved to the linked peer so far."""
        raise NotImplementedError
