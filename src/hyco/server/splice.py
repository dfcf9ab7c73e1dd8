"""Splicing a sender's WebSocket to a listener's rendezvous WebSocket (protocol.md 3.2 step 5, 3.5).

Theory of operation:

* Two pumps move messages, one per direction, keeping the message type (text stays text). A send waits while
  the receiving socket's buffer is full, so a slow reader slows the writer instead of growing memory.
* When both peers are :class:`~hyco.server.peer.LinkablePeer` (the engine's lean sockets), they are linked and
  move data frames to each other by themselves, with the same backpressure and the same rule that data for a
  peer that was sent a Close is dropped; the pumps then only see the Closes and the vanishings.
* **Half-close** (design.md): a Close from one side is forwarded to the other side, and the opposite direction
  keeps flowing until that side closes too. The relay never echoes a Close on its own: the peer's Close is the
  echo. Only when both directions have seen a Close (or a peer vanished) are the transports dropped.
* A peer that vanishes (no Close frame, a broken socket, an oversize or malformed frame) gets the other side a
  Close 1011 ``The peer went away``; that side then has ``close_timeout`` seconds to answer before it is cut.

The splice talks to the narrow :class:`~hyco.server.peer.Peer` seam, not to aiohttp, so it can be tested
with in-memory peers (``hyco.testing``) and a faster WebSocket engine can replace aiohttp later.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from hyco.server.peer import LinkablePeer, MessageKind, Peer, PeerGone

__all__ = ["Splice", "SpliceResult", "splice"]

#: Close codes that must never be sent on the wire (RFC 6455 7.4.1); forwarded as 1000.
_RESERVED_CLOSE_CODES = {0, 1005, 1006, 1015}
GOING_AWAY = 1001
#: Messages, or bytes, moved by one pump before it lets other connections run (whichever comes first): a
#: flood of tiny messages and a sender at full speed both leave room for everyone else.
MESSAGES_PER_TURN = 64
BYTES_PER_TURN = 256 * 1024
#: A vanished peer is an error for the survivor (protocol.md 3.5: 1001 would read as a clean close by the
#: sender on the listener's side, hiding a truncated upload).
INTERNAL_ERROR = 1011


@dataclass(slots=True)
class SpliceResult:
    """How a splice ended, for the operator's log line."""

    bytes_a_to_b: int = 0
    bytes_b_to_a: int = 0
    messages_a_to_b: int = 0
    messages_b_to_a: int = 0
    first_to_close: str = ""
    close_code: int | None = None
    vanished: str = ""


