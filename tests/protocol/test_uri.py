"""hyco.protocol.uri: stripping rule (protocol.md 1.3), relay-side targets, client-side addresses."""

from __future__ import annotations

import re

import pytest

from hyco.exceptions import InvalidURI
from hyco.protocol.uri import (
    HC_PREFIX,
    MAX_ID_LENGTH,
    Action,
    RelayAddress,
    WebSocketTarget,
    build_rendezvous_address,
    normalize_audience,
    parse_address,
    parse_websocket_target,
    query_params,
    strip_sb_hc_params,
)

# --- the stripping rule, protocol.md 1.3 (.NET HybridRequestTests.QueryString) ------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sb-hc-whatever=", ""),
        ("sb-hc-id=1&custom=value", "custom=value"),
        ("sb-hc-undefined", "sb-hc-undefined"),
        ("&&&", "&&&"),
        ("a=1&a=2&", "a=1&a=2&"),
        ("+", "+"),
        ("%2B", "%2B"),
        ("%20", "%20"),
        ("%2f%3a%3d%26", "%2f%3a%3d%26"),
        ("key='value'", "key='value'"),
        ("SB-HC-Token=x", ""),
        ("", ""),
        # not from the table: mixtures, ordering, prefix-only matching
        ("a=1&sb-hc-action=connect&b=2&sb-hc-id=x&", "a=1&b=2&"),
        ("sb-hc-id=1&sb-hc-undefined&x", "sb-hc-undefined&x"),
        ("z=%2F&sb-hc-token=SharedAccessSignature%20sr%3Dx&y=%2f", "z=%2F&y=%2f"),
        ("custom-sb-hc-id=1&sb-hc=1&sb-hc-=2", "custom-sb-hc-id=1&sb-hc=1"),
        # a percent-encoded sb-hc- key is read as one by query_params, so it is stripped too
        ("sb%2Dhc-token=SECRET&a=1", "a=1"),
    ],
)
def test_strip_sb_hc_params_table(raw: str, expected: str) -> None:
    assert strip_sb_hc_params(raw) == expected


def test_query_params_decodes_form_style_first_wins_lower_keys() -> None:
    params = query_params("A=1&a=2&flag&Sb-Hc-Token=Shared+Access%2BSig&e=&%41b=x")
    assert params == {"a": "1", "sb-hc-token": "Shared Access+Sig", "e": "", "ab": "x"}
    assert query_params("") == {}


def test_no_parameter_read_as_sb_hc_survives_stripping() -> None:
    # Whatever the relay interprets must never reach the listener (protocol.md 1.3, token always removed).
    for raw in ("sb-hc-token=t", "SB-HC-TOKEN=t", "sb%2dhc-token=t", "sb%2Dhc%2Dtoken=t", "sb-hc-token%3D=t"):
        leftover = query_params(strip_sb_hc_params(raw))
        assert not any(k.startswith("sb-hc-") for k in leftover), raw


# --- parse_websocket_target (relay side) ----------------------------------------------------------------


@pytest.mark.parametrize("action", list(Action))
def test_target_actions(action: Action) -> None:
    target = parse_websocket_target(f"{HC_PREFIX}echo", f"sb-hc-action={action.value}&sb-hc-id=abc")
    assert target == WebSocketTarget(path="echo", action=action, id="abc", token=None, app_query="")


def test_target_defaults_to_connect_and_keeps_suffix_and_app_query() -> None:
    target = parse_websocket_target("/$hc/echo/sub/dir/", "x=1&sb-hc-id=g&y=%2F&")
    assert target.action is Action.CONNECT
    assert target.path == "echo/sub/dir"
    assert target.id == "g"
    assert target.token is None
    assert target.app_query == "x=1&y=%2F&"


def test_target_token_is_form_decoded() -> None:
    target = parse_websocket_target(
        "/$hc/echo", "sb-hc-action=listen&sb-hc-token=SharedAccessSignature+sr%3Dhttp%253A%26sig%3Da%252Bb"
    )
    assert target.token == "SharedAccessSignature sr=http%3A&sig=a%2Bb"
    assert target.app_query == ""


