"""Fixtures for CLI tests."""

from __future__ import annotations

from tests.client.conftest import tp

__all__ = ["tp"]
