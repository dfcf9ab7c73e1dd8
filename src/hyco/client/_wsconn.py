"""The SDK's lean WebSocket data path: an established client WebSocket as an asyncio protocol.

aiohttp dials and checks the upgrade (``_net.open_websocket``); the moment its 101 is accepted, ``_engine``
hands the TCP (or TLS) transport to a :class:`WsConnection`, with the bytes that came behind the 101. From
then on no aiohttp object sees the connection:

* frames are parsed in ``data_received`` and handed to a :class:`FrameSink` frame by frame (fragments as
  fragments, the text flag and FIN kept); a payload that lies whole in the bytes read is passed on as a
  ``memoryview`` of them (no copy); pings are answered at once, pongs skipped, a Close or the loss of the
  connection reported once;
* every frame sent is masked with a fresh random key (RFC 6455 5.3; keys come from ``os.urandom`` in bulk)
  by aiohttp's C routine and written with ``writelines`` (header, payload);
* backpressure is the transport's own: the sink pauses reading (:meth:`WsConnection.pause_reading`) when
  it cannot take more, and learns from :meth:`FrameSink.send_paused` / ``send_resumed`` when the send
  buffer passes its high-water mark.

The sink is the stream (:mod:`hyco.client.stream`: it reassembles messages for ``read``/``receive``) or a
local transport spliced to the connection (:mod:`hyco.client.splice`: payloads go straight to its socket).
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable
from typing import Protocol

from hyco._wsmask import mask_in_place
from hyco.exceptions import ConnectionLost, RemoteProtocolError

__all__ = ["BINARY", "TEXT", "FrameSink", "WsConnection"]

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_FIN = 0x80
_PROTOCOL_ERROR = 1002
#: Bytes kept unparsed while no sink is attached yet, before reading pauses.
EARLY_LIMIT = 256 * 1024
#: Random bytes drawn from ``os.urandom`` at a time: 1,024 masking keys.
_KEY_POOL = 4096
#: Close reasons must fit a control frame (125 bytes with the 2-byte code, RFC 6455 5.5).
MAX_CLOSE_REASON = 123
#: Frames handled per event-loop turn (a flood of tiny frames is worked through in slices).
_FRAMES_PER_TURN = 64
#: Payload size from which an incomplete frame gets a buffer of its own instead of waiting in the tail.
_LARGE_FRAME = 16 * 1024
#: The longest tail that can be short of a frame: a small frame, or the 14-byte header of a large one.
_STITCH = _LARGE_FRAME + 14


class FrameSink(Protocol):
    """Where a :class:`WsConnection` delivers what it reads."""

    def frame(self, payload: bytes | bytearray | memoryview, text: bool, fin: bool) -> None:
        """One data frame's payload; ``text`` is the message's type (also on continuations).

        The payload is never changed afterwards (a ``memoryview`` is a view of an immutable read).
        """

    def flush(self) -> None:
        """The frames of one read were delivered (a sink may batch its writes until then)."""

    def closed_by_peer(self, code: int, reason: str) -> None:
        """The peer's Close arrived (1005 when it carried no code); nothing more will be read."""

    def lost(self, error: BaseException | None) -> None:
        """The connection is gone (after a Close from the peer, or without one); called once."""

    def send_paused(self) -> None:
        """The send buffer passed its high-water mark: stop writing until :meth:`send_resumed`."""

    def send_resumed(self) -> None:
        """The send buffer drained below its low-water mark."""


def _masked_header(first: int, length: int, key: bytes) -> bytes:
    if length < 126:
        return bytes((first, 0x80 | length)) + key
    if length < 65536:
        return struct.pack("!BBH", first, 0xFE, length) + key
    return struct.pack("!BBQ", first, 0xFF, length) + key