@pytest.mark.parametrize("action", ["bogus", "LISTEN", ""])
def test_target_unknown_action(action: str) -> None:
    with pytest.raises(InvalidURI, match="sb-hc-action"):
        parse_websocket_target("/$hc/echo", f"sb-hc-action={action}")


def test_target_id_length_limit() -> None:
    ok = "i" * MAX_ID_LENGTH
    assert parse_websocket_target("/$hc/echo", f"sb-hc-id={ok}").id == ok
    with pytest.raises(InvalidURI, match="sb-hc-id"):
        parse_websocket_target("/$hc/echo", f"sb-hc-id={ok}i")


@pytest.mark.parametrize("raw_path", ["/echo", "/$hc", "/$HC/echo", "/$hc/", "/$hc///"])
def test_target_bad_paths(raw_path: str) -> None:
    with pytest.raises(InvalidURI):
        parse_websocket_target(raw_path, "sb-hc-action=connect")


def test_target_reject_dotnet_spelling_plus_is_space() -> None:
    target = parse_websocket_target(
        "/$hc/echo",
        "sb-hc-action=accept&sb-hc-id=r1&sb-hc-statusCode=401&sb-hc-statusDescription=Status+Description%21",
    )
    assert target.action is Action.ACCEPT
    assert target.status_code == 401
    assert target.status_description == "Status Description!"
    assert target.app_query == ""


def test_target_reject_node_spelling() -> None:
    target = parse_websocket_target(
        "/$hc/echo", "sb-hc-action=accept&sb-hc-id=r1&statusCode=400&statusDescription=Bad+thing%20here"
    )
    assert target.status_code == 400
    assert target.status_description == "Bad thing here"


def test_target_reject_prefixed_spelling_wins_and_keys_are_case_insensitive() -> None:
    target = parse_websocket_target(
        "/$hc/echo",
        "statusCode=500&statusDescription=node&sb-hc-action=accept&SB-HC-STATUSCODE=403&sb-hc-statusdescription=net",
    )
    assert (target.status_code, target.status_description) == (403, "net")


def test_target_accept_without_status_is_not_a_reject() -> None:
    target = parse_websocket_target("/$hc/echo", "sb-hc-action=accept&sb-hc-id=r1")
    assert target.status_code is None
    assert target.status_description is None


@pytest.mark.parametrize("code", ["99", "1000", "abc", "", "-400", "4e2", "²²²", "1" * 5000, "400.0"])
def test_target_reject_status_out_of_range_or_not_integer(code: str) -> None:
    with pytest.raises(InvalidURI, match="100 to 999"):
        parse_websocket_target("/$hc/echo", f"sb-hc-action=accept&sb-hc-statusCode={code}")


@pytest.mark.parametrize("code", ["100", "999"])
def test_target_reject_status_bounds(code: str) -> None:
    target = parse_websocket_target("/$hc/echo", f"sb-hc-action=accept&statusCode={code}")
    assert target.status_code == int(code)


@pytest.mark.parametrize("action", ["connect", "listen"])
def test_target_status_params_only_matter_on_accept(action: str) -> None:
    # An application's own ``statusCode`` query parameter on a sender URL is not a rejection.
    target = parse_websocket_target("/$hc/echo", f"statusCode=abc&statusDescription=x&sb-hc-action={action}")
    assert target.status_code is None
    assert target.status_description is None
    assert target.app_query == "statusCode=abc&statusDescription=x"


# --- build_rendezvous_address ----------------------------------------------------------------------------


def test_rendezvous_address_keeps_suffix_and_app_query_before_sb_hc_params() -> None:
    address = build_rendezvous_address(
        "wss://relay.example:443/", "echo/sub", "x=1&y=%2F", Action.ACCEPT, "a b/c"
    )
    assert address == "wss://relay.example:443/$hc/echo/sub?x=1&y=%2F&sb-hc-action=accept&sb-hc-id=a%20b%2Fc"


def test_rendezvous_address_without_app_query() -> None:
    address = build_rendezvous_address("ws://127.0.0.1:9", "echo", "", Action.REQUEST, "id1")
    assert address == "ws://127.0.0.1:9/$hc/echo?sb-hc-action=request&sb-hc-id=id1"


