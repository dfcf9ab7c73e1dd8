"""Fuzz properties for every parser in hyco.protocol (issue 13, "Fuzzing").

Each parser, given anything at all, either returns a value or raises the one error type its docstring names;
and what the protocol layer builds, it parses back to the same thing. Inputs mix pure noise with near-valid
text (real prefixes and separators), so the properties reach past the first check.
"""

from __future__ import annotations

import asyncio
import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from hyco.exceptions import InvalidConnectionString, InvalidToken, InvalidURI, RemoteProtocolError
from hyco.protocol import messages
from hyco.protocol.connection_string import RelayConnectionString
from hyco.protocol.frames import Frame, FrameParser, Opcode, encode_frame, parse_close, read_text
from hyco.protocol.sas import SasToken, audience_covers, create_token, parse_token, verify_signature
from hyco.protocol.uri import (
    Action,
    build_rendezvous_address,
    parse_address,
    parse_websocket_target,
    query_params,
    strip_sb_hc_params,
)
from tests.protocol.fuzzing import fuzz_settings

# --- building blocks: noise plus the pieces real inputs are made of ---------------------------------------

_pieces = st.sampled_from(
    [
        "sb://",
        "ws://",
        "http://",
        "wss://",
        "https://",
        "ftp://",
        "/$hc/",
        "$hc",
        "/",
        "//",
        "?",
        "&",
        "=",
        "%",
        "%2",
        "%25",
        "%3D",
        "%26",
        "%20",
        "+",
        ":",
        "[",
        "]",
        "@",
        "#",
        ";",
        ",",
        " ",
        "\t",
        "\r\n",
        "\x00",
        "sb-hc-action=",
        "sb-hc-id=",
        "sb-hc-token=",
        "sb-hc-statusCode=",
        "statusCode=",
        "listen",
        "connect",
        "accept",
        "request",
        "SharedAccessSignature ",
        "sr=",
        "sig=",
        "se=",
        "skn=",
        "Endpoint=",
        "EntityPath=",
        "SharedAccessKeyName=",
        "SharedAccessKey=",
        "SharedAccessSignature=",
        "OperationTimeout=",
        "Authentication=",
        "00:01:00",
        "1.02:03:04.5",
        "relay.example",
        "127.0.0.1",
        "[::1]",
        ":8443",
        ":99999",
        ":-1",
        "echo",
        "a/b",
        "9" * 30,
        "²",
        "ø",
        "\ud800",
        "\U0001f600",
    ]
)
#: Text made of real pieces and random characters, in any order.
mixed_text = st.lists(_pieces | st.text(max_size=4), max_size=24).map("".join)


# --- uri --------------------------------------------------------------------------------------------------


@fuzz_settings(120)
@given(mixed_text, st.none() | mixed_text)
def test_parse_address_returns_or_raises_invalid_uri(address: str, path: str | None) -> None:
    try:
        parsed = parse_address(address, path)
    except InvalidURI:
        return
    # What it returns is usable: its own forms parse back to the same place.
    again = parse_address(str(parsed))
    assert (again.tls, again.host, again.port, again.path) == (
        parsed.tls,
        parsed.host,
        parsed.port,
        parsed.path,
    )


_host = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)
_segment = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True).filter(lambda s: not s.startswith("$"))
_entity = st.lists(_segment, min_size=1, max_size=3).map("/".join)


@fuzz_settings(80)
@given(
    st.sampled_from(["sb", "wss", "https", "ws", "http"]),
    _host,
    st.none() | st.integers(min_value=1, max_value=65535),
    _entity,
)
def test_parse_address_round_trips_what_users_write(
    scheme: str, host: str, port: int | None, path: str
) -> None:
    netloc = f"{host}:{port}" if port is not None else host
    parsed = parse_address(f"{scheme}://{netloc}/{path}/")
    assert (parsed.tls, parsed.host, parsed.port, parsed.path) == (
        scheme in ("sb", "wss", "https"),
        host,
        port,
        path,
    )


@fuzz_settings(120)
@given(mixed_text, mixed_text)
def test_parse_websocket_target_returns_or_raises_invalid_uri(path: str, query: str) -> None:
    try:
        target = parse_websocket_target("/$hc/" + path, query)
    except InvalidURI:
        return
    assert target.path
    assert target.status_code is None or 100 <= target.status_code <= 999


@fuzz_settings(120)
@given(mixed_text)
def test_query_helpers_never_raise_and_stripping_is_complete(query: str) -> None:
    stripped = strip_sb_hc_params(query)
    assert strip_sb_hc_params(stripped) == stripped
    assert not any(key.startswith("sb-hc-") for key in query_params(stripped))
    # Everything that is not an sb-hc- pair is kept byte for byte, in order.
    assert set(stripped.split("&")) <= set(query.split("&")) | {""}


_app_query = st.lists(
    st.from_regex(r"[a-z0-9%+.~-]{0,6}(=[a-zA-Z0-9%+./~-]{0,8})?", fullmatch=True), max_size=4
).map("&".join)


@fuzz_settings(80)
@given(_entity, st.lists(_segment, max_size=2).map("".join), _app_query, st.text(min_size=1, max_size=40))
def test_rendezvous_address_round_trips(entity: str, suffix: str, app_query: str, ident: str) -> None:
    path = entity + (f"/{suffix}" if suffix else "")
    address = build_rendezvous_address("wss://relay.example:443", path, app_query, Action.ACCEPT, ident)
    raw_path, _, raw_query = address.removeprefix("wss://relay.example:443").partition("?")
    target = parse_websocket_target(raw_path, raw_query)
    assert (target.path, target.action, target.id) == (path, Action.ACCEPT, ident)
    assert target.app_query == strip_sb_hc_params(app_query)


