"""The relay's budget for request bodies held in memory (``limits.max_buffered_bytes``, issue 13 defect 5).

A relayed HTTP request holds body bytes in the relay from its admission to its end: an inline body (at most
64 KiB, protocol.md 4.2) whole, a streamed body up to :data:`UPLOAD_WINDOW` (aiohttp stops reading the sender
once its buffer passes ``2 * READ_BUFFER``, and one socket read adds at most 256 KiB on asyncio and uvloop).
Each request reserves its worst case here before a byte of its body is read, so the sum of what the relay can
hold in bodies never exceeds the budget; a request that does not fit is refused with 503.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hyco.exceptions import ServerBusy

__all__ = ["READ_BUFFER", "UPLOAD_WINDOW", "ByteBudget"]

#: aiohttp's ``read_bufsize``: a request body buffer pauses reading above twice this.
READ_BUFFER = 64 * 1024
#: One socket read of asyncio's selector transport and of uvloop.
MAX_SOCKET_READ = 256 * 1024
#: The most a streamed body can have buffered in the relay at any time.
UPLOAD_WINDOW = 2 * READ_BUFFER + MAX_SOCKET_READ


class ByteBudget:
    """Bytes reserved by requests in flight, with a fixed limit.

    Args:
        limit: bytes at most (``limits.max_buffered_bytes``).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reserved = 0

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        """Reserve ``size`` bytes for the duration of the ``with`` block.

        Raises:
            ServerBusy: the reservation would pass the limit (the client gets 503 and should retry later).
        """
        if self.reserved + size > self.limit:
            raise ServerBusy(
                f"ServerBusy: request bodies already hold {self.reserved // 1024} KiB of the relay's memory "
                f"(limits.max_buffered_bytes = {self.limit}); retry later."
            )
        self.reserved += size
        try:
            yield
        finally:
            self.reserved -= size
