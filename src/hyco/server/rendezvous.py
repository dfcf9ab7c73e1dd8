"""Senders parked until a listener dials back (protocol.md 3.1-3.3, design.md data flow steps 2-4).

Each waiting sender gets an entry under a fresh id ``{tracking id}_{random}``: the random part (128 bits from
``secrets``) makes the rendezvous address an unguessable, single-use capability; the sender never learns it.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from aiohttp import web

from hyco.exceptions import ConnectionLost
from hyco.server.splice import SpliceResult

__all__ = ["Arrival", "PendingConnection", "Rejection", "RendezvousTable"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """The listener rejected the sender with this status and reason (3.3)."""

    status: int
    description: str


@dataclass(frozen=True, slots=True)
class Arrival:
    """The listener dialed the address; its WebSocket is prepared and waits for the splice."""

    ws: web.WebSocketResponse
    request: web.BaseRequest
    protocol: str | None


@dataclass(eq=False)
class PendingConnection:
    """A sender waiting for a listener.

    ``outcome`` is resolved by the listener's dial (an :class:`Arrival` or a :class:`Rejection`). ``spliced``
    is resolved by the sender's side with the splice task, or fails with ConnectionLost if the sender went
    away, so a listener that arrived never waits forever.
    """

    id: str
    tracking_id: str
    outcome: asyncio.Future[Arrival | Rejection] = field(default_factory=asyncio.Future)
    spliced: asyncio.Future[asyncio.Task[SpliceResult]] = field(default_factory=asyncio.Future)

    def abandon(self, reason: str) -> None:
        """The sender is gone: fail whatever the listener side may still wait for."""
        if not self.outcome.done():
            self.outcome.cancel()
        if not self.spliced.done():
            self.spliced.set_exception(ConnectionLost(reason))
            # The listener may never look; don't let asyncio warn about an unretrieved exception.
            self.spliced.exception()


class RendezvousTable:
    """Pending connections by rendezvous id."""

    def __init__(self) -> None:
        self._pending: dict[str, PendingConnection] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def open(self, tracking_id: str) -> PendingConnection:
        """Park a sender under a new, unguessable id."""
        ident = f"{tracking_id}_{secrets.token_hex(16)}"
        pending = PendingConnection(ident, tracking_id)
        self._pending[ident] = pending
        return pending

    def claim(self, ident: str | None) -> PendingConnection | None:
        """Take the entry for a listener's dial; None if unknown, already used, or the sender is gone."""
        if ident is None:
            return None
        pending = self._pending.pop(ident, None)
        if pending is None or pending.outcome.done():
            return None
        return pending

    def discard(self, ident: str) -> None:
        """Forget an entry (sender answered, gave up, or vanished)."""
        self._pending.pop(ident, None)
