"""Routing: which listener gets a sender, and getting the command to it (design.md data flow step 3).

The forwarders never pick a listener or write to a control channel themselves; they hand the router a
``build`` callback that makes the command for a listener given the base URL the listener must dial back to,
and the router tries the candidates in random order until one control channel takes it (protocol.md 2.8: a
listener whose channel broke is skipped, not fatal).

:class:`LocalRouter` routes to listeners connected to this process. A cluster router (listeners held by other
nodes, reached over NATS) implements the same :class:`Router` protocol; the address it builds then names the
node where the sender waits.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from hyco.exceptions import ConnectionLost, EndpointNotFound
from hyco.protocol.messages import Command
from hyco.server.registry import HybridConnection

__all__ = [
    "Delivery",
    "ListenerCriteria",
    "LocalRouter",
    "NoListenerConnected",
    "NoListenerMatches",
    "Router",
    "qualifying",
]


class NoListenerConnected(EndpointNotFound):
    """The hybrid connection exists but no listener is connected (or every channel broke while trying)."""


class NoListenerMatches(EndpointNotFound):
    """Listeners are connected, but none meets the sender's AllowedListeners/DisallowedListeners criteria."""


@dataclass(frozen=True, slots=True)
class ListenerCriteria:
    """The sender's ``Microsoft-Relay-AllowedListeners`` / ``DisallowedListeners`` (protocol.md 2.8)."""

    allowed: Sequence[str] = ()
    disallowed: Sequence[str] = ()

    @classmethod
    def from_headers(cls, allowed: str | None, disallowed: str | None) -> ListenerCriteria:
        """Parse the two comma-separated header values (absent headers mean no restriction)."""
        return cls(_split_ids(allowed), _split_ids(disallowed))


def _split_ids(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


class _Identified(Protocol):
    @property
    def listener_id(self) -> str: ...


_Candidate = TypeVar("_Candidate", bound=_Identified)


def qualifying(candidates: Sequence[_Candidate], criteria: ListenerCriteria) -> list[_Candidate]:
    """The candidate listeners (wherever they are held) that ``criteria`` admit, in random order.

    Raises:
        NoListenerMatches: none is admitted.
    """
    allow = {a.lower() for a in criteria.allowed}
    deny = {d.lower() for d in criteria.disallowed}
    chosen = [c for c in candidates if (not allow or c.listener_id in allow) and c.listener_id not in deny]
    if not chosen:
        raise NoListenerMatches(
            "None of the connected listeners meet the AllowedListeners/DisallowedListeners criteria."
        )
    random.shuffle(chosen)
    return chosen


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a command is built from: where the chosen listener must dial back to (always this node, also when
    another cluster node holds the listener's control channel)."""

    base_url: str
    listener_id: str


#: Makes the command (and its optional body, sent as the very next message) for one candidate listener.
BuildCommand = Callable[[Delivery], tuple[Command, bytes | None]]


class Router(Protocol):
    """Gets a command to one listener of a hybrid connection."""

    async def dispatch(
        self, hc: HybridConnection, criteria: ListenerCriteria, build: BuildCommand
    ) -> Delivery:
        """Send ``build(delivery)`` to one listener of ``hc`` chosen at random among those that qualify.

        Returns:
            Where the command went.

        Raises:
            NoListenerConnected: nobody is listening, or every candidate's channel broke.
            NoListenerMatches: listeners are connected, but the criteria exclude all of them.
        """
        ...


class LocalRouter:
    """Routes to the listeners connected to this relay process."""

    async def dispatch(
        self, hc: HybridConnection, criteria: ListenerCriteria, build: BuildCommand
    ) -> Delivery:
        """See :meth:`Router.dispatch`."""
        if not hc.listeners:
            raise NoListenerConnected("There are no listeners connected for the endpoint.")
        candidates = hc.candidates(criteria.allowed, criteria.disallowed)
        if not candidates:
            raise NoListenerMatches(
                "None of the connected listeners meet the AllowedListeners/DisallowedListeners criteria."
            )
        for channel in candidates:
            delivery = Delivery(channel.base_url, channel.listener_id)
            command, body = build(delivery)
            try:
                await channel.send_with_body(command, body)
            except ConnectionLost:
                continue
            return delivery
        raise NoListenerConnected("There are no listeners connected for the endpoint.")