class WsConnection(asyncio.Protocol):
    """The client end of an established WebSocket (see the module docstring).

    Created by :meth:`take_over`; a sink attaches with :meth:`attach` (and may be replaced by another one
    later, e.g. when the stream is spliced to a local socket).
    """

    __slots__ = (
        "_buf",
        "_continuing",
        "_deferred",
        "_done",
        "_drained",
        "_held",
        "_key_at",
        "_keys",
        "_large",
        "_large_filled",
        "_large_fin",
        "_lost",
        "_on_lost",
        "_sink",
        "_text",
        "_transport",
        "_turn_pending",
        "_write_paused",
        "close_received",
        "close_sent",
    )

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._sink: FrameSink | None = None
        self._buf = bytearray()
        self._keys = b""
        self._key_at = _KEY_POOL
        self._text = False  # the type of the fragmented message in progress
        self._continuing = False
        self._done = False  # nothing more is read: Close received, protocol error, or connection lost
        self._lost = False
        self._on_lost: Callable[[Exception | None], None] | None = None
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._turn_pending = False
        self._held = False  # the sink asked us to stop reading
        self._deferred: bytes | memoryview | None = None  # received, left for the next turn
        self._large: bytearray | None = None  # the payload of a large data frame still arriving
        self._large_filled = 0
        self._large_fin = False
        #: Whether we sent a Close.
        self.close_sent = False
        #: ``(code, reason)`` of the peer's Close, once it came.
        self.close_received: tuple[int, str] | None = None

    @classmethod
    def take_over(
        cls, transport: asyncio.Transport, received: bytes, on_lost: Callable[[Exception | None], None]
    ) -> WsConnection:
        """Become ``transport``'s protocol; ``received`` are the bytes that came behind the 101.

        Until a sink attaches, what arrives is kept unparsed (reading pauses past ``EARLY_LIMIT``).
        ``on_lost`` is called when the connection is gone (the HTTP client's protocol, whose session waits
        for it when it closes).
        """
        connection = cls(transport)
        connection._on_lost = on_lost
        connection._buf += received
        transport.set_protocol(connection)
        # The HTTP client may have paused reading while the bytes behind the 101 piled up.
        if len(connection._buf) <= EARLY_LIMIT:
            transport.resume_reading()
        else:
            transport.pause_reading()
        if transport.is_closing():
            connection._lost = connection._done = True
        return connection

    def attach(self, sink: FrameSink) -> None:
        """Deliver frames to ``sink`` from now on (frames read earlier first)."""
        self._sink = sink
        if self._lost:
            sink.lost(None)
            return
        if self._write_paused:
            sink.send_paused()
        if self._buf and self._large is None and self._deferred is None:
            early, self._buf = bytes(self._buf), bytearray()  # kept before any sink: parse them now
            self._deferred = early
        self.resume_reading()

    # --- asyncio protocol callbacks ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Parse every complete frame and hand it to the sink."""
        if self._done:
            return
        if self._sink is None:
            self._buf += data
            if len(self._buf) > EARLY_LIMIT:
                self._transport.pause_reading()
            return
        if self._deferred is not None:
            # Frames wait for the next loop turn and reading is paused, yet a transport may still deliver
            # what it had (TLS): keep the order.
            self._deferred = bytes(self._deferred) + data
            return
        self._consume(data)
        if self._sink is not None:
            self._sink.flush()

    def eof_received(self) -> bool | None:
        """The relay shut its side: let the transport close (a WebSocket ends with a Close)."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Report the loss once and free a writer waiting for the send buffer."""
        self._done = self._lost = True
        self._wake_writer()
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost(exc)
        if self._sink is not None:
            self._sink.lost(exc)

    def pause_writing(self) -> None:
        """The send buffer is full."""
        self._write_paused = True
        if self._sink is not None:
            self._sink.send_paused()

    def resume_writing(self) -> None:
        """The send buffer drained."""
        self._write_paused = False
        self._wake_writer()
        if self._sink is not None:
            self._sink.send_resumed()

    # --- reading ----------------------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading from the socket (the sink cannot take more) until :meth:`resume_reading`."""
        self._held = True
        if not self._done and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again (frames already received are delivered first)."""
        self._held = False
        if self._done or self._transport.is_closing() or self._sink is None:
            return
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            self._consume(deferred)
            if self._sink is not None:
                self._sink.flush()
        if not self._turn_pending and not self._held and not self._done:
            self._transport.resume_reading()

    def _next_turn(self) -> None:
        self._turn_pending = False
        if not self._held:
            self.resume_reading()

    def _consume(self, data: bytes | memoryview) -> None:
        """Deliver the frames ``data`` completes: first the large frame or the tail left by the last read."""
        pos = 0
        if self._large is not None:
            pos = self._fill(data, pos)
            if self._large is not None or self._done:
                return
        if self._buf:
            # A tail too short to be a frame: complete it from the first bytes of ``data`` (a small frame,
            # or the header of a large one, fits in _STITCH bytes), without copying the rest.
            before = len(self._buf)
            self._buf += data[pos : pos + _STITCH]
            used = self._frames(self._buf, 0, once=True)
            if used == 0 and self._large is None:
                return  # still incomplete: all of ``data`` is in the tail now
            pos += used - before
            self._buf.clear()
            if self._large is not None:
                pos = self._fill(data, pos)
                if self._large is not None:
                    return
            if self._done:
                return
        used = self._frames(data, pos)
        if self._done or used == len(data):
            return
        if self._turn_pending:
            self._deferred = memoryview(data)[used:]
        else:
            self._buf += data[used:]

    def _fill(self, data: bytes | memoryview, pos: int) -> int:
        """Copy the next part of the large frame's payload from ``data[pos:]``; returns the new position."""
        large = self._large
        assert large is not None
        filled = self._large_filled
        count = min(len(large) - filled, len(data) - pos)
        large[filled : filled + count] = memoryview(data)[pos : pos + count]
        self._large_filled = filled + count
        if self._large_filled == len(large):
            self._large = None
            assert self._sink is not None
            self._sink.frame(large, self._text, self._large_fin)
        return pos + count

    def _frames(self, view: bytes | bytearray | memoryview, pos: int, *, once: bool = False) -> int:
        """Handle the complete frames in ``view`` from ``pos`` (only the first with ``once``); returns the
        position up to which ``view`` was used. An incomplete large data frame becomes ``_large``, filled
        by :meth:`_fill` as the rest arrives (each byte is copied once)."""
        sink = self._sink
        assert sink is not None
        size, count = len(view), 0
        whole = not isinstance(view, bytearray)  # immutable bytes: payloads can be views of them
        while size - pos >= 2 and not self._done:
            if count == _FRAMES_PER_TURN:
                # A flood of tiny frames (pings) must not hold the loop: go on next turn.
                self._turn_pending = True
                self._transport.pause_reading()
                asyncio.get_running_loop().call_soon(self._next_turn)
                break
            count += 1
            first, second = view[pos], view[pos + 1]
            length, head = second & 0x7F, pos + 2
            if length == 126:
                if size - head < 2:
                    break
                length, head = (view[head] << 8) | view[head + 1], head + 2
            elif length == 127:
                if size - head < 8:
                    break
                length, head = int.from_bytes(view[head : head + 8], "big"), head + 8
            opcode, fin = first & 0x0F, bool(first & _FIN)
            if second & 0x80 or first & 0x70:
                self._fail("a masked frame or reserved bits from the relay")
                break
            if opcode <= BINARY:
                if (opcode == CONTINUATION) != self._continuing:
                    self._fail("a data frame out of sequence")
                    break
            elif opcode > PONG or opcode < CLOSE or not fin or length > 125:
                self._fail("a bad control frame")
                break
            end = head + length
            if end > size:
                if length >= _LARGE_FRAME:  # only data frames are this large
                    self._start_data(opcode, fin)
                    self._large = bytearray(length)
                    self._large[: size - head] = memoryview(view)[head:size]
                    self._large_filled, self._large_fin = size - head, fin
                    pos = size
                break
            pos = end
            if opcode <= BINARY:
                self._start_data(opcode, fin)
                sink.frame(memoryview(view)[head:end] if whole else view[head:end], self._text, fin)
            elif opcode == PING:
                self._write(PONG, bytes(view[head:end]))
            elif opcode == CLOSE:
                self._closed_by_peer(bytes(view[head:end]))
            if once:
                break
        return pos

    def _start_data(self, opcode: int, fin: bool) -> None:
        if opcode != CONTINUATION:
            self._text = opcode == TEXT
        self._continuing = not fin

    def _closed_by_peer(self, payload: bytes) -> None:
        code, reason = 1005, ""
        if len(payload) >= 2:
            code = (payload[0] << 8) | payload[1]
            reason = payload[2:].decode("utf-8", "replace")
        self._done = True
        self.close_received = (code, reason)
        assert self._sink is not None
        self._sink.closed_by_peer(code, reason)

    def _fail(self, what: str) -> None:
        """The relay broke the framing rules: Close 1002 and drop the connection."""
        self._done = True
        if not self.close_sent:
            self.send_close(_PROTOCOL_ERROR, "Protocol error")
        self._transport.close()
        assert self._sink is not None
        self._sink.lost(RemoteProtocolError(f"the relay sent {what}"))
        self._sink = None

    # --- writing ----------------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        """Whether frames can still be written (no Close sent, the connection not closing)."""
        return not self.close_sent and not self._transport.is_closing()

    @property
    def write_paused(self) -> bool:
        """Whether the send buffer is above its high-water mark."""
        return self._write_paused

    def send(
        self, payload: bytes | bytearray | memoryview, text: bool = False, *, max_message: int = 0
    ) -> None:
        """Send ``payload`` as one whole message, or as several of at most ``max_message`` bytes each, one
        masked frame per message, all in one write.

        Raises:
            ConnectionLost: a Close was sent already, or the connection is closing.
        """
        if not self.writable:
            raise ConnectionLost("the connection is closed")
        opcode = TEXT if text else BINARY
        if not max_message or len(payload) <= max_message:
            self._transport.writelines(self._frame(opcode, payload))
            return
        view, out = memoryview(payload), list[bytes | bytearray]()
        for start in range(0, len(view), max_message):
            out += self._frame(opcode, view[start : start + max_message])
        self._transport.writelines(out)

    def ping(self) -> None:
        """Send a ping (nothing happens once the connection is closing)."""
        if self.writable:
            self._write(PING, b"")

    def send_close(self, code: int, reason: str) -> None:
        """Send a Close frame once; reading goes on (half-close)."""
        if self.close_sent or self._transport.is_closing():
            return
        self.close_sent = True
        self._write(CLOSE, struct.pack("!H", code) + reason.encode()[:MAX_CLOSE_REASON])

    async def wait_writable(self) -> None:
        """Wait while the send buffer is above its high-water mark (returns at once when it is not)."""
        while self._write_paused and not self._lost:
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def _wake_writer(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _write(self, opcode: int, payload: bytes | bytearray | memoryview) -> None:
        if not self._transport.is_closing():
            self._transport.writelines(self._frame(opcode, payload))

    def _frame(self, opcode: int, payload: bytes | bytearray | memoryview) -> tuple[bytes, bytearray]:
        """Header and masked payload of one final frame, masked with the next fresh key."""
        if self._key_at >= _KEY_POOL:
            self._keys, self._key_at = os.urandom(_KEY_POOL), 0
        key = self._keys[self._key_at : self._key_at + 4]
        self._key_at += 4
        masked = bytearray(payload)
        mask_in_place(key, masked)
        return _masked_header(_FIN | opcode, len(masked), key), masked

    # --- ending -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the TCP connection once the send buffer is flushed. Idempotent."""
        self._transport.close()

    def abort(self) -> None:
        """Drop the TCP connection now. Idempotent."""
        self._transport.abort()

    @property
    def lost(self) -> bool:
        """Whether the connection is gone."""
        return self._lost
