"""Shared fixtures: an in-process relay on 127.0.0.1 port 0, keys, and the one timeout unit."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from hyco.protocol.sas import Right
from hyco.server import (
    AuthorizationRule,
    HybridConnectionConfig,
    Limits,
    Relay,
    RelayConfig,
    Secret,
    ServerConfig,
    serve,
)

#: One timeout unit for every wait in every test, scaled for slow machines.
TIMEOUT = 10.0 * float(os.environ.get("HYCO_TESTS_TIMEOUT_FACTOR", "1"))

KEY_NAME = "RootManageSharedAccessKey"
KEY = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5MTIz"
SEND_KEY_NAME = "send-only"
SEND_KEY = "c2VuZC1vbmx5LWtleS1mb3ItdGhlLWVjaG8tZW50aXR5"
LISTEN_KEY_NAME = "listen-only"
LISTEN_KEY = "bGlzdGVuLW9ubHkta2V5LWZvci10aGUtbmFtZXNwYWNl"


def test_config(**overrides: Any) -> RelayConfig:
    """The relay the tests use: plain ws on port 0, a namespace rule, 'echo' (auth) and 'open' (no auth)."""
    limits = overrides.pop("limits", Limits())
    server = overrides.pop("server", ServerConfig(host="127.0.0.1", port=0))
    config = RelayConfig(
        server=server,
        authorization_rules=(
            AuthorizationRule(KEY_NAME, Secret(KEY), frozenset({Right.MANAGE, Right.LISTEN, Right.SEND})),
            AuthorizationRule(LISTEN_KEY_NAME, Secret(LISTEN_KEY), frozenset({Right.LISTEN})),
        ),
        hybrid_connections=(
            HybridConnectionConfig(
                "echo",
                authorization_rules=(
                    AuthorizationRule(SEND_KEY_NAME, Secret(SEND_KEY), frozenset({Right.SEND})),
                ),
            ),
            HybridConnectionConfig("open", requires_client_authorization=False),
            HybridConnectionConfig("multi/segment/path"),
        ),
        limits=limits,
    )
    return dataclasses.replace(config, **overrides)


# Keep pytest from collecting the helper above as a test.
test_config.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture
async def relay_factory() -> AsyncIterator[Callable[..., Awaitable[Relay]]]:
    """Start relays with ``test_config(**overrides)`` (plus ``ssl_context=``); all stop after the test."""
    async with AsyncExitStack() as stack:

        async def start(ssl_context: Any = None, **overrides: Any) -> Relay:
            return await stack.enter_async_context(serve(test_config(**overrides), ssl_context=ssl_context))

        yield start


@pytest.fixture
async def relay(relay_factory: Callable[..., Awaitable[Relay]]) -> Relay:
    """A running relay with the default test configuration."""
    return await relay_factory()


async def read_slowly(
    read: Callable[[], Awaitable[bytes]], pauses: set[int], timeout: float
) -> tuple[int, int]:
    """Read with ``read()`` until it returns ``b""``, stopping for half a second each time the bytes read pass
    one of ``pauses`` (whoever sends must be held back meanwhile).

    Returns:
        The bytes read, and the peak growth of traced Python memory (``tracemalloc``) while reading.
    """
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        received = 0
        async with asyncio.timeout(timeout):
            while data := await read():
                received += len(data)
                crossed = {p for p in pauses if received >= p}
                if crossed:
                    pauses = pauses - crossed
                    await asyncio.sleep(0.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return received, peak - baseline
