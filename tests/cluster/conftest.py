"""Fixtures for cluster tests: a NATS server and three relay nodes, all real processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.cluster.harness import NatsServer, RelayNode, relay_node


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def nodes(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[list[RelayNode]]:
    """Three nodes, n1..n3, that have seen each other."""
    async with AsyncExitStack() as stack:
        started = [
            await stack.enter_async_context(relay_node(tmp_path, f"n{i}", nats_server.url)) for i in (1, 2, 3)
        ]
        yield started
