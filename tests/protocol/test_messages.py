"""hyco.protocol.messages: control-channel commands (protocol.md 2.2-2.6)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco.exceptions import RelayError, RemoteProtocolError
from hyco.protocol.messages import (
    MAX_ACCEPT_SIZE,
    MAX_STATUS_DESCRIPTION,
    Accept,
    Command,
    RemoteEndpoint,
    RenewToken,
    Request,
    Response,
    check_accept_size,
    decode,
    encode,
    has_control_characters,
    salvage_response,
    status_description,
)

ADDR = "wss://relay.example:443/$hc/echo/sub?x=1&sb-hc-action=accept&sb-hc-id=0f0e_G0_G1"
REQ_ADDR = "wss://relay.example/$hc/echo?sb-hc-action=request&sb-hc-id=c126_G12"
EP = RemoteEndpoint("203.0.113.5", 50123)

# --- encode: exact text, Azure member order, compact separators ------------------------------------------


@pytest.mark.parametrize(
    ("command", "text"),
    [
        (
            Accept(ADDR, "0f0e_G0_G1", {"Sec-WebSocket-Key": "AAAA==", "Host": "relay.example:443"}, EP),
            '{"accept":{"address":"' + ADDR + '","id":"0f0e_G0_G1",'
            '"connectHeaders":{"Sec-WebSocket-Key":"AAAA==","Host":"relay.example:443"},'
            '"remoteEndpoint":{"address":"203.0.113.5","port":50123}}}',
        ),
        (
            Accept(ADDR, "i"),
            '{"accept":{"address":"' + ADDR + '","id":"i","connectHeaders":{}}}',
        ),
        (
            Request(
                REQ_ADDR,
                "c126_G12",
                "/echo/a?b=1",
                "POST",
                EP,
                {"Host": "relay.example", "Via": "1.1 r"},
                True,
            ),
            '{"request":{"address":"' + REQ_ADDR + '","id":"c126_G12","requestTarget":"/echo/a?b=1",'
            '"method":"POST","remoteEndpoint":{"address":"203.0.113.5","port":50123},'
            '"requestHeaders":{"Host":"relay.example","Via":"1.1 r"},"body":true}}',
        ),
        (
            Request(REQ_ADDR, "r", "/echo", "GET", None, {}, False),
            '{"request":{"address":"' + REQ_ADDR + '","id":"r","requestTarget":"/echo","method":"GET",'
            '"requestHeaders":{},"body":false}}',
        ),
        (Request(REQ_ADDR), '{"request":{"address":"' + REQ_ADDR + '"}}'),
        (Request(REQ_ADDR, id="r"), '{"request":{"address":"' + REQ_ADDR + '","id":"r"}}'),
        (
            Response("c126_G12", 201, "Created", {"Content-Type": "text/plain", "X": "ø"}, True),
            '{"response":{"requestId":"c126_G12","body":true,"statusCode":201,"statusDescription":"Created",'
            '"responseHeaders":{"Content-Type":"text/plain","X":"ø"}}}',
        ),
        (Response("r", 204), '{"response":{"requestId":"r","body":false,"statusCode":204}}'),
        (
            Response("r", 200, response_headers={}),
            '{"response":{"requestId":"r","body":false,"statusCode":200,"responseHeaders":{}}}',
        ),
        (
            RenewToken("SharedAccessSignature sr=a&sig=b&se=1&skn=c"),
            '{"renewToken":{"token":"SharedAccessSignature sr=a&sig=b&se=1&skn=c"}}',
        ),
    ],
)
def test_encode_exact_text(command: Command, text: str) -> None:
    assert encode(command) == text
    assert decode(text) == command


def test_stub_has_no_body_and_no_method() -> None:
    assert Request(REQ_ADDR).is_stub
    assert Request(REQ_ADDR, "r", "/e", "GET").is_stub  # .NET/Java: no body => stub
    assert Request(REQ_ADDR, "r", "/e", body=True).is_stub  # Node: no method => stub
    assert not Request(REQ_ADDR, "r", "/e", "GET", body=False).is_stub


def test_renew_token_repr_hides_token() -> None:
    assert "SECRET" not in repr(RenewToken("SharedAccessSignature sig=SECRET"))


# --- decode: real-world forms ----------------------------------------------------------------------------


def test_decode_dotnet_escaped_slashes_accept() -> None:
    text = (
        r'{"accept":{"address":"wss:\/\/g17-prod-by3-010-sb.servicebus.windows.net\/$hc\/yesclientauth'
        r'?sb-hc-action=accept&sb-hc-id=ca49_G17_G30","id":"ca49_G17_G30",'
        r'"connectHeaders":{"Sec-WebSocket-Key":"AAAAAAAAAAAAAAAAAAAAAA==","Sec-WebSocket-Version":"13",'
        r'"Host":"ns.servicebus.windows.net:443"},"remoteEndpoint":{"address":"203.0.113.5","port":50123}}}'
    )
    assert decode(text) == Accept(
        "wss://g17-prod-by3-010-sb.servicebus.windows.net/$hc/yesclientauth?sb-hc-action=accept&sb-hc-id=ca49_G17_G30",
        "ca49_G17_G30",
        {
            "Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAA==",
            "Sec-WebSocket-Version": "13",
            "Host": "ns.servicebus.windows.net:443",
        },
        RemoteEndpoint("203.0.113.5", 50123),
    )


def test_decode_real_request_and_bytes_input() -> None:
    text = (
        r'{"request":{"address":"wss:\/\/g12-prod-by3-010-sb.servicebus.windows.net\/$hc\/yesclientauth'
        r'?sb-hc-action=request&sb-hc-id=c126_G12","id":"c126_G12","requestTarget":"\/yesclientauth",'
        r'"method":"GET","remoteEndpoint":{"address":"::ffff:10.0.0.1","port":443},'
        r'"requestHeaders":{"Host":"ns.servicebus.windows.net","Via":"1.1 ns.servicebus.windows.net"},'
        r'"body":false}}'
    )
    request = decode(text.encode())
    assert isinstance(request, Request)
    assert request.request_target == "/yesclientauth"
    assert request.address.startswith("wss://g12-prod-by3-010-sb.servicebus.windows.net/$hc/")
    assert request.remote_endpoint == RemoteEndpoint("::ffff:10.0.0.1", 443)
    assert request.body is False
    assert not request.is_stub


def test_decode_stub() -> None:
    stub = decode('{"request":{"address":"' + REQ_ADDR + '"}}')
    assert stub == Request(REQ_ADDR)
    assert stub.is_stub


@pytest.mark.parametrize(
    "text",
    [
        # Java order
        '{"response":{"requestId":"1","body":true,"statusCode":200,"statusDescription":"OK",'
        '"responseHeaders":{"A":"b"}}}',
        # .NET DataContract default (alphabetical) order
        '{"response":{"body":true,"requestId":"1","responseHeaders":{"A":"b"},"statusCode":200,'
        '"statusDescription":"OK"}}',
        # Go listener against Azure: numeric string statusCode
        '{"response":{"requestId":"1","statusCode":"200","statusDescription":"OK","responseHeaders":{"A":"b"},'
        '"body":true}}',
        '{"response":{"requestId":"1","statusCode":" 200 ","statusDescription":"OK",'
        '"responseHeaders":{"A":"b"},"body":true,"futureMember":[1,2]}}',
    ],
)
def test_decode_response_forms(text: str) -> None:
    assert decode(text) == Response("1", 200, "OK", {"A": "b"}, True)


def test_decode_response_optional_members_missing_or_null() -> None:
    assert decode('{"response":{"requestId":"1","statusCode":404}}') == Response("1", 404, None, None, False)
    assert decode(
        '{"response":{"requestId":"1","statusCode":404,"statusDescription":null,"responseHeaders":null}}'
    ) == Response("1", 404)


def test_decode_ignores_unknown_members() -> None:
    text = (
        '{"accept":{"address":"a","id":"i","connectHeaders":{"K":"v"},"x":1,'
        '"remoteEndpoint":{"address":"1.2.3.4","port":5,"family":"v4"}}}'
    )
    assert decode(text) == Accept("a", "i", {"K": "v"}, RemoteEndpoint("1.2.3.4", 5))
    assert decode('{"renewToken":{"token":"t","extra":true}}') == RenewToken("t")


def test_decode_accept_without_optional_members() -> None:
    assert decode('{"accept":{"address":"a","id":"i"}}') == Accept("a", "i", {}, None)
    assert decode(
        '{"accept":{"address":"a","id":"i","connectHeaders":null,"remoteEndpoint":null}}'
    ) == Accept("a", "i")


def test_decode_header_numbers_are_converted_to_text() -> None:
    # Values are strings on the wire (2.2); a lax peer's number is tolerated as its text.
    accept = decode('{"accept":{"address":"a","id":"i","connectHeaders":{"Content-Length":12,"Q":0.5}}}')
    assert isinstance(accept, Accept)
    assert accept.connect_headers == {"Content-Length": "12", "Q": "0.5"}


# --- decode: errors --------------------------------------------------------------------------------------

ACCEPT_OK: dict[str, Any] = {"address": "a", "id": "i"}
RESPONSE_OK: dict[str, Any] = {"requestId": "r", "statusCode": 200, "body": False}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{",
        b"\xff\xfe\x00",
        b"\x80abc",
        "[]",
        '[{"accept":{}}]',
        '"accept"',
        "42",
        "null",
        "{}",
        '{"accept":{"address":"a","id":"i"},"request":{"address":"b"}}',
        '{"injectFault":{}}',
        '{"Accept":{"address":"a","id":"i"}}',
        '{"accept":[]}',
        '{"accept":"a"}',
        '{"request":null}',
        "[" * 100_000,
        '{"a":' * 100_000,
    ],
)
def test_decode_rejects_malformed_messages(text: str | bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(text)


_MISSING = object()


def _bad(command: str, base: dict[str, Any], **changes: Any) -> str:
    obj = {k: v for k, v in {**base, **changes}.items() if v is not _MISSING}
    return json.dumps({command: obj})


@pytest.mark.parametrize(
    "text",
    [
        # accept
        _bad("accept", ACCEPT_OK, address=_MISSING),
        _bad("accept", ACCEPT_OK, address=1),
        _bad("accept", ACCEPT_OK, id=_MISSING),
        _bad("accept", ACCEPT_OK, id=None),
        _bad("accept", ACCEPT_OK, id=True),
        _bad("accept", ACCEPT_OK, connectHeaders=[]),
        _bad("accept", ACCEPT_OK, connectHeaders="Host: x"),
        _bad("accept", ACCEPT_OK, remoteEndpoint="1.2.3.4:5"),
        _bad("accept", ACCEPT_OK, remoteEndpoint={"address": "1.2.3.4"}),
        _bad("accept", ACCEPT_OK, remoteEndpoint={"address": "1.2.3.4", "port": "5"}),
        _bad("accept", ACCEPT_OK, remoteEndpoint={"address": "1.2.3.4", "port": True}),
        _bad("accept", ACCEPT_OK, remoteEndpoint={"address": "1.2.3.4", "port": 5.0}),
        _bad("accept", ACCEPT_OK, remoteEndpoint={"address": 1234, "port": 5}),
        # header values that are not strings
        _bad("accept", ACCEPT_OK, connectHeaders={"A": None}),
        _bad("accept", ACCEPT_OK, connectHeaders={"A": True}),
        _bad("accept", ACCEPT_OK, connectHeaders={"A": ["b", "c"]}),
        _bad("accept", ACCEPT_OK, connectHeaders={"A": {"b": "c"}}),
        # request
        _bad("request", {}),
        _bad("request", {"address": None}),
        _bad("request", {"address": "a", "id": 7}),
        _bad("request", {"address": "a", "method": 1}),
        _bad("request", {"address": "a", "requestTarget": ["/"]}),
        _bad("request", {"address": "a", "body": "true"}),
        _bad("request", {"address": "a", "body": 1}),
        _bad("request", {"address": "a", "requestHeaders": {"A": False}}),
        # response
        _bad("response", RESPONSE_OK, requestId=_MISSING),
        _bad("response", RESPONSE_OK, requestId=1),
        _bad("response", RESPONSE_OK, body="yes"),
        _bad("response", RESPONSE_OK, body=None),
        _bad("response", RESPONSE_OK, statusDescription=200),
        _bad("response", RESPONSE_OK, responseHeaders={"A": None}),
        _bad("response", RESPONSE_OK, responseHeaders=[["A", "b"]]),
        # renewToken
        _bad("renewToken", {}),
        _bad("renewToken", {"token": 123}),
        _bad("renewToken", {"token": None}),
    ],
)
def test_decode_rejects_wrong_member_types(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(text)


@pytest.mark.parametrize(
    "status",
    [
        _MISSING,
        None,
        99,
        1000,
        -200,
        True,
        False,
        200.0,
        "abc",
        "",
        "2OO",
        "²²²",
        "1" * 5000,
        [200],
        {"code": 200},
    ],
)
def test_decode_rejects_bad_status_codes(status: Any) -> None:
    with pytest.raises(RemoteProtocolError, match="statusCode"):
        decode(_bad("response", RESPONSE_OK, statusCode=status))


@pytest.mark.parametrize("status", [100, 999, "100", "999"])
def test_decode_status_code_bounds(status: int | str) -> None:
    response = decode(_bad("response", RESPONSE_OK, statusCode=status))
    assert isinstance(response, Response)
    assert response.status_code == int(status)


def test_errors_never_echo_a_token() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode('{"renewToken":{"token":"SharedAccessSignature sig=SECRET","x":1},"y":2}')
    assert "SECRET" not in str(info.value)
    with pytest.raises(RemoteProtocolError) as info:
        decode('{"renewToken":{"token":["SharedAccessSignature sig=SECRET"]}}')
    assert "SECRET" not in str(info.value)


# --- property: decode(encode(x)) == x for every command type ---------------------------------------------

_text = st.text(max_size=20)
#: What HTTP can carry (RFC 9110): token names; values and reason phrases without control characters but HTAB.
TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_field_name = st.text(TCHARS, min_size=1, max_size=20)
_field_value = st.text(
    st.characters(
        exclude_categories=("Cs",), exclude_characters=[*map(chr, range(9)), *map(chr, range(10, 32)), "\x7f"]
    ),
    max_size=20,
)
_headers = st.dictionaries(_field_name, _field_value, max_size=4)
_endpoint = st.builds(RemoteEndpoint, _text, st.integers(min_value=0, max_value=65535))
_commands = st.one_of(
    st.builds(Accept, _text, _text, _headers, st.none() | _endpoint),
    st.builds(
        Request,
        _text,
        st.none() | _text,
        st.none() | _text,
        st.none() | _text,
        st.none() | _endpoint,
        st.none() | _headers,
        st.none() | st.booleans(),
    ),
    st.builds(
        Response,
        _text,
        st.integers(min_value=100, max_value=999),
        st.none() | _field_value,
        st.none() | _headers,
        st.booleans(),
    ),
    st.builds(RenewToken, _text),
)


@given(_commands)
def test_decode_encode_round_trip(command: Command) -> None:
    text = encode(command)
    assert decode(text) == command
    assert decode(text.encode("utf-8")) == command
    assert encode(decode(text)) == text


# --- status descriptions: what an HTTP status line can carry ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "unsafe", "cleaned"),
    [
        ("Bad Gateway", False, "Bad Gateway"),
        ("tab\tis fine", False, "tab\tis fine"),
        ("héllo wörld", False, "héllo wörld"),
        ("line\r\nX-Injected: 1", True, "line  X-Injected: 1"),
        ("nul\x00 del\x7f", True, "nul  del "),
    ],
)
def test_status_description_replaces_control_characters(text: str, unsafe: bool, cleaned: str) -> None:
    assert has_control_characters(text) is unsafe
    assert status_description(text) == cleaned
    assert not has_control_characters(status_description(text))


def test_status_description_is_cut_to_the_limit() -> None:
    assert status_description("x" * (MAX_STATUS_DESCRIPTION + 10)) == "x" * MAX_STATUS_DESCRIPTION


# --- header fields and reason phrases an HTTP message cannot carry (issue 13, defect 9) -------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"statusDescription": "OK\r\nSet-Cookie: forged=1"},
        {"statusDescription": "OK\n"},
        {"statusDescription": "nul\x00"},
        {"statusDescription": "lone \ud800 surrogate"},
        {"responseHeaders": {"X-A": "a\r\nSet-Cookie: forged=1"}},
        {"responseHeaders": {"X-A": "bell\x07"}},
        {"responseHeaders": {"X-A": "del\x7f"}},
        {"responseHeaders": {"X-A": "\udc00"}},
        {"responseHeaders": {"X A": "v"}},
        {"responseHeaders": {"X-A:": "v"}},
        {"responseHeaders": {"": "v"}},
        {"responseHeaders": {"X-A\r\nEvil": "v"}},
    ],
)
def test_decode_refuses_what_would_break_the_http_response(changes: dict[str, Any]) -> None:
    text = _bad("response", RESPONSE_OK, **changes)
    with pytest.raises(RemoteProtocolError, match=r"control character|HTTP token"):
        decode(text)
    # The request it answers can still be failed alone.
    assert salvage_response(text) == ("r", False)


@pytest.mark.parametrize("command", ["accept", "request"])
def test_decode_refuses_control_characters_in_relay_headers(command: str) -> None:
    key = "connectHeaders" if command == "accept" else "requestHeaders"
    with pytest.raises(RemoteProtocolError, match="control character"):
        decode(_bad(command, ACCEPT_OK, **{key: {"Host": "h\r\nX-Injected: 1"}}))


def test_decode_keeps_tabs_and_non_ascii_in_values() -> None:
    response = decode(
        _bad("response", RESPONSE_OK, statusDescription="Très\tbien", responseHeaders={"X-A": "ø\tv"})
    )
    assert isinstance(response, Response)
    assert response.status_description == "Très\tbien"
    assert response.response_headers == {"X-A": "ø\tv"}


# --- salvage_response: a bad response fails only its request (issue 13, defect 9) ------------------------


@pytest.mark.parametrize(
    ("text", "salvaged"),
    [
        (_bad("response", RESPONSE_OK, statusCode="abc"), ("r", False)),
        (_bad("response", RESPONSE_OK, statusCode=1000, body=True), ("r", True)),
        (_bad("response", RESPONSE_OK, body="yes"), ("r", False)),
        (_bad("response", RESPONSE_OK, requestId=7), None),
        (_bad("accept", ACCEPT_OK), None),
        ('{"response":[]}', None),
        ("[]", None),
        ("not json", None),
        (b"\xff\xfe", None),
        ('{"response":{"requestId":"r","statusCode":' + "[" * 100_000 + "]" * 100_000 + "}}", None),
        ("[" * 100_000, None),
    ],
)
def test_salvage_response(text: str | bytes, salvaged: tuple[str, bool] | None) -> None:
    assert salvage_response(text) == salvaged


def test_deep_nesting_is_a_protocol_error_even_inside_a_response() -> None:
    text = '{"response":{"requestId":"r","statusCode":' + "[" * 100_000 + "]" * 100_000 + "}}"
    with pytest.raises(RemoteProtocolError, match="RecursionError"):
        decode(text)


# --- check_accept_size: what official listeners can read (protocol.md 2.2; issue 13, defect 10) ----------


def _accept_of_size(size: int) -> Accept:
    """An accept whose encoded UTF-8 size is exactly ``size`` bytes (one padded header, two-byte 'ø's)."""
    base = len(encode(Accept(ADDR, "i", {"X-Pad": ""})).encode())
    pad = size - base
    return Accept(ADDR, "i", {"X-Pad": "ø" * (pad // 2) + "x" * (pad % 2)})


def test_accept_up_to_64_kib_passes() -> None:
    accept = _accept_of_size(MAX_ACCEPT_SIZE)
    assert len(encode(accept).encode("utf-8")) == 65536
    check_accept_size(accept)


def test_accept_one_byte_over_is_refused_with_431() -> None:
    accept = _accept_of_size(MAX_ACCEPT_SIZE + 1)
    with pytest.raises(RelayError) as info:
        check_accept_size(accept)
    assert info.value.http_status == 431
    assert "65537-byte" in info.value.description


def test_the_size_check_and_the_send_share_one_encoding() -> None:
    accept = Accept(ADDR, "i", {"X-A": "ø"}, EP)
    check_accept_size(accept)
    assert encode(accept) is encode(accept)  # made once, by the check
    assert json.loads(encode(accept)) == json.loads(encode(Accept(ADDR, "i", {"X-A": "ø"}, EP)))
    assert accept == Accept(ADDR, "i", {"X-A": "ø"}, EP) and "_text" not in repr(accept)


def test_a_hundred_8_kib_headers_are_refused() -> None:
    # The probe in issue 13: 100 headers of 8 KB made an 801,640-byte accept.
    headers = {f"X-Big-{i}": "v" * 8000 for i in range(100)}
    with pytest.raises(RelayError) as info:
        check_accept_size(Accept(ADDR, "i", headers, EP))
    assert info.value.http_status == 431
    assert "v" * 100 not in info.value.description  # sizes, not the values
