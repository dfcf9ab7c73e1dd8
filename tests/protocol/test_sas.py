"""hyco.protocol.sas: tokens as the official clients make them (protocol.md 5.1-5.3).

Expected signatures are computed here straight from protocol.md 5.2 with hmac/base64, never with the code
under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from hyco.exceptions import InvalidToken
from hyco.protocol.sas import (
    MAX_EXPIRY,
    MAX_TOKEN_LENGTH,
    SasToken,
    audience_covers,
    create_token,
    parse_token,
    verify_signature,
)

KEY = "Zm9vYmFy"  # used as text, never base64-decoded (5.2)
SE = 1700000000


def reference_sig(sr: str, se: int, key: str) -> str:
    """protocol.md 5.2: Base64(HMAC-SHA256(key=UTF-8(key text), msg=UTF-8(sr + "\\n" + se)))."""
    mac = hmac.new(key.encode("utf-8"), f"{sr}\n{se}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def encode_uri_component(text: str) -> str:
    """Node's encodeURIComponent / Java's URLEncoder for the characters that occur in these tests."""
    table = {":": "%3A", "/": "%2F", "+": "%2B", "=": "%3D", "&": "%26", " ": "%20", "?": "%3F"}
    return "".join(table.get(c, c) for c in text)


def token_text(sr: str, sig: str, se: int = SE, skn: str = "rule") -> str:
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={skn}"


# --- create_token ------------------------------------------------------------------------------------------


def test_reference_vector_is_what_protocol_md_describes() -> None:
    # Pinned once with `printf 'http%3A%2F%2Frelay.example%2Fecho%2F\n1700000000' |
    #   openssl dgst -sha256 -hmac Zm9vYmFy -binary | base64`, so the test helper itself is checked.
    assert reference_sig("http%3A%2F%2Frelay.example%2Fecho%2F", SE, KEY) == (
        "De8Yt8Ca9W8qT+Sw8mZvwhtVDotOUS/xu5zV+7CT4r0="
    )


def test_create_token_matches_independent_vector() -> None:
    sr = "http%3A%2F%2Frelay.example%2Fecho%2F"
    expected = token_text(
        sr, "De8Yt8Ca9W8qT%2BSw8mZvwhtVDotOUS%2Fxu5zV%2B7CT4r0%3D", SE, "RootManageSharedAccessKey"
    )
    assert create_token("http://relay.example/echo/", "RootManageSharedAccessKey", KEY, SE) == expected


def test_create_token_encodes_key_name_and_non_ascii_key() -> None:
    key = "kéy with spaces"
    token = create_token("sb://h/a b", "my rule", key, 42)
    sr = "sb%3A%2F%2Fh%2Fa%20b"
    assert token == token_text(sr, encode_uri_component(reference_sig(sr, 42, key)), 42, "my%20rule")


@pytest.mark.parametrize(
    ("key_name", "key", "match"),
    [
        ("", KEY, "key name"),
        ("n" * 257, KEY, "key name"),
        ("rule", "", "the key must"),
        ("rule", "k" * 257, "the key must"),
    ],
)
def test_create_token_rejects_bad_key_name_or_key(key_name: str, key: str, match: str) -> None:
    with pytest.raises(InvalidToken, match=match):
        create_token("http://h/e", key_name, key, SE)


def test_create_token_refuses_an_empty_audience() -> None:
    # Found by tests/protocol/test_fuzz.py: it made a token with an empty 'sr' that parse_token refuses.
    with pytest.raises(InvalidToken, match="audience"):
        create_token("", "rule", KEY, SE)


def test_create_token_accepts_256_character_name_and_key() -> None:
    token = parse_token(create_token("http://h/e", "n" * 256, "k" * 256, SE))
    assert token.key_name == "n" * 256
    assert verify_signature(token, "k" * 256)


# --- tokens made by each official client verify over the raw sr (5.2, 5.3) -------------------------------

CLIENT_RESOURCES = {
    # Node createRelayToken: encodeURIComponent of http://host:port/path, port kept
    "node": encode_uri_component("http://127.0.0.1:12345/echo"),
    # Java listener: URLEncoder.encode("sb://host/path")
    "java": encode_uri_component("sb://host/path"),
    # .NET: WebUtility.UrlEncode("http://host/path/"), upper-case hex
    "dotnet": encode_uri_component("http://relay.example/echo/"),
    # doc examples: lower-case escapes
    "docs": "http%3a%2f%2fcontoso.servicebus.windows.net%2fhyco%2f",
}


def test_client_resources_are_the_literal_forms() -> None:
    assert CLIENT_RESOURCES["node"] == "http%3A%2F%2F127.0.0.1%3A12345%2Fecho"
    assert CLIENT_RESOURCES["java"] == "sb%3A%2F%2Fhost%2Fpath"


@pytest.mark.parametrize("client", sorted(CLIENT_RESOURCES))
def test_verify_accepts_each_client_form_signed_over_raw_sr(client: str) -> None:
    sr = CLIENT_RESOURCES[client]
    token = parse_token(token_text(sr, encode_uri_component(reference_sig(sr, SE, KEY))))
    assert token.resource == sr  # kept exactly as signed, escape casing included
    assert verify_signature(token, KEY)


@pytest.mark.parametrize("client", sorted(CLIENT_RESOURCES))
def test_verify_rejects_wrong_key_tampered_se_tampered_sr(client: str) -> None:
    sr = CLIENT_RESOURCES[client]
    sig = encode_uri_component(reference_sig(sr, SE, KEY))
    assert not verify_signature(parse_token(token_text(sr, sig)), KEY + "x")
    assert not verify_signature(parse_token(token_text(sr, sig, se=SE + 1)), KEY)
    assert not verify_signature(parse_token(token_text(sr + "2", sig)), KEY)
    assert not verify_signature(parse_token(token_text(sr[:-3], sig)), KEY)
    assert not verify_signature(parse_token(token_text(sr.replace("h", "H", 1), sig)), KEY)


def test_verify_falls_back_to_upper_case_reencoding() -> None:
    # A client that lower-cased the escapes after signing the upper-case form (protocol.md 5.2 [INF]).
    upper = "http%3A%2F%2Fh%2Fecho"
    token = parse_token(token_text(upper.lower(), encode_uri_component(reference_sig(upper, SE, KEY))))
    assert token.resource == "http%3a%2f%2fh%2fecho"
    assert verify_signature(token, KEY)
    # ...but a signature over some other encoding is not accepted.
    other = parse_token(token_text("http%3a%2f%2fh%2fecho", reference_sig("http://h/echo", SE, KEY)))
    assert not verify_signature(other, KEY)


def test_raw_plus_in_sig_is_not_a_space() -> None:
    sr = "http%3A%2F%2Frelay.example%2Fecho%2F"
    raw_sig = "De8Yt8Ca9W8qT+Sw8mZvwhtVDotOUS/xu5zV+7CT4r0="  # Python quote() leaves '/' raw; some leave '+'
    token = parse_token(token_text(sr, raw_sig))
    assert token.signature == raw_sig
    assert verify_signature(token, KEY)


# --- parse_token -----------------------------------------------------------------------------------------


def test_parse_token_fields() -> None:
    token = parse_token("SharedAccessSignature sr=http%3A%2F%2Fh%2Fe&sig=YWJj%3D&se=123&skn=my%20rule")
    assert token == SasToken(resource="http%3A%2F%2Fh%2Fe", signature="YWJj=", expiry=123, key_name="my rule")
    assert token.audience == "http://h/e"


@pytest.mark.parametrize(
    "text",
    [
        "SharedAccessSignature skn=rule&se=123&sig=YWJj&sr=http%3A%2F%2Fh%2Fe",
        "SharedAccessSignature SR=http%3A%2F%2Fh%2Fe&Sig=YWJj&sE=123&SKN=rule",
        "sharedaccesssignature sr=http%3A%2F%2Fh%2Fe&sig=YWJj&se=123&skn=rule",
        "  SharedAccessSignature   sr=http%3A%2F%2Fh%2Fe&sig=YWJj&se=123&skn=rule&foo=bar&junk  ",
    ],
)
def test_parse_token_any_order_any_case_unknown_fields_ignored(text: str) -> None:
    assert parse_token(text) == SasToken("http%3A%2F%2Fh%2Fe", "YWJj", 123, "rule")


@pytest.mark.parametrize("missing", ["sr", "sig", "se", "skn"])
def test_parse_token_missing_field(missing: str) -> None:
    fields = {"sr": "http%3A%2F%2Fh", "sig": "YWJj", "se": "1", "skn": "r"}
    text = "SharedAccessSignature " + "&".join(f"{k}={v}" for k, v in fields.items() if k != missing)
    with pytest.raises(InvalidToken, match=missing):
        parse_token(text)
    empty = "SharedAccessSignature " + "&".join(f"{k}={'' if k == missing else v}" for k, v in fields.items())
    with pytest.raises(InvalidToken, match=missing):
        parse_token(empty)


@pytest.mark.parametrize("dup", ["sr=x", "SIG=y", "se=2", "Skn=other"])
def test_parse_token_duplicate_field(dup: str) -> None:
    with pytest.raises(InvalidToken, match="more than one"):
        parse_token(f"SharedAccessSignature sr=a&sig=b&se=1&skn=c&{dup}")


@pytest.mark.parametrize("se", ["12.5", "-1", "abc", "%C2%B2", "1e9", "+5", "0x10"])
def test_parse_token_non_integer_se(se: str) -> None:
    with pytest.raises(InvalidToken, match="'se'"):
        parse_token(f"SharedAccessSignature sr=a&sig=b&se={se}&skn=c")


def test_parse_token_percent_encoded_se_is_decoded() -> None:
    assert parse_token("SharedAccessSignature sr=a&sig=b&se=%31%32&skn=c").expiry == 12


@pytest.mark.parametrize(
    "text", ["", "Bearer abc", "SharedAccessSignature", "SharedAccessSignature ", "SharedAccessSignaturesr=a"]
)
def test_parse_token_not_a_sas(text: str) -> None:
    with pytest.raises(InvalidToken, match="not a shared access signature"):
        parse_token(text)


def test_parse_token_length_limit_and_message_hides_token() -> None:
    base = "SharedAccessSignature sr=a&sig=SECRETSIG&se=1&skn=c&pad="
    assert parse_token(base + "x" * (MAX_TOKEN_LENGTH - len(base))).signature == "SECRETSIG"
    with pytest.raises(InvalidToken, match="longer than") as info:
        parse_token(base + "x" * (MAX_TOKEN_LENGTH - len(base) + 1))
    assert "SECRETSIG" not in str(info.value)
    with pytest.raises(InvalidToken) as info:
        parse_token("SharedAccessSignature sr=a&sig=SECRETSIG&se=soon&skn=c")
    assert "SECRETSIG" not in str(info.value)


def test_repr_hides_signature() -> None:
    assert "SECRETSIG" not in repr(SasToken("sr", "SECRETSIG", 1, "k"))


# --- expiry ----------------------------------------------------------------------------------------------


def test_expired_with_and_without_grace() -> None:
    token = SasToken("sr", "sig", 1000, "k")
    assert not token.expired(999)
    assert not token.expired(1000)
    assert token.expired(1000.001)
    assert not token.expired(1300, grace=300)
    assert token.expired(1300.5, grace=300)


# --- audience_covers (5.3) -------------------------------------------------------------------------------

HOSTS = {"relay.example", "localhost"}


def sas_for(audience: str) -> SasToken:
    return SasToken(resource=encode_uri_component(audience), signature="s", expiry=0, key_name="k")


@pytest.mark.parametrize(
    ("audience", "requested", "covers"),
    [
        # every scheme a client uses
        ("http://relay.example/echo", "echo", True),
        ("https://relay.example/echo", "echo", True),
        ("sb://relay.example/echo", "echo", True),
        ("ws://relay.example/echo", "echo", True),
        ("wss://relay.example/echo", "echo", True),
        ("ftp://relay.example/echo", "echo", False),
        ("relay.example/echo", "echo", False),
        # port ignored, host case ignored, trailing slash ignored, path case ignored
        ("http://relay.example:12345/echo", "echo", True),
        ("http://relay.example:443/echo/", "echo", True),
        ("http://RELAY.Example/echo", "echo", True),
        ("http://relay.example/ECHO/", "/echo/", True),
        ("wss://relay.example/$hc/echo", "echo", True),
        # namespace-wide tokens (empty path); Java sender drops the path
        ("http://relay.example/", "echo", True),
        ("sb://relay.example:443", "a/b", True),
        # the token's path is a segment-prefix of the requested path (a multi-segment entity, or a suffix)
        ("http://relay.example/a/b", "a/b/c", True),
        ("http://relay.example/a/b/", "a/bc", False),
        ("http://relay.example/echo", "echo/sub/deeper", True),
        # Node signs the path it dials, suffix included: it covers that path (the relay passes the suffix)
        ("http://localhost:9000/echo/sub", "echo/sub", True),
        ("http://localhost/echo/sub/deeper", "echo/sub/deeper/more", True),
        # never the other way round: a token for a deeper path does not cover its parent (defect 6)
        ("http://localhost:9000/echo/sub", "echo", False),
        ("http://relay.example/team/secret", "team", False),
        ("http://relay.example/a/b/c", "a/b", False),
        ("http://relay.example/echo/sub", "echo/other", False),
        # wrong host, wrong path, a sibling sharing a prefix
        ("http://other.example/echo", "echo", False),
        ("http://relay.example.evil/echo", "echo", False),
        ("http://relay.example/echo2", "echo", False),
        ("http://relay.example/echo", "echo2", False),
        ("http://relay.example/team", "team2/sub", False),
        ("http://relay.example/ech", "echo", False),
        ("http://relay.example/other/echo", "echo", False),
        # unparsable
        ("http://[::1/echo", "echo", False),
        ("", "echo", False),
    ],
)
def test_audience_covers(audience: str, requested: str, covers: bool) -> None:
    assert audience_covers(sas_for(audience), HOSTS, requested) is covers


def test_audience_covers_lower_case_escapes_and_ipv6() -> None:
    token = SasToken("http%3a%2f%2fRelay.Example%3a443%2fecho%2f", "s", 0, "k")
    assert audience_covers(token, HOSTS, "echo")
    assert audience_covers(sas_for("http://[::1]:8080/echo"), {"::1"}, "echo")
    assert not audience_covers(sas_for("http://[::1]:8080/echo"), HOSTS, "echo")


@pytest.mark.parametrize("se", [str(MAX_EXPIRY + 1), "9" * 400, "1" + "0" * 309])
def test_parse_token_refuses_expiry_after_year_9999(se: str) -> None:
    with pytest.raises(InvalidToken, match="after the year 9999") as info:
        parse_token(token_text("sr", "SECRETSIG", se=se))
    assert "SECRETSIG" not in str(info.value)


def test_parse_token_accepts_year_9999_and_leading_zeros() -> None:
    assert parse_token(token_text("sr", "s", se=MAX_EXPIRY)).expiry == MAX_EXPIRY
    assert parse_token(token_text("sr", "s", se="0" * 20 + "42")).expiry == 42


def test_expired_never_overflows() -> None:
    # A SasToken built by hand may carry any int; the comparison must not go through float.
    assert not SasToken("sr", "s", 10**400, "k").expired(1e9, grace=300.0)
    assert SasToken("sr", "s", 0, "k").expired(1e9, grace=300.0)
