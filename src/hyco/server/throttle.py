"""Log throttling for refusals: a client that retries thousands of times a second must not flood the log.

hyco-ws reconnects with no delay (protocol.md 10), so one misconfigured listener can be refused ~2,000 times a
second. The first refusal per (client address, path, status) is logged at once; repeats within ``interval``
seconds are counted and reported with the next line that gets through.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

__all__ = ["Throttle"]


class Throttle:
    """Decide whether a repeated event should be logged now.

    Args:
        interval: seconds between two log lines for the same key.
        max_keys: keys remembered at most; beyond that the table is cleared (bounded memory under a spray of
            distinct addresses).
        clock: monotonic clock (injectable for tests).
    """

    def __init__(
        self,
        interval: float = 1.0,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._max_keys = max_keys
        self._clock = clock
        self._seen: dict[Hashable, tuple[float, int]] = {}

    def check(self, key: Hashable) -> tuple[bool, int]:
        """Record one event for ``key``.

        Returns:
            ``(log_it, suppressed)``: whether to log this event, and how many events for the key were
            suppressed since the last line that was logged.
        """
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self._interval:
            self._seen[key] = (last[0], last[1] + 1)
            return False, 0
        if len(self._seen) >= self._max_keys:
            self._seen.clear()
        self._seen[key] = (now, 0)
        return True, last[1] if last is not None else 0
