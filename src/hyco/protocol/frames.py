"""WebSocket frames, sans-I/O (RFC 6455 section 5), for streaming one message as many frames.

aiohttp reassembles every incoming message and marks every frame it writes final (design.md, "Fragments").
A relayed HTTP body must travel as **one** binary message of many frames with bounded memory (protocol.md
2.2, 4.3), so the relay and the SDK stream bodies through this module instead:

* :func:`encode_frame` builds one frame (masked when a ``mask`` key is given, as clients must);
* :class:`FrameParser` is fed raw bytes and yields :class:`Frame` objects as they complete, unmasking with the
  routine it is given (the I/O layer passes aiohttp's C implementation; the default is pure Python).

Nothing here does I/O. Payload limits are per frame, so a message of any size streams through.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

from hyco.exceptions import RemoteProtocolError

__all__ = [
    "Frame",
    "FrameParser",
    "Opcode",
    "binary_payloads",
    "close_code_is_valid",
    "encode_close",
    "encode_frame",
    "parse_close",
    "read_close",
    "read_text",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

    @property
    def is_control(self) -> bool:
        """Close, ping and pong: never fragmented, at most 125 bytes of payload."""
        return self >= Opcode.CLOSE


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: ``fin`` marks the last frame of a message."""

    opcode: Opcode
    payload: bytes
    fin: bool = True


