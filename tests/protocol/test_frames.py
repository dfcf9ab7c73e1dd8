"""WebSocket framing (RFC 6455 5): encode, parse incrementally, unmask, enforce the rules."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco.exceptions import RemoteProtocolError
from hyco.protocol.frames import (
    Frame,
    FrameParser,
    Opcode,
    encode_close,
    encode_frame,
    mask_python,
    parse_close,
)

KEY = b"\x01\x02\x03\x04"


def server_parser(**kwargs) -> FrameParser:
    return FrameParser(max_frame_size=kwargs.pop("max_frame_size", 1 << 20), expect_masked=True, **kwargs)


def test_encode_matches_rfc_examples():
    # RFC 6455 5.7: a single-frame unmasked text message "Hello".
    assert encode_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    # ... and the masked one with key 37 fa 21 3d.
    masked = encode_frame(Opcode.TEXT, b"Hello", mask=bytes.fromhex("37fa213d"))
    assert masked == bytes.fromhex("818537fa213d7f9f4d5158")
    # Fragmented: first frame without FIN, continuation with FIN.
    assert encode_frame(Opcode.TEXT, b"Hel", fin=False) == bytes.fromhex("010348656c")
    assert encode_frame(Opcode.CONTINUATION, b"lo") == bytes.fromhex("80026c6f")


@pytest.mark.parametrize(("size", "header_len"), [(125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_length_encodings(size, header_len):
    frame = encode_frame(Opcode.BINARY, b"x" * size)
    assert len(frame) == header_len + size
    if header_len == 4:
        assert frame[1] == 126 and struct.unpack("!H", frame[2:4])[0] == size
    if header_len == 10:
        assert frame[1] == 127 and struct.unpack("!Q", frame[2:10])[0] == size


def test_mask_python_is_its_own_inverse_and_matches_bytewise_xor():
    data = os.urandom(1001)
    masked = mask_python(KEY, data)
    assert masked == bytes(b ^ KEY[i % 4] for i, b in enumerate(data))
    assert mask_python(KEY, masked) == data
    assert mask_python(KEY, b"") == b""


@given(
    chunks=st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    split=st.integers(min_value=1, max_value=50),
)
def test_fragmented_message_round_trips_through_any_byte_split(chunks, split):
    wire = b"".join(
        encode_frame(Opcode.BINARY if i == 0 else Opcode.CONTINUATION, c, fin=i == len(chunks) - 1, mask=KEY)
        for i, c in enumerate(chunks)
    )
    parser = server_parser()
    frames: list[Frame] = []
    for start in range(0, len(wire), split):
        frames += parser.feed(wire[start : start + split])
    assert [f.payload for f in frames] == chunks
    assert [f.fin for f in frames] == [False] * (len(chunks) - 1) + [True]
    assert parser.buffered == 0


def test_control_frames_may_interleave_a_fragmented_message():
    parser = server_parser()
    wire = (
        encode_frame(Opcode.BINARY, b"a", fin=False, mask=KEY)
        + encode_frame(Opcode.PING, b"p", mask=KEY)
        + encode_frame(Opcode.CONTINUATION, b"b", mask=KEY)
    )
    frames = parser.feed(wire)
    assert [(f.opcode, f.payload) for f in frames] == [
        (Opcode.BINARY, b"a"),
        (Opcode.PING, b"p"),
        (Opcode.CONTINUATION, b"b"),
    ]


def test_custom_unmask_routine_is_used():
    calls = []

    def unmask(key: bytes, payload: bytes) -> bytes:
        calls.append(key)
        return mask_python(key, payload)

    parser = server_parser(unmask=unmask)
    assert parser.feed(encode_frame(Opcode.TEXT, b"hi", mask=KEY))[0].payload == b"hi"
    assert calls == [KEY]


def test_client_side_parser_reads_unmasked_frames():
    parser = FrameParser(max_frame_size=100, expect_masked=False)
    assert parser.feed(encode_frame(Opcode.TEXT, b"ok"))[0].payload == b"ok"


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (bytes([0x80 | 0x40 | 0x2, 0x80]) + KEY, "reserved bits"),
        (bytes([0x83, 0x80]) + KEY, "unknown frame opcode"),
        (encode_frame(Opcode.TEXT, b"x"), "masking"),
        (encode_frame(Opcode.PING, b"x" * 126, mask=KEY), "control frames"),
        (encode_frame(Opcode.PING, b"x", fin=False, mask=KEY), "control frames"),
        (encode_frame(Opcode.BINARY, b"x" * 2000, mask=KEY), "exceeds the limit"),
        (encode_frame(Opcode.CONTINUATION, b"x", mask=KEY), "continuation frame outside"),
        (
            encode_frame(Opcode.BINARY, b"x", fin=False, mask=KEY)
            + encode_frame(Opcode.TEXT, b"y", mask=KEY),
            "new message started",
        ),
    ],
)
def test_protocol_violations_are_remote_protocol_errors(wire, message):
    parser = server_parser(max_frame_size=1000)
    with pytest.raises(RemoteProtocolError, match=message):
        parser.feed(wire)


def test_incomplete_headers_wait_for_more_bytes():
    parser = server_parser()
    frame = encode_frame(Opcode.BINARY, b"z" * 70000, mask=KEY)
    for cut in (1, 3, 9, 13, len(frame) - 1):
        fresh = server_parser()
        assert fresh.feed(frame[:cut]) == []
        assert fresh.feed(frame[cut:])[0].payload == b"z" * 70000
    assert parser.feed(frame[:2]) == []


def test_close_payloads():
    assert parse_close(encode_close(4000, "bye")) == (4000, "bye")
    assert parse_close(b"") == (1005, "")
    assert len(encode_close(1000, "x" * 500)) == 125
    assert Opcode.CLOSE.is_control and not Opcode.BINARY.is_control


def frames_from(*frames: Frame):
    queue = list(frames)

    async def next_frame() -> Frame:
        return queue.pop(0)

    return next_frame


async def test_read_text_assembles_fragments_and_checks_utf8():
    from hyco.protocol.frames import read_text

    source = frames_from(Frame(Opcode.TEXT, b"h\xc3", fin=False), Frame(Opcode.CONTINUATION, b"\xa9llo"))
    assert await read_text(source) == "héllo"
    with pytest.raises(RemoteProtocolError, match="UTF-8"):
        await read_text(frames_from(Frame(Opcode.TEXT, b"\xff")))
    with pytest.raises(RemoteProtocolError, match="text"):
        await read_text(frames_from(Frame(Opcode.BINARY, b"x")))


async def test_binary_payloads_stream_and_skip_empty_frames():
    from hyco.protocol.frames import binary_payloads

    source = frames_from(
        Frame(Opcode.BINARY, b"", fin=False),
        Frame(Opcode.CONTINUATION, b"ab", fin=False),
        Frame(Opcode.CONTINUATION, b"", fin=True),
    )
    assert [p async for p in binary_payloads(source)] == [b"ab"]
    with pytest.raises(RemoteProtocolError, match="binary"):
        [p async for p in binary_payloads(frames_from(Frame(Opcode.TEXT, b"x")))]


async def test_read_text_refuses_endless_continuations():
    from hyco.protocol.frames import read_text

    def endless():
        first = True

        async def next_frame() -> Frame:
            nonlocal first
            opcode = Opcode.TEXT if first else Opcode.CONTINUATION
            first = False
            return Frame(opcode, b"x" * 1000, fin=False)

        return next_frame

    with pytest.raises(RemoteProtocolError, match="longer than 5000 bytes"):
        await read_text(endless(), max_size=5000)


async def test_partial_16_bit_length_and_a_non_empty_first_fragment():
    from hyco.protocol.frames import binary_payloads

    frame = encode_frame(Opcode.BINARY, b"m" * 300, mask=KEY)
    parser = server_parser()
    assert parser.feed(frame[:3]) == []  # the 16-bit length is not complete yet
    assert parser.feed(frame[3:])[0].payload == b"m" * 300
    source = frames_from(Frame(Opcode.BINARY, b"first", fin=False), Frame(Opcode.CONTINUATION, b"last"))
    assert [p async for p in binary_payloads(source)] == [b"first", b"last"]
