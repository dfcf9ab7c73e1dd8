"""A fake :class:`~hyco._clock.Clock`: time moves only when the test says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["FakeClock"]


class FakeClock:
    """A clock for tests: :meth:`advance` moves time; sleepers due by then wake, earliest first.

    Wall time starts at ``start`` (seconds since the epoch) and monotonic time at 0; both move together and
    only in :meth:`advance`. A coroutine that sleeps on this clock wakes when an advance reaches its
    deadline, so a test that waits for the code under test to sleep (:meth:`wait_for_sleepers`) and then
    advances past the deadline makes token expiry, renewal and reconnect delays happen at once, the same way
    on every run.

    Args:
        start: the wall time at the start.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._start = start
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._changed: asyncio.Event | None = None

    def time(self) -> float:
        """Fake seconds since the epoch."""
        return self._start + self._elapsed

    def monotonic(self) -> float:
        """Fake monotonic seconds (0 at the start)."""
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        """Wait until an :meth:`advance` reaches ``now + seconds``; zero or less only yields once."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._order), wake))
        self._event().set()
        await wake

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting (cancelled ones do not count)."""
        return sum(1 for _, _, wake in self._sleepers if not wake.done())

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Return once at least ``count`` sleeps are waiting on this clock (wrap it in a timeout)."""
        while self.sleepers < count:
            event = self._event()
            event.clear()
            await event.wait()

    def advance(self, seconds: float) -> None:
        """Move time forward ``seconds`` and wake, earliest deadline first, every sleeper due by then.

        Woken coroutines run at the event loop's next turns and see the time after the whole advance.

        Raises:
            ValueError: ``seconds`` is negative (time never goes back).
        """
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        self._elapsed += seconds
        while self._sleepers and self._sleepers[0][0] <= self._elapsed:
            _, _, wake = heapq.heappop(self._sleepers)
            if not wake.done():
                wake.set_result(None)

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed
