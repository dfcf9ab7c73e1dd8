"""Listeners' control channels on this node (protocol.md 2; design.md data flow step 1).

:class:`ListenerHub` takes a listener's upgrade after the front door classified it: it checks the token
(Listen rights), registers the hybrid connection (only then: an unauthenticated dial creates nothing),
reserves one of the entity's listener slots, runs the :class:`~hyco.server.control.ControlChannel` and undoes
all of it when the channel ends. It also answers who is connected, and drops a listener on request
(operations, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from hyco._clock import SYSTEM_CLOCK, Clock
from hyco.protocol.sas import Right, SasToken
from hyco.protocol.uri import WebSocketTarget
from hyco.server.config import Limits
from hyco.server.control import ControlChannel
from hyco.server.engine import ListenHandshake
from hyco.server.metrics import RelayMetrics
from hyco.server.registry import HybridConnection, Registry

__all__ = ["ConnectedListener", "ListenerHub"]

log = logging.getLogger("hyco.relay")

SB_AUTH_HEADER = "ServiceBusAuthorization"

#: Checks a token text for a right on a hybrid connection; raises RelayError (401/403) when it is not good.
Authorize = Callable[[ListenHandshake, str | None, HybridConnection, Right], SasToken]
#: Holds a cluster-wide (or all workers') listener slot for (path, listener id, listener's address, base URL
#: its rendezvous addresses start with) while a channel runs; RelayError refuses.
Lease = Callable[[str, str, str, str], AbstractAsyncContextManager[None]]


def _no_lease(path: str, listener_id: str, remote: str, base_url: str) -> AbstractAsyncContextManager[None]:
    return contextlib.nullcontext()


@dataclass(frozen=True, slots=True)
class ConnectedListener:
    """One connected listener, as operations and tests see it."""

    path: str
    listener_id: str
    remote: str
    token_expiry: float
    #: Numbers this node's control channels in the order they opened (a reconnect gets a new one).
    channel_number: int
    #: When its control channel opened (seconds since the epoch).
    online_since: float
    #: The cluster node holding its control channel ("" on a single relay: this one).
    node: str = ""


class ListenerHub:
    """The control channels of the listeners connected to this relay.

    Args:
        registry: the namespace's hybrid connections.
        limits: listener cap, message size, ping interval, token grace, send timeout.
        authorize: the token check (see :data:`Authorize`).
        base_url_for: where listeners reach this node, given the listener's own handshake.
        on_response, on_invalid_response: where HTTP responses arriving on a channel go.
        clock: where token expiry is read and waited for.
        metrics: told when a listener comes online.
        lease: a cluster's listener slot, held from before the upgrade until the channel ends (default: none).
    """

    def __init__(
        self,
        registry: Registry,
        limits: Limits,
        authorize: Authorize,
        base_url_for: Callable[[ListenHandshake], str],
        on_response: Callable[..., bool],
        on_invalid_response: Callable[[str, str], bool],
        clock: Clock = SYSTEM_CLOCK,
        metrics: RelayMetrics | None = None,
        lease: Lease = _no_lease,
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._registry = registry
        self._limits = limits
        self._authorize = authorize
        self._base_url_for = base_url_for
        self._on_response = on_response
        self._on_invalid_response = on_invalid_response
        self._lease = lease
        self._channels: dict[ControlChannel, tuple[str, str, int]] = {}  # -> (path, remote, number)
        self._opened = 0

    def __len__(self) -> int:
        return len(self._channels)

    def connected(self) -> list[ConnectedListener]:
        """Every listener whose control channel is open."""
        return [
            ConnectedListener(path, ch.listener_id, remote, ch.token_expiry, number, ch.online_since)
            for ch, (path, remote, number) in self._channels.items()
        ]

    async def disconnect(self, listener_id: str, code: int, reason: str) -> bool:
        """Close the control channel(s) of ``listener_id`` with ``code``; False if none is connected."""
        found = [ch for ch in self._channels if ch.listener_id == listener_id.lower()]
        for channel in found:
            await channel.close(code, reason)
        return bool(found)

    async def close_all(self, code: int, reason: str) -> None:
        """Close every control channel (relay shutdown)."""
        await asyncio.gather(*(ch.close(code, reason) for ch in list(self._channels)), return_exceptions=True)

    async def hang_up_all(self, timeout: float) -> None:
        """After :meth:`close_all`: wait up to ``timeout`` for the listeners' answers, then drop the channels
        that are left (relay shutdown; the channels' connections left aiohttp's server at their upgrade)."""
        channels = list(self._channels)
        if not channels:
            return
        await asyncio.wait([channel.ended for channel in channels], timeout=timeout)
        left = [channel for channel in channels if not channel.ended.done()]
        for channel in left:
            channel.abort()
        if left:
            await asyncio.wait([channel.ended for channel in left], timeout=timeout)

    async def serve(self, handshake: ListenHandshake, target: WebSocketTarget, tracking_id: str) -> None:
        """Authorize, register and run one listener's control channel until it ends.

        Raises:
            RelayError: 401/403 (token), 404 (no such entity and creation off), 403 (listener cap or quota).
        """
        hc = self._registry.find_for_listener(target.path)
        token_text = handshake.headers.get(SB_AUTH_HEADER) or target.token
        token = self._authorize(handshake, token_text, hc, Right.LISTEN)
        hc = self._registry.register(hc)  # only after the token checked out
        limits = self._limits
        hc.reserve(limits.max_listeners)  # the slot is taken before the first await
        reserved = True
        try:
            base_url = self._base_url_for(handshake)
            async with self._lease(hc.path, tracking_id.lower(), handshake.remote, base_url):
                peer = await handshake.accept(
                    "listener",
                    protocol=None,
                    max_message_size=limits.max_control_message_size,
                    heartbeat=limits.ping_interval or None,
                )
                channel = ControlChannel(
                    peer,
                    path=hc.path,
                    listener_id=tracking_id.lower(),
                    base_url=base_url,
                    token=token,
                    # Renewals are checked exactly as the token the channel opened with (2.6).
                    renew=lambda text: self._authorize(handshake, text, hc, Right.LISTEN),
                    token_grace=limits.token_grace,
                    on_response=self._on_response,
                    on_invalid_response=self._on_invalid_response,
                    send_timeout=limits.accept_timeout,
                    max_message_size=limits.max_control_message_size,
                    clock=self._clock,
                )
                hc.add_listener(channel)
                reserved = False
                await self._run(channel, hc, handshake.remote)
        finally:
            if reserved:
                hc.unreserve()
            self._registry.release(hc)

    async def _run(self, channel: ControlChannel, hc: HybridConnection, remote: str) -> None:
        if self._metrics is not None:
            self._metrics.listener_online(hc.path)
        self._opened += 1
        self._channels[channel] = (hc.path, remote, self._opened)
        log.info(
            "listener online: path=%s listener=%s from=%s (%d connected)",
            hc.path,
            channel.listener_id,
            remote,
            len(hc.listeners),
        )
        try:
            await channel.run()
        finally:
            del self._channels[channel]
            hc.remove_listener(channel)
            log.info(
                "listener offline: path=%s listener=%s%s",
                hc.path,
                channel.listener_id,
                f" ({channel.close_reason})" if channel.close_reason else "",
            )
