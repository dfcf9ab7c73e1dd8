"""Token scopes through a running relay (protocol.md 5.3, rule 2; issue 13, defect 6).

A token covers a request when its audience path is empty (the namespace), equal to the requested path, or
a segment-prefix of it. The requested path is the hybrid connection's path for a listener, and that path plus
the sender's suffix for a connect or an HTTP request. Never the other way round: a token for ``team/secret``
must not open ``team``. Every token here is real (signed by the namespace rule, which has every right), so a
refusal can only come from the audience.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from hyco.server import HybridConnectionConfig, Relay
from tests.conftest import TIMEOUT
from tests.server.wire import RawListener, handshake_error, recording_session, send_connect, token_for


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with recording_session() as s:
        yield s


@pytest.fixture
async def relay(relay_factory) -> Relay:  # type: ignore[no-untyped-def]
    """Two sibling entities whose names share a prefix: ``team`` and ``team2``."""
    relay: Relay = await relay_factory(
        hybrid_connections=(HybridConnectionConfig("team"), HybridConnectionConfig("team2"))
    )
    return relay


async def accepted_path(listener: RawListener, sender: asyncio.Task[aiohttp.ClientWebSocketResponse]) -> str:
    """Take the listener's accept, complete the rendezvous, and return the path the sender asked for.

    A refused sender ends first: its handshake error is raised at once rather than waiting for an accept.
    """
    offered = asyncio.ensure_future(listener.next_command())
    await asyncio.wait([offered, sender], timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if sender.done():
        offered.cancel()
        sender.result()  # raises the refusal
        raise AssertionError("the sender connected without the listener accepting")
    command = (await offered)["accept"]
    rendezvous = await listener.session.ws_connect(command["address"], autoclose=False)
    ws = await asyncio.wait_for(sender, TIMEOUT)
    # Both ends close at once: the rendezvous does not autoclose, so each waits for the other's Close.
    await asyncio.gather(ws.close(), rendezvous.close())
    return urlsplit(command["address"]).path


# --- listeners: the requested path is the entity path ----------------------------------------------------


async def test_token_for_a_child_path_cannot_listen_on_the_parent(relay: Relay, session) -> None:
    err = await handshake_error(
        RawListener.open(session, relay.url, "team", token=token_for(relay.url, "team/secret"))
    )
    assert err.status == 401
    assert "InvalidAudience" in err.message


async def test_token_for_an_entity_cannot_listen_on_a_sibling_sharing_its_prefix(
    relay: Relay, session
) -> None:
    err = await handshake_error(
        RawListener.open(session, relay.url, "team2", token=token_for(relay.url, "team"))
    )
    assert err.status == 401
    assert "InvalidAudience" in err.message


@pytest.mark.parametrize("audience_path", ["team", "TEAM", "team/", ""])
async def test_entity_or_namespace_token_listens(relay: Relay, session, audience_path: str) -> None:
    listener = await RawListener.open(session, relay.url, "team", token=token_for(relay.url, audience_path))
    await listener.ws.close()


# --- senders: the requested path is the entity path plus the sender's suffix ------------------------------


async def test_token_for_a_child_path_cannot_connect_to_the_parent(relay: Relay, session) -> None:
    listener = await RawListener.open(session, relay.url, "team")
    err = await handshake_error(
        send_connect(session, relay.url, "team", token=token_for(relay.url, "team/secret"))
    )
    assert err.status == 401
    assert "InvalidAudience" in err.message
    await listener.ws.close()


async def test_token_for_an_entity_cannot_connect_to_a_sibling(relay: Relay, session) -> None:
    listener = await RawListener.open(session, relay.url, "team2")
    err = await handshake_error(send_connect(session, relay.url, "team2", token=token_for(relay.url, "team")))
    assert err.status == 401
    assert "InvalidAudience" in err.message
    await listener.ws.close()


@pytest.mark.parametrize("audience_path", ["team", ""])
async def test_entity_or_namespace_token_connects_with_a_suffix(
    relay: Relay, session, audience_path: str
) -> None:
    listener = await RawListener.open(session, relay.url, "team")
    sender = asyncio.ensure_future(
        send_connect(session, relay.url, "team/sub/dir", token=token_for(relay.url, audience_path))
    )
    assert await accepted_path(listener, sender) == "/$hc/team/sub/dir"
    await listener.ws.close()


async def test_token_signed_for_the_path_with_its_suffix_connects(relay: Relay, session) -> None:
    # Node's createRelayToken signs the URI it dials, suffix included (protocol.md 5.3).
    listener = await RawListener.open(session, relay.url, "team")
    sender = asyncio.ensure_future(
        send_connect(session, relay.url, "team/sub", token=token_for(relay.url, "team/sub"))
    )
    try:
        assert await accepted_path(listener, sender) == "/$hc/team/sub"
    finally:
        sender.cancel()
        await listener.ws.close()


# --- HTTP senders ---------------------------------------------------------------------------------------
# No listener is connected: a request whose token passes gets 502 "no listeners", one whose token does not
# gets 401, so the status tells which side of the audience check it was on.


@pytest.mark.parametrize(
    ("audience_path", "request_path", "status"),
    [
        ("team/secret", "team", 401),
        ("team", "team2", 401),
        ("team", "team", 502),
        ("team", "team/sub", 502),
        ("", "team2/sub", 502),
        ("team/sub", "team/sub", 502),  # Node signs the path it dials, suffix included
    ],
)
async def test_http_sender_scopes(
    relay: Relay, session, audience_path: str, request_path: str, status: int
) -> None:
    token = token_for(relay.url, audience_path)
    async with session.post(
        f"{relay.http_url}/{request_path}", headers={"ServiceBusAuthorization": token}, data=b"x"
    ) as resp:
        assert resp.status == status, await resp.text()
