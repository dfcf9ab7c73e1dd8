"""Per-source limits: how many connections one client address may hold open, and how fast it may start
WebSocket handshakes and HTTP requests, so one client cannot take capacity from the others (issue 13).

* **Connections** (``limits.max_connections_per_source``) are counted when the kernel hands a connection to
  the relay (``engine.ConnectionGate``), before a byte is read: a client over its share is answered ``503``
  and closed at once, so a slowloris from one address cannot hold more sockets than that. A listener's dial
  of a rendezvous address stops counting once its upgrade is done (it is accounted to the sender it serves,
  whose own admission is bounded by ``limits.max_pending``).
* **Handshakes and requests** (``limits.handshake_rate_per_source`` per second, bursts of as many) go
  through a token bucket per address; beyond it the client gets ``429`` with ``Retry-After``. Listeners'
  rendezvous dials are not charged (they only succeed for a sender that was admitted and charged already).

Memory is bounded: a connection count exists only while its address has connections open (so at most one per
open socket), and at most ``max_sources`` buckets are kept, the least recently used forgotten first (a
forgotten address starts again with a full bucket, which is what an idle one would have had anyway).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from hyco.exceptions import RelayError, ServerBusy
from hyco.server.throttle import Throttle

__all__ = ["MAX_SOURCES", "RateLimited", "SourceLimits"]

log = logging.getLogger("hyco.relay")

#: Token buckets remembered at most (about 100 bytes each).
MAX_SOURCES = 100_000


class RateLimited(RelayError):
    """A client started handshakes or requests faster than ``limits.handshake_rate_per_source``.

    Attributes:
        retry_after: whole seconds until the next one would be admitted (the ``Retry-After`` header).
    """

    http_status = 429
    close_code = 1008

    def __init__(self, description: str, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class SourceLimits:
    """Connection counts and request buckets per client address.

    Args:
        max_connections: connections one address may hold open at once.
        rate: handshakes and requests one address may start per second (also the burst size).
        max_sources: token buckets kept at most.
        clock: monotonic clock (injectable for tests).
    """

    def __init__(
        self,
        max_connections: int,
        rate: float,
        *,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.rate = rate
        self._burst = max(1.0, rate)
        self._max_sources = max_sources
        self._clock = clock
        self._open: dict[str, int] = {}
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._refusals = Throttle(interval=1.0, clock=clock)

    def connections(self, source: str) -> int:
        """Connections ``source`` holds open now."""
        return self._open.get(source, 0)

    @property
    def sources(self) -> int:
        """Addresses with connections open or a bucket remembered (what the tables hold)."""
        return len(self._open) + len(self._buckets)

    def open_connection(self, source: str) -> ServerBusy | None:
        """Count a new connection from ``source``.

        Returns:
            None when it is admitted (call :meth:`close_connection` once it ends), or the refusal to answer
            it with (it was not counted).
        """
        held = self._open.get(source, 0)
        if held >= self.max_connections:
            refusal = ServerBusy(
                f"ServerBusy: {held} connections are open from your address "
                f"(limits.max_connections_per_source = {self.max_connections}); close some or retry later."
            )
            self._log(source, refusal)
            return refusal
        self._open[source] = held + 1
        return None

    def close_connection(self, source: str) -> None:
        """A counted connection from ``source`` ended (or stopped counting)."""
        held = self._open.get(source, 0) - 1
        if held > 0:
            self._open[source] = held
        else:
            self._open.pop(source, None)

    def take(self, source: str) -> None:
        """Charge one handshake or request to ``source``'s bucket.

        Raises:
            RateLimited: the bucket is empty (the client gets 429 and when to retry).
        """
        now = self._clock()
        tokens, stamp = self._buckets.pop(source, (self._burst, now))
        tokens = min(self._burst, tokens + (now - stamp) * self.rate)
        if len(self._buckets) >= self._max_sources:
            self._buckets.popitem(last=False)
        if tokens < 1.0:
            self._buckets[source] = (tokens, now)
            wait = max(1, int((1.0 - tokens) / self.rate + 0.999))
            raise RateLimited(
                f"Too Many Requests: your address started more than {self.rate:g} handshakes or requests per "
                f"second (limits.handshake_rate_per_source); retry in {wait} s.",
                retry_after=wait,
            )
        self._buckets[source] = (tokens - 1.0, now)

    def _log(self, source: str, refusal: RelayError) -> None:
        log_it, suppressed = self._refusals.check((source, refusal.http_status))
        if log_it:
            log.info(
                "refused a connection from %s: %d %s%s",
                source,
                refusal.http_status,
                refusal.description,
                f" ({suppressed} more like it not logged)" if suppressed else "",
            )
