"""The lean socket of a splice: one relayed WebSocket end as an asyncio protocol (docs/benchmarks.md).

After the engine (``hyco.server.engine``) completed the upgrade, the connection's transport is handed to a
:class:`FramePeer`. Once the splice links two of them, each moves data frames **as frames** to the other from
its ``data_received`` callback: no task, no message reassembly, no queue. A frame is unmasked in place by a C
routine and written to the partner's transport as header + payload (``writelines``), type and FIN bit kept,
so fragments stay fragments. Backpressure is the transports' own: when the partner's send buffer passes its
high-water mark (``pause_writing``), this side stops reading until it drains (``resume_writing``).

Everything else stays with the splice (``hyco.server.splice``): :meth:`FramePeer.receive` reports the end
of the stream (CLOSE with code and reason, or GONE), and the splice forwards Closes (half-close) and picks
the close codes. The rules the message-level socket had are kept: pings are answered, the relay's own pings
cut a peer that stops answering (``heartbeat``), a message over ``max_message_size`` is refused with Close
1009 and a framing error (an unmasked frame, a Close with a code no peer may send) with Close 1002 (1007 for a
Close reason that is not UTF-8): the connection is then closed without waiting for an answer (RFC 6455
7.1.7, "Fail the WebSocket Connection") and reported GONE.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from hyco._wsmask import mask_in_place
from hyco.exceptions import RemoteProtocolError
from hyco.protocol.frames import read_close
from hyco.server.peer import LinkablePeer, Message, MessageKind, PeerGone

__all__ = ["FramePeer"]

_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_FIN = 0x80
_PROTOCOL_ERROR, _MESSAGE_TOO_BIG = 1002, 1009
#: Bytes of frames that arrived before the splice linked the peers, buffered before reading pauses.
EARLY_LIMIT = 256 * 1024
#: Payload size from which an incomplete frame gets a buffer of its own instead of waiting in the read buffer.
LARGE_FRAME = 16 * 1024
#: Frames handled per event-loop turn: a buffer full of tiny frames (a ping or empty-frame flood) is worked
#: through in slices, so one client cannot hold the loop (the hardening issue's defect 2).
FRAMES_PER_TURN = 64
#: Bytes a peer takes before it lets the rest of the loop run (it stops reading until the next turn). Under
#: uvloop one readable event reads up to 32 x 256 KB; a sender at full speed then held the loop for about
#: 8 MB of copying at a time, and everyone else's latency with it (issue 13, defect 12).
BYTES_PER_TURN = 1024 * 1024
#: Seconds a dropped peer gets to read what is still unsent before its socket is cut. A graceful close alone
#: would wait for ever on a reader that never reads (frozen, or holding a zero TCP window on purpose), keeping
#: the socket and its buffer; cutting at once would truncate a slow but live reader's tail (the last data and
#: the Close often arrive in the read that filled its buffer).
UNSENT_GRACE = 10.0
_GONE = Message(MessageKind.GONE)


def frame_header(first: int, length: int) -> bytes:
    """An unmasked frame header: ``first`` is FIN | opcode, ``length`` the payload size."""
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def _close_payload(code: int, reason: str) -> bytes:
    return struct.pack("!H", code) + reason.encode()[:123]


class FramePeer(LinkablePeer, asyncio.Protocol):
    """A relayed WebSocket end (the server side of a sender's or listener's socket) behind the Peer seam.

    The engine creates it, lets it see any bytes that came with the handshake, and calls :meth:`attach`
    with the transport; from then on it is the transport's protocol, and the HTTP server that served the
    handshake has let go of the connection (it is told through ``on_lost`` when the connection ends).

    Args:
        name: the peer's name in splice results ("sender", "listener").
        max_message_size: largest message accepted, summed over its fragments.
        heartbeat: seconds between the relay's pings; a peer that answers none within half of it is GONE.
    """

    __slots__ = (
        "_awaiting_pong",
        "_budget_spent",
        "_buf",
        "_bytes",
        "_close_sent",
        "_continuing",
        "_done",
        "_drain",
        "_early",
        "_early_size",
        "_ending",
        "_heard",
        "_heartbeat",
        "_large",
        "_large_filled",
        "_large_first",
        "_large_key",
        "_max_message",
        "_message_size",
        "_messages",
        "_on_lost",
        "_partner",
        "_pinged",
        "_reading_paused",
        "_timer",
        "_transport",
        "_turn_pending",
        "_unyielded",
        "_waiter",
        "_write_paused",
        "name",
    )

    #: See :data:`UNSENT_GRACE`.
    unsent_grace = UNSENT_GRACE

    def __init__(self, name: str, max_message_size: int, heartbeat: float | None = None) -> None:
        self.name = name
        self._transport: asyncio.Transport | None = None
        self._on_lost: Callable[[Exception | None], None] | None = None
        self._buf = bytearray()
        self._max_message = max_message_size
        self._message_size = 0
        self._continuing = False  # a fragmented data message is in progress
        self._partner: FramePeer | None = None
        self._early: list[bytes | bytearray] = []  # frames (header, payload, ...) that came before link()
        self._early_size = 0
        self._ending: Message | None = None  # CLOSE or GONE, for receive()
        self._waiter: asyncio.Future[None] | None = None
        self._close_sent = False
        self._done = False  # no more frames are read: Close received, protocol error, or connection lost
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._bytes = 0
        self._messages = 0
        self._heartbeat = heartbeat
        self._large: bytearray | None = None  # the payload of a large frame still arriving
        self._large_filled = 0
        self._large_first = 0
        self._large_key = b""
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_pong = False
        self._pinged = False
        self._heard = False  # a frame came since the last heartbeat
        self._reading_paused = False  # we hold its data back (backpressure or FRAMES_PER_TURN)
        self._budget_spent = False  # the last parse stopped at FRAMES_PER_TURN with frames left
        self._turn_pending = False  # reading waits for the next loop turn (FRAMES_PER_TURN, BYTES_PER_TURN)
        self._unyielded = 0  # bytes taken since the peer last let the loop run

    # --- set-up (the engine) ------------------------------------------------------------------

    def feed_data(self, data: bytes) -> None:
        """Bytes that arrived through the HTTP server during the handshake (the engine's FrameSink)."""
        self.data_received(data)

    def feed_eof(self) -> None:
        """The connection was lost during the handshake."""
        self._end(_GONE)

    def attach(
        self, transport: asyncio.Transport | None, on_lost: Callable[[Exception | None], None] | None
    ) -> None:
        """Become ``transport``'s protocol (after the 101 response was written) and start the heartbeat.

        ``on_lost`` is called once when the connection is lost (the server's connection accounting).
        """
        if transport is None or transport.is_closing():
            self._end(_GONE)
            return
        self._transport = transport
        self._on_lost = on_lost
        transport.set_protocol(self)
        if self._heartbeat:
            self._timer = asyncio.get_running_loop().call_later(self._heartbeat, self._beat)
        if self._buf:
            pending, self._buf = bytes(self._buf), bytearray()
            self.data_received(pending)

    # --- asyncio protocol callbacks -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Parse complete frames; move data frames to the partner, answer pings, report the end.

        After :data:`FRAMES_PER_TURN` frames, or :data:`BYTES_PER_TURN` bytes since it last did, the peer
        stops reading and goes on in the next loop turn, so one client cannot hold the loop.
        """
        if self._done:
            return
        if self._transport is None:  # still in the handshake: nothing may be written before the 101
            self._buf += data
            return
        self._unyielded += len(data)
        self._take(data)
        if self._turn_pending or self._done:
            return
        if self._budget_spent or self._unyielded >= BYTES_PER_TURN:
            # Frames are left over, or this peer had its share of the turn: stop reading and go on with
            # them in the next loop turn.
            self._turn_pending = True
            self._pause_reading()
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _take(self, data: bytes) -> None:
        """Handle ``data``: fill a large frame in progress, then parse what follows (within the budget)."""
        offset = 0
        if self._large is not None:
            offset = self._fill(data)
            if self._large is not None or offset == len(data) or self._done:
                return
        if self._buf:
            self._buf += memoryview(data)[offset:] if offset else data
            view: bytes | bytearray = self._buf
            offset = 0
        else:
            view = data
        used = self._parse(view, offset)
        if view is self._buf:
            del self._buf[:used]
        elif used < len(view):
            self._buf = bytearray(memoryview(view)[used:])

    def _next_turn(self) -> None:
        self._turn_pending = False
        self._unyielded = 0
        if self._done or self._transport is None:
            return
        self.data_received(b"")
        if not self._turn_pending and not self._holding_back():
            self._resume_reading()

    def _holding_back(self) -> bool:
        """Whether reading stays paused for backpressure (the partner's send buffer, or frames kept early)."""
        partner = self._partner
        if partner is None:
            return self._early_size > EARLY_LIMIT
        return partner._write_paused

    def eof_received(self) -> bool | None:
        """The peer shut down its sending side: let the transport close (a WebSocket ends with a Close)."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: report GONE (unless a Close came first) and free whoever waits."""
        self._done = True
        self._end(_GONE)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake_drain()
        partner = self._partner
        if partner is not None and self._write_paused:
            partner._resume_reading()  # its data is dropped now; it must still read its Close
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost(exc)

    def pause_writing(self) -> None:
        """Our send buffer is full: the partner stops reading (its data would pile up here)."""
        self._write_paused = True
        if self._partner is not None:
            self._partner._pause_reading()

    def resume_writing(self) -> None:
        """Our send buffer drained: the partner reads again."""
        self._write_paused = False
        if self._partner is not None:
            self._partner._resume_reading()
        self._wake_drain()

    # --- the Peer seam (the splice) -------------------------------------------------------------

    def link(self, other: LinkablePeer) -> None:
        """Forward data frames to ``other`` (a FramePeer) from now on; frames that came earlier go first."""
        assert isinstance(other, FramePeer)
        self._partner = other
        early, self._early, self._early_size = self._early, [], 0
        if early and other._writable():
            other._transport.writelines(early)  # type: ignore[union-attr]
        if other._write_paused:
            self._pause_reading()
        elif early:
            self._resume_reading()

    @property
    def forwarded(self) -> tuple[int, int]:
        """Payload bytes and whole messages moved (or, before the link, kept) for the partner."""
        return self._bytes, self._messages

    async def receive(self) -> Message:
        """CLOSE or GONE once the stream ended (data frames go to the linked partner, not here)."""
        while self._ending is None:
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._ending

    async def send(self, message: Message) -> None:
        """Send one whole data message, waiting while the send buffer is full. Raises PeerGone."""
        opcode = _TEXT if message.kind is MessageKind.TEXT else _BINARY
        self._write_frame(opcode, message.data)
        while self._write_paused and self._writable():
            if self._drain is None:
                self._drain = asyncio.get_running_loop().create_future()
            await self._drain
        if not self._writable():
            raise PeerGone(self.name)

    async def send_close(self, code: int, reason: str) -> None:
        """Send a Close frame; does not wait for the answer. Raises PeerGone."""
        self._write_frame(_CLOSE, _close_payload(code, reason))
        self._close_sent = True

    def abort(self) -> None:
        """Close the TCP connection. What was sent (the Close frame last) is delivered first: a peer with data
        still unsent gets :attr:`unsent_grace` seconds to read it, then the connection is cut, dropping the
        rest. Idempotent."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.close()
        if transport.get_write_buffer_size():
            if self._timer is not None:  # the heartbeat: nothing more is sent
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(self.unsent_grace, transport.abort)

    @property
    def closed(self) -> bool:
        """Whether a Close was sent or received, or the connection is gone."""
        return self._close_sent or self._done

    # --- internals ---------------------------------------------------------------------------

    def _writable(self) -> bool:
        transport = self._transport
        return transport is not None and not transport.is_closing()

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        if not self._writable():
            raise PeerGone(self.name)
        assert self._transport is not None
        self._transport.writelines((frame_header(_FIN | opcode, len(payload)), payload))

    def _pause_reading(self) -> None:
        if self._writable() and not self._done:
            self._reading_paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]

    def _resume_reading(self) -> None:
        if self._writable():
            self._reading_paused = False
            self._transport.resume_reading()  # type: ignore[union-attr]

    def _wake_drain(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _end(self, message: Message) -> None:
        if self._ending is None:
            self._ending = message
        self._done = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, code: int, reason: str) -> None:
        """The peer broke the rules: tell it with a Close, close the connection (RFC 6455 7.1.7, "Fail the
        WebSocket Connection": its Close is not waited for), then report GONE."""
        if not self._close_sent and self._writable():
            self._close_sent = True
            self._write_frame(_CLOSE, _close_payload(code, reason))
        self._end(_GONE)
        self.abort()

    def _beat(self) -> None:
        """Heartbeat: ping; a peer that sent nothing (not even a pong) half an interval later is GONE."""
        self._timer = None
        if self._done or not self._writable() or not self._heartbeat:
            return
        if self._awaiting_pong and self._reading_paused:
            # Its pong may be waiting unread behind data we hold back (backpressure): that is not silence.
            self._awaiting_pong = False
        if self._awaiting_pong:
            self._end(_GONE)
            self.abort()
            return
        loop = asyncio.get_running_loop()
        if self._heard and not self._pinged:
            # Frames came since the last beat: the peer is alive, no ping needed (as aiohttp's heartbeat);
            # a peer busy sending is not cut because its pong waits behind its own data.
            self._heard = False
            self._timer = loop.call_later(self._heartbeat, self._beat)
            return
        self._heard = False
        if self._pinged:  # the pong came: rest for the other half of the interval
            self._pinged = False
        else:
            self._write_frame(_PING, b"")
            self._awaiting_pong = self._pinged = True
        self._timer = loop.call_later(self._heartbeat / 2, self._beat)

    def _parse(self, view: bytes | bytearray, pos: int) -> int:
        """Handle every complete frame in ``view`` from ``pos``; returns the offset up to which it was used.

        A large data frame whose payload is still incomplete is copied into a buffer of its own size
        (``_large``), filled by :meth:`_fill` as the rest arrives: each byte is copied once.
        """
        size = len(view)
        out: list[bytes | bytearray] = []
        frames = 0
        self._budget_spent = False
        while size - pos >= 2:
            if frames == FRAMES_PER_TURN:
                self._budget_spent = True
                break
            frames += 1
            first, second = view[pos], view[pos + 1]
            length = second & 0x7F
            head = pos + 2
            if length == 126:
                if size - head < 2:
                    break
                length = (view[head] << 8) | view[head + 1]
                head += 2
            elif length == 127:
                if size - head < 8:
                    break
                length = int.from_bytes(view[head : head + 8], "big")
                head += 8
            if not second & 0x80:  # RFC 6455 5.1: a server must close the connection on an unmasked frame
                self._fail(_PROTOCOL_ERROR, "Unmasked frame")
                break
            if size - head < 4:
                break
            key = bytes(view[head : head + 4])
            head += 4
            opcode, fin = first & 0x0F, first & _FIN
            # Checked before the payload is waited for: an oversize frame is refused, never buffered.
            if first & 0x70:
                self._fail(_PROTOCOL_ERROR, "Reserved bits set")
                break
            if opcode >= _CLOSE:
                if opcode > _PONG or not fin or length > 125:
                    self._fail(_PROTOCOL_ERROR, "Bad control frame")
                    break
            elif opcode > _BINARY or (opcode == _CONTINUATION) != self._continuing:
                self._fail(_PROTOCOL_ERROR, "Bad data frame")
                break
            elif (self._message_size if opcode == _CONTINUATION else 0) + length > self._max_message:
                self._fail(_MESSAGE_TOO_BIG, "Message too big")
                break
            end = head + length
            if size < end:
                if length >= LARGE_FRAME:  # only data frames are this large
                    large = bytearray(length)
                    large[: size - head] = memoryview(view)[head:size]
                    self._large, self._large_filled = large, size - head
                    self._large_first, self._large_key = first, key
                    pos = size
                break
            pos = end
            self._awaiting_pong = False
            self._heard = True
            payload = view[head:end] if isinstance(view, bytearray) else bytearray(memoryview(view)[head:end])
            mask_in_place(key, payload)
            if opcode < _CLOSE:
                self._data_frame(first, payload, out)
            elif opcode == _PING:
                if self._writable():
                    self._write_frame(_PONG, bytes(payload))
            elif opcode == _CLOSE:
                self._received_close(bytes(payload))
                break
        self._flush(out)
        return pos

    def _fill(self, data: bytes) -> int:
        """Copy the next part of a large frame's payload from ``data``; returns the bytes of ``data`` used."""
        large = self._large
        assert large is not None
        filled = self._large_filled
        used = min(len(large) - filled, len(data))
        large[filled : filled + used] = memoryview(data)[:used]
        self._large_filled = filled + used
        if self._large_filled == len(large):
            self._large = None
            self._awaiting_pong = False
            self._heard = True
            mask_in_place(self._large_key, large)
            out: list[bytes | bytearray] = []
            self._data_frame(self._large_first, large, out)
            self._flush(out)
        return used

    def _data_frame(self, first: int, payload: bytes | bytearray, out: list[bytes | bytearray]) -> None:
        """A complete data frame: queue it for the partner (or keep it until the splice links us)."""
        length, fin = len(payload), first & _FIN
        self._continuing = not fin
        self._message_size = 0 if fin else self._message_size + length
        partner = self._partner
        if partner is None:
            self._early += (frame_header(first, length), payload)
            self._early_size += length + 16
            if self._early_size > EARLY_LIMIT:
                self._pause_reading()
        elif not partner._close_sent and partner._writable():
            out += (frame_header(first, length), payload)
        else:
            return  # dropped: nobody may receive it any more
        self._bytes += length
        if fin:
            self._messages += 1

    def _flush(self, out: list[bytes | bytearray]) -> None:
        partner = self._partner
        if out and partner is not None and partner._writable():
            partner._transport.writelines(out)  # type: ignore[union-attr]

    def _received_close(self, payload: bytes) -> None:
        try:
            code, reason = read_close(payload)
        except RemoteProtocolError as exc:
            self._fail(exc.close_code, exc.reason)
            return
        self._end(Message(MessageKind.CLOSE, code=code, reason=reason))
