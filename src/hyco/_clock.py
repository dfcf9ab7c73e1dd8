"""The clock seam: wall time, monotonic time and sleeping, in one object the relay and the SDK take.

``hyco.protocol`` reads no clock; its drivers do, through a :class:`Clock`, so tests can hand them
``hyco.testing.FakeClock`` and make token expiry, renewal and reconnect delays instant and deterministic.
Only timers that model the protocol's time go through it; I/O timeouts (a handshake, a write) stay real.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


class Clock(Protocol):
    """Where a driver gets the time and how it waits."""

    def time(self) -> float:
        """Seconds since the epoch (token expiry is in these units)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go backwards (for durations)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (at once for zero or less). Cancellable."""
        ...


class SystemClock:
    """The real clock: :func:`time.time`, :func:`time.monotonic`, :func:`asyncio.sleep`."""

    def time(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await asyncio.sleep(max(0.0, seconds))


#: The clock every component uses unless given another.
SYSTEM_CLOCK: Clock = SystemClock()
