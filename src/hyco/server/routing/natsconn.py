"""The one way a relay node connects to NATS: reconnecting forever, pinging often enough to notice a lost
server within seconds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import nats
import nats.errors
from nats.aio.client import Client as NatsClient

from hyco.server.config import ClusterConfig

__all__ = ["RETRY_SECONDS", "connect"]

log = logging.getLogger("hyco.cluster")

#: Seconds between attempts to reach NATS when it is down at start (nats-py reconnects by itself after).
RETRY_SECONDS = 1.0


async def _ignore() -> None:
    return None


async def _log_error(exc: Exception) -> None:
    log.debug("NATS: %s", exc)


async def connect(
    config: ClusterConfig,
    name: str,
    *,
    reconnected: Callable[[], Awaitable[None]],
    disconnected: Callable[[], Awaitable[None]] = _ignore,
    failed: Callable[[BaseException], None] | None = None,
) -> NatsClient:
    """Connect to ``config.nats``, retrying every :data:`RETRY_SECONDS` until it works.

    Args:
        config: the NATS servers and the request timeout (which bounds each attempt).
        name: the connection's name, as NATS monitoring shows it.
        reconnected, disconnected: called when the connection comes back or drops later on.
        failed: told of each failed first attempt (default: a warning in the log).
    """
    while True:
        try:
            return await nats.connect(
                servers=list(config.nats),
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=RETRY_SECONDS,
                connect_timeout=max(1, int(config.request_timeout)),
                ping_interval=5,
                max_outstanding_pings=2,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=_log_error,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            if failed is not None:
                failed(exc)
            else:
                log.warning("cannot connect to NATS at %s (%s); retrying", ", ".join(config.nats), exc)
            await asyncio.sleep(RETRY_SECONDS)
