"""TokenProvider and connection strings against vectors computed the way .NET, Node and Java compute them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import string
from urllib.parse import quote

import pytest

from hyco import (
    HybridConnectionClient,
    HybridConnectionListener,
    InvalidConnectionString,
    InvalidInput,
    InvalidToken,
    SecurityToken,
    TokenProvider,
)
from hyco.client.credentials import normalize_audience, renew_time
from hyco.protocol.backoff import reconnect_delays
from hyco.protocol.sas import audience_covers, parse_token, verify_signature

NOW = 1_700_000_000.0
KEY = "k3y+/=Base64Text"
KEY_NAME = "RootManageSharedAccessKey"


def dotnet_url_encode(text: str) -> str:
    """System.Net.WebUtility.UrlEncode: unreserved = alnum and -_.!*(), space -> '+', upper-case hex."""
    safe = set(string.ascii_letters + string.digits + "-_.!*()")
    out = []
    for byte in text.encode():
        ch = chr(byte)
        if ch in safe:
            out.append(ch)
        elif ch == " ":
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def java_url_encode(text: str) -> str:
    """java.net.URLEncoder.encode(s, UTF-8): unreserved = alnum and .-*_, space -> '+'."""
    safe = set(string.ascii_letters + string.digits + ".-*_")
    return "".join(chr(b) if chr(b) in safe else "+" if b == 32 else f"%{b:02X}" for b in text.encode())


def hmac_b64(key: str, message: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()).decode()


def dotnet_token(audience: str, key_name: str, key: str, expiry: int) -> str:
    """SharedAccessSignatureTokenProvider.BuildSignature, step by step (protocol.md 5.2)."""
    sr = dotnet_url_encode(audience)
    sig = hmac_b64(key, f"{sr}\n{expiry}")
    return (
        f"SharedAccessSignature sr={sr}&sig={dotnet_url_encode(sig)}"
        f"&se={expiry}&skn={dotnet_url_encode(key_name)}"
    )


async def test_shared_access_key_matches_dotnet() -> None:
    tp = TokenProvider.from_shared_access_key(KEY_NAME, KEY, clock=lambda: NOW)
    audience = normalize_audience("sb://Contoso.ServiceBus.Windows.Net:443/echo")
    assert audience == "http://contoso.servicebus.windows.net/echo/"
    token = await tp.get_token(audience)
    assert token.token == dotnet_token(audience, KEY_NAME, KEY, int(NOW + 3600))
    assert token.expires_at == NOW + 3600
    assert NOW + 3000 < token.renew_at < token.expires_at
    assert "sig=" not in repr(token)


async def test_fixed_dotnet_vector() -> None:
    # Frozen value: computed once with the .NET algorithm above; guards against regressions in both.
    tp = TokenProvider.from_shared_access_key(KEY_NAME, KEY, clock=lambda: NOW)
    token = await tp.get_token("http://contoso.servicebus.windows.net/echo/")
    assert token.token == (
        "SharedAccessSignature sr=http%3A%2F%2Fcontoso.servicebus.windows.net%2Fecho%2F"
        "&sig=bXLBo4E1RSREnC%2FQ9HkF4Py7xkOXJ3mYx9QC1%2Brm%2BhQ%3D&se=1700003600&skn=RootManageSharedAccessKey"
    )
    assert verify_signature(parse_token(token.token), KEY)


# Produced by the official Node package: hyco-ws 1.0.5 createRelayToken(uri, keyName, key, 3600) with
# Date.now() fixed at 1700000000000 (tests/interop/node). Note the kept ":443" and "%2520" (double-encoded
# space): Node signs encodeURIComponent(sr) of the URI it was given.
NODE_LISTEN_TOKEN = (
    "SharedAccessSignature sr=http%3A%2F%2Fcontoso.servicebus.windows.net%3A443%2Fmy%2520hc%2Fsub"
    "&sig=g77WNhTvGrTXbwWnsxXv72nJKPdR6n%2FxUO3rneOo30w%3D&se=1700003600&skn=RootManageSharedAccessKey"
)
NODE_HTTPS_TOKEN = (
    "SharedAccessSignature sr=http%3A%2F%2Fcontoso.servicebus.windows.net%2Fecho"
    "&sig=YbRqetFwpzupsFekeP4ZmKRCdfmXJFsDcAgKVg7DwL0%3D&se=1700003600&skn=RootManageSharedAccessKey"
)


def test_node_vectors_verify() -> None:
    for text in (NODE_LISTEN_TOKEN, NODE_HTTPS_TOKEN):
        token = parse_token(text)
        assert verify_signature(token, KEY)
        assert not verify_signature(token, KEY + "x")
        assert token.expiry == 1700003600
    assert audience_covers(parse_token(NODE_HTTPS_TOKEN), {"contoso.servicebus.windows.net"}, "echo")


def test_node_signature_recomputed() -> None:
    sr = quote("http://contoso.servicebus.windows.net/echo", safe="")  # encodeURIComponent
    assert quote(hmac_b64(KEY, f"{sr}\n1700003600"), safe="") in NODE_HTTPS_TOKEN


def test_java_listener_and_sender_tokens_verify() -> None:
    # Java listener: sr = URLEncoder.encode("sb://host/path"); Java sender drops the path (protocol.md 5.3).
    for resource in ("sb://contoso.servicebus.windows.net/echo", "sb://contoso.servicebus.windows.net"):
        sr = java_url_encode(resource)
        sig = java_url_encode(hmac_b64(KEY, f"{sr}\n1700003600"))
        token = parse_token(f"SharedAccessSignature sr={sr}&sig={sig}&se=1700003600&skn={KEY_NAME}")
        assert verify_signature(token, KEY)
        assert audience_covers(token, {"contoso.servicebus.windows.net"}, "echo")


@pytest.mark.parametrize(
    ("uri", "audience"),
    [
        ("sb://ns.example/echo", "http://ns.example/echo/"),
        ("sb://NS.Example:8443/$hc/Echo/Sub?x=1", "http://ns.example/Echo/Sub/"),
        ("wss://ns.example/echo/", "http://ns.example/echo/"),
        ("http://127.0.0.1:9000/open", "http://127.0.0.1/open/"),
        ("sb://ns.example/", "http://ns.example/"),
    ],
)
def test_normalize_audience_like_dotnet(uri: str, audience: str) -> None:
    assert normalize_audience(uri) == audience


def test_normalize_audience_rejects_relative() -> None:
    with pytest.raises(InvalidInput):
        normalize_audience("/echo")


async def test_cache_and_renewal() -> None:
    now = [NOW]
    tp = TokenProvider.from_shared_access_key(KEY_NAME, KEY, token_ttl=1000, clock=lambda: now[0])
    first = await tp.get_token("http://a/b/")
    assert await tp.get_token("http://a/b/") is first
    assert (await tp.get_token("http://a/c/")).token != first.token
    now[0] = first.renew_at  # due for renewal: a new token
    second = await tp.get_token("http://a/b/")
    assert second.token != first.token
    assert second.expires_at == int(now[0] + 1000)


def test_renew_time() -> None:
    assert renew_time(0, 3600) == 3300  # at most 5 minutes early
    assert renew_time(0, 10) == 9  # 10 % of a short life
    assert renew_time(100, 50) == 50  # already expired: now


async def test_fixed_sas() -> None:
    tp = TokenProvider.from_sas(NODE_HTTPS_TOKEN)
    assert not tp.renewable
    token = await tp.get_token("http://anything/")
    assert token.token == NODE_HTTPS_TOKEN
    assert token.expires_at == 1700003600
    with pytest.raises(InvalidToken):
        TokenProvider.from_sas("Bearer abc")


async def test_callables_sync_async_and_security_token() -> None:
    def sync_source(audience: str, valid_for: float) -> str:
        return NODE_HTTPS_TOKEN

    async def async_source(audience: str, valid_for: float) -> SecurityToken:
        return SecurityToken("SharedAccessSignature x", audience, NOW + 10, NOW + 5)

    assert (await TokenProvider.from_callable(sync_source).get_token("http://a/")).token == NODE_HTTPS_TOKEN
    tok = await TokenProvider.from_callable(async_source, clock=lambda: NOW).get_token("http://a/")
    assert tok.expires_at == NOW + 10

    def bad(audience: str, valid_for: float) -> object:
        return 42

    with pytest.raises(InvalidToken):
        await TokenProvider.from_callable(bad).get_token("http://a/")  # type: ignore[arg-type]


async def test_concurrent_get_token_signs_once() -> None:
    calls = []

    async def source(audience: str, valid_for: float) -> str:
        calls.append(audience)
        await asyncio.sleep(0)
        return NODE_HTTPS_TOKEN

    tp = TokenProvider.from_callable(source, clock=lambda: 0.0)
    await asyncio.gather(*(tp.get_token("http://a/") for _ in range(5)))
    assert len(calls) == 1


@pytest.mark.parametrize(("name", "key"), [("", "k"), ("n", ""), ("n" * 257, "k"), ("n", "k" * 257)])
def test_bad_keys(name: str, key: str) -> None:
    with pytest.raises(InvalidToken):
        TokenProvider.from_shared_access_key(name, key)


def test_key_and_token_never_in_repr() -> None:
    tp = TokenProvider.from_shared_access_key(KEY_NAME, KEY)
    assert KEY not in repr(tp)


def test_reconnect_delay_table() -> None:
    delays = reconnect_delays()
    assert [next(delays) for _ in range(8)] == [0, 1, 2, 5, 10, 30, 30, 30]


# --- connection strings as the SDK uses them (protocol.md 5.5) ------------------------------------

CS = f"Endpoint=sb://ns.example/;EntityPath=echo;SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY}"


def test_client_from_connection_string() -> None:
    client = HybridConnectionClient(CS)
    assert str(client.address) == "sb://ns.example/echo"
    assert client.address.tls
    assert client.token_provider is not None
    assert client.connect_timeout == 70.0


def test_connection_string_path_rules() -> None:
    with pytest.raises(InvalidConnectionString):
        HybridConnectionClient(CS, path="other")
    no_entity = CS.replace(";EntityPath=echo", "")
    with pytest.raises(InvalidConnectionString):
        HybridConnectionClient(no_entity)
    assert HybridConnectionClient(no_entity, path="other").address.path == "other"


def test_connection_string_operation_timeout_and_sas() -> None:
    client = HybridConnectionClient(
        f"Endpoint=sb://ns.example/;EntityPath=echo;SharedAccessSignature={NODE_HTTPS_TOKEN};"
        "OperationTimeout=00:00:05"
    )
    assert client.connect_timeout == 5.0
    assert client.token_provider is not None
    assert not client.token_provider.renewable


def test_connection_string_errors() -> None:
    with pytest.raises(InvalidConnectionString):
        HybridConnectionClient("Endpoint=sb://ns.example/;EntityPath=echo;Bogus=1")
    with pytest.raises(InvalidConnectionString):
        HybridConnectionClient(f"Endpoint=sb://ns.example/;EntityPath=echo;SharedAccessKeyName={KEY_NAME}")
    with pytest.raises(InvalidConnectionString):
        HybridConnectionClient("Endpoint=sb://ns.example/;EntityPath=echo;Authentication=Managed Identity")


def test_listener_needs_a_token_provider() -> None:
    with pytest.raises(InvalidInput):
        HybridConnectionListener("sb://ns.example/echo")
    assert HybridConnectionListener(CS).address.path == "echo"
