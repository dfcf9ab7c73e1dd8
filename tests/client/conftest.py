"""Fixtures for SDK tests: token providers and addresses for the in-process relay."""

from __future__ import annotations

import pytest

from hyco import TokenProvider
from hyco.server import Relay
from tests.conftest import KEY, KEY_NAME


def address(relay: Relay, path: str = "echo") -> str:
    """The ``ws://127.0.0.1:PORT/path`` address of a hybrid connection on ``relay``."""
    return f"{relay.url}/{path}"


@pytest.fixture
def tp() -> TokenProvider:
    return TokenProvider.from_shared_access_key(KEY_NAME, KEY)