def test_rendezvous_address_round_trips_through_the_relay_parser() -> None:
    address = build_rendezvous_address("wss://r.example", "echo/s", "q=1&", Action.ACCEPT, "G_1")
    path_and_query = address.removeprefix("wss://r.example")
    raw_path, _, raw_query = path_and_query.partition("?")
    target = parse_websocket_target(raw_path, raw_query)
    assert (target.path, target.action, target.id, target.app_query) == (
        "echo/s",
        Action.ACCEPT,
        "G_1",
        "q=1&",
    )


# --- parse_address and RelayAddress (client side) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("sb://NS.Example.net/echo", RelayAddress(True, "ns.example.net", None, "echo")),
        ("sb://ns.example.net/echo/", RelayAddress(True, "ns.example.net", None, "echo")),
        ("wss://localhost:8443/$hc/echo", RelayAddress(True, "localhost", 8443, "echo")),
        ("https://ns.example.net/a/b/c/", RelayAddress(True, "ns.example.net", None, "a/b/c")),
        ("ws://127.0.0.1:9000/echo", RelayAddress(False, "127.0.0.1", 9000, "echo")),
        ("http://[::1]:8080/echo", RelayAddress(False, "::1", 8080, "echo")),
        ("HTTP://host/$hc/echo?x=1&y=2", RelayAddress(False, "host", None, "echo", "x=1&y=2")),
        ("  sb://host:443/echo  ", RelayAddress(True, "host", 443, "echo")),
    ],
)
def test_parse_address(address: str, expected: RelayAddress) -> None:
    assert parse_address(address) == expected


def test_parse_address_with_separate_path() -> None:
    assert parse_address("sb://ns.example/", "/echo/") == RelayAddress(True, "ns.example", None, "echo")
    assert parse_address("wss://ns.example", "a/b") == RelayAddress(True, "ns.example", None, "a/b")
    with pytest.raises(InvalidURI, match="already names"):
        parse_address("sb://ns.example/echo", "other")
    with pytest.raises(InvalidURI, match="no hybrid connection path"):
        parse_address("sb://ns.example/", "/")


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("ftp://host/echo", "use sb://"),
        ("host/echo", "use sb://"),
        ("sb:///echo", "no host"),
        ("sb://host:99999/echo", "Port out of range"),
        ("sb://host:abc/echo", "Port could not be cast"),
        ("sb://[::1/echo", "Invalid IPv6"),
        ("sb://host", "no hybrid connection path"),
        ("sb://host/$hc/", "no hybrid connection path"),
    ],
)
def test_parse_address_errors(address: str, reason: str) -> None:
    with pytest.raises(InvalidURI, match=re.escape(reason)) as info:
        parse_address(address)
    assert info.value.uri == address


def test_websocket_url_puts_sb_params_after_app_query_and_encodes_them() -> None:
    address = parse_address("sb://ns.example:8443/echo?app=1")
    assert address.websocket_url(Action.LISTEN) == "wss://ns.example:8443/$hc/echo?app=1&sb-hc-action=listen"
    assert (
        address.websocket_url(Action.CONNECT, ident="g 1", token="SharedAccessSignature sr=a&sig=b+/=")
        == "wss://ns.example:8443/$hc/echo?app=1&sb-hc-action=connect&sb-hc-id=g%201"
        "&sb-hc-token=SharedAccessSignature%20sr%3Da%26sig%3Db%2B%2F%3D"
    )
    plain = parse_address("ws://[::1]:9/a/b")
    assert (
        plain.websocket_url(Action.CONNECT, ident="x")
        == "ws://[::1]:9/$hc/a/b?sb-hc-action=connect&sb-hc-id=x"
    )


def test_websocket_url_is_parsed_back_by_the_relay() -> None:
    url = parse_address("ws://h:1/echo?a=%2F").websocket_url(
        Action.LISTEN, ident="i", token="SharedAccessSignature x+y"
    )
    raw_path, _, raw_query = url.removeprefix("ws://h:1").partition("?")
    target = parse_websocket_target(raw_path, raw_query)
    assert (target.path, target.action, target.id, target.token) == (
        "echo",
        Action.LISTEN,
        "i",
        "SharedAccessSignature x+y",
    )
    assert target.app_query == "a=%2F"


