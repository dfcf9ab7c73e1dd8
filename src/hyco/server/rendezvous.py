"""Senders parked until a listener dials back (protocol.md 3.1-3.3, design.md data flow steps 2-4).

Each waiting sender gets an entry under a fresh id ``{tracking id}_{random}``: the random part (128 bits from
``secrets``) makes the rendezvous address an unguessable, single-use capability; the sender never learns it.
An entry is bound to the path its address names: a dial of the id under another path is refused.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from hyco.exceptions import ConnectionLost
from hyco.server.peer import Peer
from hyco.server.splice import SpliceResult

__all__ = ["Arrival", "PendingConnection", "Rejection", "RendezvousTable"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """The listener rejected the sender with this status and reason (3.3)."""

    status: int
    description: str


@dataclass(frozen=True, slots=True)
class Arrival:
    """The listener dialed the address; its WebSocket is open and waits for the splice."""

    peer: Peer
    protocol: str | None


@dataclass(eq=False)
class PendingConnection:
    """A sender waiting for a listener.

    ``outcome`` is resolved by the listener's dial (an :class:`Arrival` or a :class:`Rejection`). ``spliced``
    is resolved by the sender's side with the splice task, or fails with ConnectionLost if the sender went
    away, so a listener that arrived never waits forever. Both are resolved at most once, whatever order
    the two sides finish in.
    """

    id: str
    tracking_id: str
    path: str
    outcome: asyncio.Future[Arrival | Rejection] = field(default_factory=asyncio.Future)
    spliced: asyncio.Future[asyncio.Task[SpliceResult]] = field(default_factory=asyncio.Future)

    def resolve(self, outcome: Arrival | Rejection) -> bool:
        """Record the listener's answer; False when the sender already stopped waiting."""
        if self.outcome.done():
            return False
        self.outcome.set_result(outcome)
        return True

    def deliver(self, task: asyncio.Task[SpliceResult]) -> None:
        """Hand the splice to the listener's side."""
        if not self.spliced.done():
            self.spliced.set_result(task)

    def abandon(self, reason: str) -> None:
        """The sender is gone: fail whatever the listener side may still wait for."""
        if not self.outcome.done():
            self.outcome.cancel()
        if not self.spliced.done():
            self.spliced.set_exception(ConnectionLost(reason))
            # The listener may never look; don't let asyncio warn about an unretrieved exception.
            self.spliced.exception()


class RendezvousTable:
    """Pending connections by rendezvous id.

    Args:
        id_tag: ends every id (a worker's tag, so that a listener's dial reaches the worker that holds the
            sender: hyco.server.workers).
    """

    def __init__(self, id_tag: str = "") -> None:
        self._pending: dict[str, PendingConnection] = {}
        self._tag = id_tag

    def __len__(self) -> int:
        return len(self._pending)

    def open(self, tracking_id: str, path: str) -> PendingConnection:
        """Park a sender under a new, unguessable id; ``path`` is the path its address names."""
        ident = f"{tracking_id}_{secrets.token_hex(16)}{self._tag}"
        pending = PendingConnection(ident, tracking_id, path.strip("/").lower())
        self._pending[ident] = pending
        return pending

    def claim(self, ident: str | None, path: str) -> PendingConnection | None:
        """Take the entry for a listener's dial of ``path``; None if unknown, already used, the sender is
        gone, or the dial names another path (the entry then stays for the right dial)."""
        pending = self._pending.get(ident) if ident else None
        if pending is None or pending.path != path.strip("/").lower():
            return None
        del self._pending[pending.id]
        return None if pending.outcome.done() else pending

    def discard(self, ident: str) -> None:
        """Forget an entry (sender answered, gave up, or vanished)."""
        self._pending.pop(ident, None)
