"""Helpers for the management API tests: a Manage token for the test relay and an HTTP session."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from hyco.protocol.sas import create_token
from hyco.server import Relay
from tests.conftest import KEY, KEY_NAME
from tests.server.wire import recording_session


def namespace_token(relay: Relay, key_name: str = KEY_NAME, key: str = KEY, path: str = "") -> str:
    """A token for the relay's namespace (or for ``path`` in it)."""
    return create_token(f"http://127.0.0.1/{path}", key_name, key, int(time.time()) + 3600)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with recording_session() as s:
        yield s


class Api:
    """Calls ``/$management/...`` on a relay with a token (the root Manage key unless told otherwise)."""

    def __init__(self, session: aiohttp.ClientSession, relay: Relay, token: str | None = None) -> None:
        self.session = session
        self.relay = relay
        self.token = token if token is not None else namespace_token(relay)

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": token if token is not None else self.token}
        kwargs: dict[str, Any] = {"json": body} if body is not None else {"data": raw}
        url = f"{self.relay.http_url}/$management/{path}?api-version=2021-11-01"
        async with self.session.request(method, url, headers=headers, **kwargs) as resp:
            text = await resp.text()
            return resp.status, (await resp.json() if text else None)


@pytest.fixture
def api(session: aiohttp.ClientSession, relay: Relay) -> Api:
    return Api(session, relay)
