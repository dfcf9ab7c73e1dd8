"""Admission: how many senders may wait for a listener and how many HTTP requests may be in flight at once.

Every waiting sender and every relayed HTTP request holds one slot from the moment it is admitted until its
handler ends, whichever way it ends (answered, refused, timed out, cancelled, failed): :meth:`Capacity.hold`
is a context manager, so no path can leak a slot (issue: a leaked slot turned later senders away with 503).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hyco.exceptions import ServerBusy

__all__ = ["Capacity"]


class Capacity:
    """A counter of slots with a fixed limit.

    Args:
        limit: slots at most (``limits.max_pending``).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held = 0

    def __len__(self) -> int:
        return self._held

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold one slot for the duration of the ``with`` block.

        Raises:
            ServerBusy: every slot is taken (the client gets 503 and should retry later).
        """
        if self._held >= self.limit:
            raise ServerBusy(
                f"ServerBusy: {self.limit} connections and requests already wait for listeners; retry later."
            )
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
