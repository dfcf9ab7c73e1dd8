"""``get_runtime_information()`` in the SDK (listener, client, blocking twins) against the relay, which
answers in the shape the .NET SDK's ``GetRuntimeInformationAsync`` reads."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

import hyco.sync
from hyco import (
    AuthorizationFailed,
    EndpointNotFound,
    HybridConnectionClient,
    HybridConnectionListener,
    TokenProvider,
)
from hyco.server import Relay
from tests.client.conftest import address
from tests.conftest import KEY, KEY_NAME, LISTEN_KEY, LISTEN_KEY_NAME
from tests.management.conftest import Api


@pytest.fixture
def tp() -> TokenProvider:
    return TokenProvider.from_shared_access_key(KEY_NAME, KEY)


async def test_listener_and_client_see_the_live_listener_count(api: Api, relay: Relay, tp: TokenProvider):
    before = datetime.now(UTC).replace(microsecond=0)
    await api.call("PUT", "hybridConnections/orders", {"properties": {"userMetadata": "team=a"}})
    client = HybridConnectionClient(address(relay, "orders"), tp)
    info = await client.get_runtime_information()
    assert info.listener_count == 0
    assert info.user_metadata == "team=a"
    assert info.requires_client_authorization is True
    assert info.created_at is not None and info.created_at >= before
    async with HybridConnectionListener(address(relay, "orders"), tp) as listener:
        assert (await listener.get_runtime_information()).listener_count == 1
        assert (await client.get_runtime_information()).listener_count == 1


async def test_unknown_path_is_endpoint_not_found(relay: Relay, tp: TokenProvider):
    with pytest.raises(EndpointNotFound, match="does not exist"):
        await HybridConnectionClient(address(relay, "nope"), tp).get_runtime_information()


async def test_a_listen_only_key_is_refused(relay: Relay):
    listen_only = TokenProvider.from_shared_access_key(LISTEN_KEY_NAME, LISTEN_KEY)
    with pytest.raises(AuthorizationFailed, match="Manage"):
        await HybridConnectionClient(address(relay, "echo"), listen_only).get_runtime_information()


async def test_blocking_twins(relay: Relay, tp: TokenProvider):
    def call() -> int:
        return (
            hyco.sync.HybridConnectionClient(address(relay, "open"), tp)
            .get_runtime_information()
            .listener_count
        )

    assert await asyncio.to_thread(call) == 0
