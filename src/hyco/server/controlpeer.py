"""A listener's control channel as a lean socket: a FramePeer that keeps the messages it reads.

A control channel is read message by message (``hyco.server.control``), not spliced, so the frames a
:class:`ControlPeer` parses are reassembled into whole messages (fragments joined, type kept) and queued for
:meth:`ControlPeer.receive`; everything else is the FramePeer's: pings answered from the read callback (and
a ping flood worked through in slices), the relay's own pings and the cut of a listener that stops
answering (``heartbeat``), Close 1009 for a message over ``max_message_size``, Close 1002 for a framing
error, the Close codes a peer may send. Reading pauses while more than :data:`INBOX_LIMIT` bytes of messages
wait unread (a listener cannot fill the relay's memory faster than its channel is served).

Writes go straight to the transport: :meth:`ControlPeer.send_now` writes a command and its body (or a
Close) in one call while the send buffer is below its high-water mark, which is what lets the control
channel skip its lock and timeout (``ControlChannel``); :meth:`~hyco.server.framepeer.FramePeer.send`
waits for the buffer to drain when it is not.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Sequence

from hyco.server.framepeer import FramePeer, frame_header
from hyco.server.peer import Message, MessageKind, PeerGone

__all__ = ["INBOX_LIMIT", "ControlPeer"]

_FIN = 0x80
_OPCODES = {MessageKind.TEXT: 0x1, MessageKind.BINARY: 0x2, MessageKind.CLOSE: 0x8}
_KINDS = {0x1: MessageKind.TEXT, 0x2: MessageKind.BINARY}
#: Bytes of received messages waiting for ``receive()`` before reading pauses (aiohttp's reader paused at
#: its 64 KiB limit too).
INBOX_LIMIT = 64 * 1024
#: A Close reason is cut to fit a control frame (125 bytes with the 2-byte code, RFC 6455 5.5).
_MAX_CLOSE_REASON = 123


class ControlPeer(FramePeer):
    """The relay's end of a listener's control channel behind the message-level Peer seam.

    Created and attached by the engine like a :class:`FramePeer` (``Handshake.accept``, the lean door's
    ``LeanHandshake.accept``); never linked to a partner.

    Args:
        name: the peer's name in logs ("listener").
        max_message_size: largest message accepted, summed over its fragments.
        heartbeat: seconds between the relay's pings; a peer that answers none within half of it is GONE.
    """

    __slots__ = ("_inbox", "_inbox_size", "_kind", "_parts")

    #: A listener is dropped when it stopped reading for ``send_timeout``: that was its grace already, and
    #: waiting for it would hold the socket for good (a control channel carries no data to deliver).
    unsent_grace = 0.0

    def __init__(self, name: str, max_message_size: int, heartbeat: float | None = None) -> None:
        super().__init__(name, max_message_size, heartbeat)
        self._inbox: deque[Message] = deque()
        self._inbox_size = 0
        self._parts: list[bytes] = []  # the fragments of a message still arriving
        self._kind = MessageKind.BINARY

    async def receive(self) -> Message:
        """The next whole TEXT or BINARY message; then CLOSE (with code and reason) or GONE."""
        while True:
            if self._inbox:
                message = self._inbox.popleft()
                self._inbox_size -= len(message.data)
                if self._reading_paused and not self._turn_pending and not self._holding_back():
                    self._resume_reading()
                return message
            if self._ending is not None:
                return self._ending
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def send_now(self, messages: Sequence[Message]) -> bool:
        """Write ``messages`` (TEXT, BINARY or CLOSE) in one call if the send buffer is below its high-water
        mark; otherwise write nothing.

        Returns:
            True once written; False when the buffer is full (send them with ``send``/``send_close``).

        Raises:
            PeerGone: the connection is closed.
        """
        if not self._writable():
            raise PeerGone(self.name)
        if self._write_paused:
            return False
        frames: list[bytes] = []
        for message in messages:
            payload = message.data
            if message.kind is MessageKind.CLOSE:
                payload = struct.pack("!H", message.code) + message.reason.encode()[:_MAX_CLOSE_REASON]
                self._close_sent = True
            frames += (frame_header(_FIN | _OPCODES[message.kind], len(payload)), payload)
        self._transport.writelines(frames)  # type: ignore[union-attr]  # _writable() checked it
        return True

    def link(self, other: object) -> None:
        """A control channel is never spliced."""
        raise TypeError("a control channel's peer is not spliced")

    # --- FramePeer's hooks ---------------------------------------------------------------------

    def _holding_back(self) -> bool:
        return self._inbox_size > INBOX_LIMIT

    def _data_frame(self, first: int, payload: bytes | bytearray, out: list[bytes | bytearray]) -> None:
        """A complete data frame: part of a message, or its end (then it is queued for receive())."""
        fin, opcode = first & _FIN, first & 0x0F
        if opcode:
            self._kind = _KINDS[opcode]  # the parser let only TEXT, BINARY and CONTINUATION through
        self._continuing = not fin
        if not fin:
            self._message_size += len(payload)
            self._parts.append(bytes(payload))
            return
        self._message_size = 0
        if self._parts:
            self._parts.append(bytes(payload))
            data, self._parts = b"".join(self._parts), []
        else:
            data = bytes(payload)
        self._inbox.append(Message(self._kind, data))
        self._inbox_size += len(data)
        if self._inbox_size > INBOX_LIMIT:
            self._pause_reading()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
