"""A plain HTTP answer a handler gives instead of an upgrade or an error (e.g. a listener's rejection)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["HttpAnswer"]


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """Status, reason phrase (made safe by the front door), headers and an optional text body."""

    status: int
    reason: str
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str = ""
