"""Reconnect delays of the official SDKs (protocol.md 2.9, 6): 0, 1, 2, 5, 10, 30 s, then 30 s forever."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

__all__ = ["RECONNECT_DELAYS", "reconnect_delays"]

RECONNECT_DELAYS: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)


def reconnect_delays(table: Sequence[float] = RECONNECT_DELAYS) -> Iterator[float]:
    """Yield the delay before each reconnect attempt; the last entry repeats forever.

    The I/O layer sleeps; this generator only says how long. Start a new generator after a successful
    connection (the official SDKs reset the index on success).
    """
    if not table:
        raise ValueError("the delay table must not be empty")
    yield from table
    while True:
        yield table[-1]