def mask_python(key: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (RFC 6455 5.3), in pure Python (big-integer XOR)."""
    if not data:
        return b""
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(data), "big")


def encode_frame(
    opcode: Opcode,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask: bytes | None = None,
    masker: Callable[[bytes, bytes], bytes] | None = None,
) -> bytes:
    """Serialize one frame.

    Args:
        opcode: the frame's opcode (CONTINUATION for the frames after the first of a message).
        payload: the payload, unmasked.
        fin: whether this frame ends its message.
        mask: a 4-byte masking key (clients must mask; servers must not).
        masker: ``masker(key, payload) -> bytes`` applying the mask; defaults to :func:`mask_python` (the
            I/O layer passes a C implementation).
    """
    first = (0x80 if fin else 0) | int(opcode)
    mask_bit = 0x80 if mask is not None else 0
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask is None:
        return header + payload
    return header + mask + (masker or mask_python)(mask, payload)


def encode_close(code: int, reason: str = "") -> bytes:
    """The payload of a Close frame: 2-byte code + UTF-8 reason, cut to fit 125 bytes."""
    return struct.pack("!H", code) + reason.encode()[:123]


def close_code_is_valid(code: int) -> bool:
    """Whether a peer may send ``code`` in a Close frame (RFC 6455 7.4).

    1000-1003 and 1007-1014 (defined by RFC 6455 and registered with IANA) and 3000-4999 (libraries,
    applications); never 1004-1006 or 1015 (reserved, or meant for reporting only), nor anything else.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def read_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a Close frame a peer sent, checked as RFC 6455 5.5.1 and 7.4 require.

    Returns:
        ``(code, reason)``; ``(1005, "")`` for a Close without a payload (no status code present).

    Raises:
        RemoteProtocolError: a 1-byte payload or a code no peer may send (``close_code`` 1002, protocol
            error), or a reason that is not UTF-8 (1007).
    """
    if not payload:
        return 1005, ""
    if len(payload) < 2:
        raise RemoteProtocolError("a Close frame's payload is one byte", close_code=1002)
    code = struct.unpack("!H", payload[:2])[0]
    if not close_code_is_valid(code):
        raise RemoteProtocolError(f"invalid close code {code}", close_code=1002)
    try:
        return code, payload[2:].decode()
    except UnicodeDecodeError:
        raise RemoteProtocolError("a Close frame's reason is not UTF-8", close_code=1007) from None


def parse_close(payload: bytes) -> tuple[int, str]:
    """Code and reason of a Close frame's payload (1005 when it carries no code)."""
    if len(payload) < 2:
        return 1005, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")


class FrameParser:
    """Incremental frame parser.

    Feed bytes with :meth:`feed`; it returns the frames completed so far. Continuation ordering is checked
    (a new data frame inside an unfinished message, or a stray continuation, is an error).

    Args:
        max_frame_size: largest payload accepted in one frame.
        expect_masked: True on a server (client frames must be masked), False on a client.
        unmask: ``unmask(key, payload) -> bytes``; defaults to :func:`mask_python`.
    """

    def __init__(
        self,
        *,
        max_frame_size: int,
        expect_masked: bool,
        unmask: Callable[[bytes, bytes], bytes] = mask_python,
    ) -> None:
        self._buffer = bytearray()
        self._max = max_frame_size
        self._expect_masked = expect_masked
        self._unmask = unmask
        self._in_message = False

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; returns the frames they complete.

        Raises:
            RemoteProtocolError: reserved bits, unknown opcode, masking that breaks the rule for this side,
                a fragmented or oversize control frame, or bad continuation (``close_code`` 1002, protocol
                error); a frame over ``max_frame_size`` (1009).
        """
        self._buffer += data
        return list(self._frames())

    def _frames(self) -> Iterator[Frame]:
        buf = self._buffer
        while len(buf) >= 2:
            first, second = buf[0], buf[1]
            if first & 0x70:
                raise RemoteProtocolError(
                    "frame uses reserved bits (no extension was negotiated)", close_code=1002
                )
            try:
                opcode = Opcode(first & 0x0F)
            except ValueError:
                raise RemoteProtocolError(
                    f"unknown frame opcode {first & 0x0F:#x}", close_code=1002
                ) from None
            fin = bool(first & 0x80)
            masked = bool(second & 0x80)
            if masked != self._expect_masked:
                raise RemoteProtocolError(
                    "frame masking is wrong for this side of the connection", close_code=1002
                )
            length = second & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = struct.unpack_from("!H", buf, 2)[0]
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = struct.unpack_from("!Q", buf, 2)[0]
                offset = 10
            if opcode.is_control and (length > 125 or not fin):
                raise RemoteProtocolError(
                    "control frames must be final and at most 125 bytes", close_code=1002
                )
            if length > self._max:
                raise RemoteProtocolError(
                    f"frame of {length} bytes exceeds the limit of {self._max}", close_code=1009
                )
            key_end = offset + (4 if masked else 0)
            if len(buf) < key_end + length:
                return
            payload = bytes(buf[key_end : key_end + length])
            if masked:
                payload = self._unmask(bytes(buf[offset:key_end]), payload)
            del buf[: key_end + length]
            if not opcode.is_control:
                if (opcode is Opcode.CONTINUATION) != self._in_message:
                    raise RemoteProtocolError(
                        "continuation frame outside a message"
                        if opcode is Opcode.CONTINUATION
                        else "new message started before the previous one ended",
                        close_code=1002,
                    )
                self._in_message = not fin
            yield Frame(opcode, payload, fin)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)


#: ``next_frame()``: the I/O layer's coroutine returning the next data frame (it answers control frames).
NextFrame = Callable[[], Awaitable[Frame]]


#: Largest text message :func:`read_text` assembles by default: text messages here are JSON commands, which
#: official clients keep within 64 KiB (protocol.md 2.2); the margin is for headers-heavy requests.
MAX_TEXT_MESSAGE = 1024 * 1024


async def read_text(next_frame: NextFrame, max_size: int = MAX_TEXT_MESSAGE) -> str:
    """Assemble one text message from the frames ``next_frame`` returns (for small JSON commands).

    Raises:
        RemoteProtocolError: the next message is not text, not UTF-8, or longer than ``max_size`` bytes (a
            peer streaming continuation frames forever must not grow memory without bound).
    """
    frame = await next_frame()
    if frame.opcode is not Opcode.TEXT:
        raise RemoteProtocolError("expected a text message")
    parts = [frame.payload]
    size = len(frame.payload)
    while not frame.fin:
        if size > max_size:
            break
        frame = await next_frame()
        parts.append(frame.payload)
        size += len(frame.payload)
    if size > max_size:
        raise RemoteProtocolError(f"a text message is longer than {max_size} bytes")
    try:
        return b"".join(parts).decode()
    except UnicodeDecodeError:
        raise RemoteProtocolError("a text message is not valid UTF-8") from None


async def binary_payloads(next_frame: NextFrame) -> AsyncIterator[bytes]:
    """Yield the payloads of the next binary message's frames as they arrive (empty ones skipped), so a
    message of any size streams with bounded memory.

    Raises:
        RemoteProtocolError: the next message is not binary.
    """
    frame = await next_frame()
    if frame.opcode is not Opcode.BINARY:
        raise RemoteProtocolError("expected a binary message")
    if frame.payload:
        yield frame.payload
    while not frame.fin:
        frame = await next_frame()
        if frame.payload:
            yield frame.payload
