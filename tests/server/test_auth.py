"""authorize(): rule lookup, signature, expiry, audience, rights; the signature cache never skips the rest."""

from __future__ import annotations

import aiohttp
import pytest

from hyco.exceptions import AuthorizationFailed, Forbidden
from hyco.protocol.sas import MAX_EXPIRY, Right, create_token
from hyco.server.auth import SignatureCache, authorize
from hyco.server.config import AuthorizationRule, Secret
from tests.conftest import KEY, KEY_NAME

NS = (AuthorizationRule("root", Secret("root-key"), frozenset({Right.MANAGE})),)
ENTITY = (AuthorizationRule("sender", Secret("send-key"), frozenset({Right.SEND}), Secret("send-key-2")),)
HOSTS = {"relay.example"}


def check(token: str, right: Right, now: float = 1000.0, cache: SignatureCache | None = None, **kw):
    return authorize(
        token,
        right=right,
        entity_path=kw.pop("entity_path", "echo"),
        entity_rules=kw.pop("entity_rules", ENTITY),
        namespace_rules=NS,
        hosts=HOSTS,
        now=now,
        cache=cache,
        **kw,
    )


def test_entity_rule_with_secondary_key_grants_send_only():
    token = create_token("http://relay.example/echo/", "SENDER", "send-key-2", 2000)
    assert check(token, Right.SEND).key_name == "SENDER"
    with pytest.raises(Forbidden, match="Listen"):
        check(token, Right.LISTEN)


def test_manage_implies_listen_and_send():
    token = create_token("http://relay.example/", "root", "root-key", 2000)
    for right in Right:
        check(token, right)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "RelaySecurityTokenRequired"),
        ("nonsense", "MalformedToken"),
        (create_token("http://relay.example/echo/", "nobody", "k", 2000), "UnknownKeyName"),
        (create_token("http://relay.example/echo/", "root", "wrong", 2000), "InvalidSignature"),
        (create_token("http://relay.example/echo/", "root", "root-key", 999), "ExpiredToken"),
        (create_token("http://other.example/echo/", "root", "root-key", 2000), "InvalidAudience"),
    ],
)
def test_failures_say_what_is_wrong(token, message):
    with pytest.raises(AuthorizationFailed, match=message):
        check(token, Right.SEND)


def test_grace_keeps_an_expired_token_for_a_while():
    token = create_token("http://relay.example/echo/", "root", "root-key", 999)
    check(token, Right.LISTEN, now=1000.0, grace=5.0)
    with pytest.raises(AuthorizationFailed, match="ExpiredToken"):
        check(token, Right.LISTEN, now=1010.0, grace=5.0)


def test_expiry_in_year_9999_is_still_a_token():
    token = create_token("http://relay.example/echo/", "root", "root-key", MAX_EXPIRY)
    assert check(token, Right.LISTEN, grace=300.0).expiry == MAX_EXPIRY


def test_cache_skips_only_the_signature_check():
    cache = SignatureCache(max_entries=2)
    token = create_token("http://relay.example/echo/", "sender", "send-key", 2000)
    check(token, Right.SEND, cache=cache)
    assert cache.get(token, "echo") is not None
    # Rights, expiry and the entity's own rules still apply to a cached token.
    with pytest.raises(Forbidden):
        check(token, Right.LISTEN, cache=cache)
    with pytest.raises(AuthorizationFailed, match="ExpiredToken"):
        check(token, Right.SEND, now=3000.0, cache=cache)
    with pytest.raises(AuthorizationFailed, match="UnknownKeyName"):
        check(token, Right.SEND, cache=cache, entity_path="other", entity_rules=())
    # A bad signature is never cached.
    bad = create_token("http://relay.example/echo/", "sender", "wrong", 2000)
    for _ in range(2):
        with pytest.raises(AuthorizationFailed, match="InvalidSignature"):
            check(bad, Right.SEND, cache=cache)
    assert cache.get(bad, "echo") is None
    # Bounded: a full table is cleared.
    other = create_token("http://relay.example/echo/", "root", "root-key", 2000)
    check(other, Right.SEND, cache=cache)
    third = create_token("http://relay.example/echo/", "root", "root-key", 2001)
    check(third, Right.SEND, cache=cache)
    assert cache.get(token, "echo") is None


# --- scopes (protocol.md 5.3 rule 2; issue 13, defect 6) ------------------------------------------------


def test_a_token_for_a_deeper_path_does_not_cover_the_entity():
    token = create_token("http://relay.example/echo/secret/", "root", "root-key", 2000)
    with pytest.raises(AuthorizationFailed, match="InvalidAudience"):
        check(token, Right.LISTEN)
    with pytest.raises(AuthorizationFailed, match="InvalidAudience"):
        check(token, Right.SEND)


def test_the_requested_path_includes_the_senders_suffix():
    node_style = create_token("http://relay.example/echo/sub", "root", "root-key", 2000)
    assert check(node_style, Right.SEND, requested_path="echo/sub").key_name == "root"
    with pytest.raises(AuthorizationFailed, match="InvalidAudience"):
        check(node_style, Right.SEND, requested_path="echo/other")
    entity = create_token("http://relay.example/echo/", "root", "root-key", 2000)
    check(entity, Right.SEND, requested_path="echo/sub/dir")


def test_the_requested_path_must_lie_inside_the_entity():
    # A caller bug (a path outside the entity) must not widen what a token reaches.
    token = create_token("http://relay.example/", "root", "root-key", 2000)
    with pytest.raises(ValueError, match="inside"):
        check(token, Right.SEND, requested_path="other/echo")


# --- an absurd expiry is an invalid token, not a crash (issue 13, defect 9) -----------------------------


@pytest.mark.parametrize("se", [10**309, 10**20, 253402300800], ids=["1e309", "1e20", "year-10000"])
def test_expiry_beyond_year_9999_is_a_malformed_token(se):
    token = create_token("http://relay.example/echo/", "root", "root-key", se)
    with pytest.raises(AuthorizationFailed, match="MalformedToken") as info:
        check(token, Right.LISTEN, grace=300.0)
    assert str(se) not in str(info.value)


async def test_relay_answers_401_to_a_signed_token_with_a_huge_expiry(relay):
    token = create_token(f"http://127.0.0.1:{relay.port}/echo", KEY_NAME, KEY, 10**309)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{relay.http_url}/echo", headers={"ServiceBusAuthorization": token}) as resp,
    ):
        assert resp.status == 401
        assert "MalformedToken" in resp.reason