class Splice:
    """A running splice between peers ``a`` and ``b``; :meth:`run` drives it, :meth:`shutdown` ends it."""

    def __init__(self, a: Peer, b: Peer, close_timeout: float) -> None:
        self.a, self.b = a, b
        self.close_timeout = close_timeout
        self.close_sent: set[str] = set()
        self.dead: set[str] = set()
        self.result = SpliceResult()
        self.linked = False
        self._counted: set[str] = set()  # linked peers whose own counts are in the result already

    async def _close(self, peer: Peer, code: int, reason: str) -> None:
        if peer.name in self.close_sent or peer.name in self.dead:
            return
        self.close_sent.add(peer.name)
        if code in _RESERVED_CLOSE_CODES:
            code = 1000
        try:
            await peer.send_close(code, reason)
        except PeerGone:
            self.dead.add(peer.name)

    async def pump(self, src: Peer, dst: Peer) -> None:
        """Move messages from ``src`` to ``dst`` until ``src`` closes or vanishes."""
        forward = src is self.a
        handled = moved = 0
        while True:
            message = await src.receive()
            handled += 1
            moved += len(message.data)
            if handled == MESSAGES_PER_TURN or moved >= BYTES_PER_TURN:
                # Buffered messages come back without a suspension point: yield now and then, so one
                # connection's flood (of tiny messages, or of big ones at full speed) cannot hold the
                # event loop (everyone else waits).
                handled = moved = 0
                await asyncio.sleep(0)
            if message.kind is MessageKind.CLOSE or message.kind is MessageKind.GONE:
                self._count_linked(src, forward)
            if message.kind is MessageKind.CLOSE:
                if not self.result.first_to_close:
                    self.result.first_to_close = src.name
                    self.result.close_code = message.code
                await self._close(dst, message.code, message.reason)
                return
            if message.kind is MessageKind.GONE:
                self.dead.add(src.name)
                if not self.result.vanished:
                    self.result.vanished = src.name
                await self._close(dst, INTERNAL_ERROR, "The peer went away")
                return
            if dst.name in self.dead or dst.name in self.close_sent:
                continue  # nobody may receive it any more; keep reading until src closes
            try:
                await dst.send(message)
            except PeerGone:
                self.dead.add(dst.name)
                continue
            if forward:
                self.result.bytes_a_to_b += len(message.data)
                self.result.messages_a_to_b += 1
            else:
                self.result.bytes_b_to_a += len(message.data)
                self.result.messages_b_to_a += 1

    def _count_linked(self, src: Peer, forward: bool) -> None:
        """Add what a linked peer moved by itself to the result (once: its pump ends here)."""
        if not self.linked or src.name in self._counted:
            return
        assert isinstance(src, LinkablePeer)
        self._counted.add(src.name)
        moved, messages = src.forwarded
        if forward:
            self.result.bytes_a_to_b += moved
            self.result.messages_a_to_b += messages
        else:
            self.result.bytes_b_to_a += moved
            self.result.messages_b_to_a += messages

    def moved(self) -> tuple[int, int]:
        """Payload bytes moved so far, a to b and b to a, while the splice runs (linked peers count by
        themselves until their pump ends)."""
        a_to_b, b_to_a = self.result.bytes_a_to_b, self.result.bytes_b_to_a
        if self.linked:
            for peer, forward in ((self.a, True), (self.b, False)):
                if peer.name not in self._counted and isinstance(peer, LinkablePeer):
                    if forward:
                        a_to_b += peer.forwarded[0]
                    else:
                        b_to_a += peer.forwarded[0]
        return a_to_b, b_to_a

    async def shutdown(self, code: int, reason: str) -> None:
        """Ask both peers to close (relay shutdown); their answering Close frames end the pumps."""
        await self._close(self.a, code, reason)
        await self._close(self.b, code, reason)

    async def run(self) -> SpliceResult:
        """Pump both ways until both sides closed or one vanished; then drop both transports."""
        if isinstance(self.a, LinkablePeer) and isinstance(self.b, LinkablePeer):
            self.a.link(self.b)
            self.b.link(self.a)
            self.linked = True
        # One pump runs in a task, the other inline in this coroutine: one task fewer per relayed
        # connection (memory per connection is a budget, docs/benchmarks.md).
        up = asyncio.ensure_future(self.pump(self.a, self.b))
        loop = asyncio.get_running_loop()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None) as deadline:

                    def up_done(_: object) -> None:
                        # a -> b ended first because a side vanished: b has close_timeout to answer the
                        # Close. A clean half-close has no deadline: the other direction may stream for hours.
                        # The callback may run after the timeout block was left (it is scheduled, not called,
                        # when ``up`` finishes): a finished deadline must not be touched then.
                        if inside and self.dead and deadline.when() is None:
                            deadline.reschedule(loop.time() + self.close_timeout)

                    inside = True
                    up.add_done_callback(up_done)
                    try:
                        await self.pump(self.b, self.a)
                    finally:
                        inside = False
            up.remove_done_callback(up_done)
            if not up.done():
                if self.dead:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(up), self.close_timeout)
                else:
                    await asyncio.wait({up})
            if up.done() and not up.cancelled():
                up.result()
        finally:
            if not up.done():
                up.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await up
            self.a.abort()
            self.b.abort()
        return self.result


async def splice(a: Peer, b: Peer, *, close_timeout: float = 10.0) -> SpliceResult:
    """Relay messages between ``a`` and ``b`` until both have closed (or vanished), then drop both.

    Args:
        a: one end (the relay uses the sender).
        b: the other end (the listener's rendezvous socket).
        close_timeout: seconds the surviving side gets to answer a Close after its peer vanished.

    Returns:
        Byte and message counts each way, who closed first, and who vanished.
    """
    return await Splice(a, b, close_timeout).run()