# --- sas --------------------------------------------------------------------------------------------------


@fuzz_settings(160)
@given(st.one_of(mixed_text, mixed_text.map(lambda t: "SharedAccessSignature " + t)))
def test_parse_token_returns_or_raises_invalid_token(text: str) -> None:
    try:
        token = parse_token(text)
    except InvalidToken as exc:
        assert "sig=" not in str(exc)
        return
    assert token.expiry >= 0
    verify_signature(token, "key")
    audience_covers(token, {"relay.example"}, "echo")
    token.expired(1e9, grace=300.0)


@fuzz_settings(80)
@given(
    st.text(min_size=1, max_size=60),
    st.text(min_size=1, max_size=256),
    st.text(min_size=1, max_size=256),
    st.integers(min_value=0, max_value=253_402_300_799),
)
def test_create_parse_verify_round_trip(audience: str, key_name: str, key: str, expiry: int) -> None:
    token = parse_token(create_token(audience, key_name, key, expiry))
    assert (token.audience, token.key_name, token.expiry) == (audience, key_name, expiry)
    assert verify_signature(token, key)
    assert not verify_signature(token, key + "x")


@fuzz_settings(120)
@given(mixed_text, st.sets(_host, max_size=3), mixed_text)
def test_audience_covers_never_raises(resource: str, hosts: set[str], requested: str) -> None:
    audience_covers(SasToken(resource, "s", 0, "k"), hosts, requested)


# --- connection strings -----------------------------------------------------------------------------------


@fuzz_settings(160)
@given(mixed_text)
def test_connection_string_returns_or_raises_invalid_connection_string(text: str) -> None:
    try:
        parsed = RelayConnectionString.parse(text)
    except InvalidConnectionString:
        return
    assert RelayConnectionString.parse(str(parsed)) == parsed


# --- control messages -------------------------------------------------------------------------------------

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=12,
)
_member_names = st.sampled_from(
    [
        "address",
        "id",
        "connectHeaders",
        "remoteEndpoint",
        "requestTarget",
        "method",
        "requestHeaders",
        "body",
        "requestId",
        "statusCode",
        "statusDescription",
        "responseHeaders",
        "token",
        "port",
        "x",
    ]
)
#: Commands with the right key and member names but any values: the member checks get exercised.
_near_commands = st.builds(
    lambda name, members: json.dumps({name: members}),
    st.sampled_from(["accept", "request", "response", "renewToken", "injectFault"]),
    st.dictionaries(_member_names, _json, max_size=6),
)


@fuzz_settings(200)
@given(st.one_of(mixed_text, st.binary(max_size=64), _json.map(json.dumps), _near_commands))
def test_decode_returns_or_raises_remote_protocol_error(text: str | bytes) -> None:
    try:
        command = messages.decode(text)
    except RemoteProtocolError:
        salvaged = messages.salvage_response(text)
        assert salvaged is None or isinstance(salvaged[0], str)
        return
    # encode(decode(x)) is a fixed point: what hyco emits for a command decodes to that same command.
    canonical = messages.encode(command)
    assert messages.decode(canonical) == command
    assert messages.encode(messages.decode(canonical)) == canonical


# --- frames -----------------------------------------------------------------------------------------------


@fuzz_settings(200)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0, max_value=200), max_size=5), st.booleans())
def test_frame_parser_returns_frames_or_raises_remote_protocol_error(
    data: bytes, cuts: list[int], masked: bool
) -> None:
    parser = FrameParser(max_frame_size=1024, expect_masked=masked)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    try:
        for start, end in itertools.pairwise(bounds):
            for frame in parser.feed(data[start:end]):
                assert len(frame.payload) <= 1024
                assert not frame.opcode.is_control or (frame.fin and len(frame.payload) <= 125)
    except RemoteProtocolError:
        return
    assert parser.buffered <= len(data)


_frames = st.lists(
    st.tuples(st.sampled_from(list(Opcode)), st.binary(max_size=130), st.booleans()), min_size=1, max_size=6
)


@fuzz_settings(120)
@given(_frames, st.integers(min_value=1, max_value=50))
def test_encoded_frames_parse_back_in_any_chunking(
    frames: list[tuple[Opcode, bytes, bool]], step: int
) -> None:
    wire = b"".join(
        encode_frame(op, payload, fin=fin, mask=b"\x01\x02\x03\x04") for op, payload, fin in frames
    )
    parser = FrameParser(max_frame_size=1 << 16, expect_masked=True)
    parsed = []
    try:
        for i in range(0, len(wire), step):
            parsed.extend(parser.feed(wire[i : i + step]))
    except RemoteProtocolError:
        return  # a sequence breaking the rules (oversize control frame, stray continuation) is refused
    assert [(f.opcode, f.payload, f.fin) for f in parsed] == frames


@fuzz_settings(80)
@given(st.binary(max_size=125))
def test_parse_close_never_raises(payload: bytes) -> None:
    code, reason = parse_close(payload)
    assert 0 <= code <= 0xFFFF
    assert isinstance(reason, str)


@fuzz_settings(80)
@given(st.lists(st.tuples(st.sampled_from(list(Opcode)), st.binary(max_size=20), st.booleans()), max_size=6))
def test_read_text_returns_text_or_raises_remote_protocol_error(
    frames: list[tuple[Opcode, bytes, bool]],
) -> None:
    queue = [Frame(op, payload, fin) for op, payload, fin in frames]

    async def next_frame() -> Frame:
        if not queue:
            raise EOFError
        return queue.pop(0)

    try:
        text = asyncio.run(read_text(next_frame, max_size=40))
    except (RemoteProtocolError, EOFError):
        return
    assert isinstance(text, str)