def test_http_url() -> None:
    assert parse_address("sb://ns.example/echo").http_url() == "https://ns.example/echo"
    assert parse_address("ws://h:8080/echo?q=1").http_url("/sub") == "http://h:8080/echo/sub?q=1"


@pytest.mark.parametrize(
    ("address", "audience"),
    [
        ("sb://NS.example:8443/echo", "http://ns.example/echo/"),
        ("wss://ns.example/$hc/a/b/", "http://ns.example/a/b/"),
        ("ws://[::1]:9/echo", "http://[::1]/echo/"),
        ("http://h:80/echo?x=1", "http://h/echo/"),
    ],
)
def test_audience_is_dotnet_style_without_port(address: str, audience: str) -> None:
    assert parse_address(address).audience == audience


@pytest.mark.parametrize(
    ("uri", "audience"),
    [
        ("sb://NS.Example:8443/$hc/Echo/Sub?x=1#f", "http://ns.example/Echo/Sub/"),
        ("wss://ns.example/$hc", "http://ns.example/"),
        ("sb://ns.example/", "http://ns.example/"),
        ("ws://[::1]:9/echo", "http://[::1]/echo/"),
    ],
)
def test_normalize_audience_matches_the_address_audience(uri: str, audience: str) -> None:
    assert normalize_audience(uri) == audience
    if audience.rstrip("/").count("/") > 2:  # names a hybrid connection: the address agrees
        assert parse_address(uri).audience == audience


def test_normalize_audience_needs_a_host() -> None:
    with pytest.raises(InvalidURI, match="host"):
        normalize_audience("/echo")


def test_netloc_and_str() -> None:
    assert parse_address("sb://h:1/e").netloc == "h:1"
    assert parse_address("sb://h/e").netloc == "h"
    assert parse_address("ws://[::1]/e").netloc == "[::1]"
    assert str(parse_address("wss://h:2/$hc/e/f")) == "sb://h:2/e/f"
    assert str(parse_address("http://h/e")) == "ws://h/e"
    assert parse_address(str(parse_address("ws://[::1]:9/x"))) == parse_address("ws://[::1]:9/x")


@pytest.mark.parametrize("path", ["%25", "a%3Fb", "a%23b", "a%20b/c"])
def test_paths_with_url_delimiters_stay_paths(path: str) -> None:
    # Found by tests/protocol/test_fuzz.py: a decoded '%', '?' or '#' went into URLs raw, so 'a?b' became a
    # path 'a' with a query, and str() did not parse back to the same address.
    address = parse_address(f"sb://h:1/{path}")
    assert parse_address(str(address)) == address
    raw_path, _, raw_query = address.websocket_url(Action.LISTEN).removeprefix("wss://h:1").partition("?")
    assert parse_websocket_target(raw_path, raw_query).path == path
    assert address.http_url().removeprefix("https://h:1/") == path


@pytest.mark.parametrize(
    ("address", "path"), [("sb://h/\ud800", None), ("sb://\udc00h/e", None), ("sb://h", "\ud800")]
)
def test_lone_surrogates_are_invalid(address: str, path: str | None) -> None:
    # Found by tests/protocol/test_fuzz.py (HYCO_FUZZ_EXAMPLES=5000): str() of the parsed address raised
    # UnicodeEncodeError.
    with pytest.raises(InvalidURI, match="surrogate"):
        parse_address(address, path)


@pytest.mark.parametrize("path", ["/$hc/echo", "$hc/echo", "$hc/echo/", "echo"])
def test_separate_path_drops_hc_prefix_like_the_address(path: str) -> None:
    # Found by tests/protocol/test_fuzz.py (HYCO_FUZZ_EXAMPLES=5000): a '$hc/' prefix was kept in a path given
    # apart, so str() of the result parsed back to another path.
    address = parse_address("sb://h", path)
    assert address.path == "echo"
    assert parse_address(str(address)) == address
