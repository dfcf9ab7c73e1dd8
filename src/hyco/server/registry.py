"""The namespace: hybrid connections by path, and the listeners connected to each (protocol.md 1.1, 2.8).

Lookup finds the registered path that is the longest segment-prefix of a request path, case-insensitively;
the rest is the *suffix* the sender added. Listener choice is random, filtered by the sender's
``Microsoft-Relay-AllowedListeners`` / ``DisallowedListeners`` headers.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from hyco.exceptions import EndpointNotFound, Forbidden, QuotaExceeded
from hyco.protocol.messages import Command
from hyco.server.config import HybridConnectionConfig, validate_entity_path

__all__ = ["HybridConnection", "ListenerHandle", "Registry"]


class ListenerHandle(Protocol):
    """What the registry needs to know of a connected listener."""

    @property
    def listener_id(self) -> str:
        """The GUID part of the listener's ``sb-hc-id``, lower-case (2.8)."""
        ...

    @property
    def base_url(self) -> str:
        """The WebSocket base URL rendezvous addresses for this listener start with."""
        ...

    async def send(self, command: Command) -> None:
        """Send a command down the control channel; raises ConnectionLost when it is gone."""
        ...

    async def send_with_body(self, command: Command, body: bytes | None) -> None:
        """Send a command and its body as the next message, with nothing in between."""
        ...


@dataclass(eq=False)
class HybridConnection:
    """A hybrid connection and its connected listeners."""

    config: HybridConnectionConfig
    auto_created: bool = False
    listeners: list[ListenerHandle] = field(default_factory=list)
    reserved: int = 0

    @property
    def path(self) -> str:
        """The entity path as configured."""
        return self.config.path

    def reserve(self, limit: int) -> None:
        """Take one of the ``limit`` listener slots for a listener that is still completing its handshake.

        Raises:
            QuotaExceeded: ``limit`` listeners are already connected or connecting.
        """
        if len(self.listeners) + self.reserved >= limit:
            raise QuotaExceeded(
                f"MaximumListenersPerEndpoint: '{self.path}' already has {limit} listeners, the most "
                "allowed; close one or use another hybrid connection."
            )
        self.reserved += 1

    def unreserve(self) -> None:
        """Give back a slot taken with :meth:`reserve`."""
        self.reserved -= 1

    def add_listener(self, listener: ListenerHandle) -> None:
        """Register a connected listener in the slot it reserved."""
        self.reserved -= 1
        self.listeners.append(listener)

    def remove_listener(self, listener: ListenerHandle) -> None:
        """Forget a listener (no error if it is already gone)."""
        if listener in self.listeners:
            self.listeners.remove(listener)

    def candidates(self, allowed: Iterable[str] = (), disallowed: Iterable[str] = ()) -> list[ListenerHandle]:
        """The connected listeners a sender may be routed to (possibly none), in random order."""
        allow = {a.lower() for a in allowed}
        deny = {d.lower() for d in disallowed}
        chosen = [
            lst
            for lst in self.listeners
            if (not allow or lst.listener_id in allow) and lst.listener_id not in deny
        ]
        random.shuffle(chosen)
        return chosen


class Registry:
    """Hybrid connections of the namespace, configured or created on first listen."""

    def __init__(
        self,
        configs: Iterable[HybridConnectionConfig],
        *,
        create_on_listen: bool,
        max_hybrid_connections: int,
    ) -> None:
        self._by_path: dict[str, HybridConnection] = {c.path.lower(): HybridConnection(c) for c in configs}
        self._create_on_listen = create_on_listen
        self._max = max_hybrid_connections

    def all(self) -> list[HybridConnection]:
        """Every hybrid connection."""
        return list(self._by_path.values())

    def find(self, raw_path: str) -> tuple[HybridConnection, str]:
        """Resolve a request path to ``(hybrid connection, suffix)``; the suffix is ``""`` or ``/...``.

        Raises:
            EndpointNotFound: no registered path is a segment-prefix of ``raw_path``.
        """
        segments = raw_path.strip("/").split("/")
        for end in range(len(segments), 0, -1):
            hc = self._by_path.get("/".join(segments[:end]).lower())
            if hc is not None:
                rest = "/".join(segments[end:])
                return hc, f"/{rest}" if rest else ""
        raise EndpointNotFound("Endpoint does not exist.")

    def find_for_sender(self, raw_path: str) -> tuple[HybridConnection, str]:
        """:meth:`find`, refused when the entity's status does not admit senders.

        Raises:
            EndpointNotFound: as :meth:`find`.
            Forbidden: the hybrid connection is Disabled or SendDisabled.
        """
        hc, suffix = self.find(raw_path)
        if not hc.config.status.admits_senders:
            raise _disabled(hc)
        return hc, suffix

    def get(self, path: str) -> HybridConnection | None:
        """The hybrid connection registered under exactly ``path`` (case-insensitive), if any."""
        return self._by_path.get(path.strip("/").lower())

    def define(self, config: HybridConnectionConfig) -> HybridConnection:
        """Add a hybrid connection, or replace the definition of one (its listeners stay connected).

        Raises:
            QuotaExceeded: a new one would exceed ``max_hybrid_connections``.
        """
        hc = self._by_path.get(config.path.lower())
        if hc is None:
            self._check_quota()
            hc = self._by_path[config.path.lower()] = HybridConnection(config)
        else:
            hc.config = config
            hc.auto_created = False
        return hc

    def undefine(self, path: str) -> HybridConnection | None:
        """Remove a hybrid connection; returns it (the caller closes its listeners), or None if unknown."""
        return self._by_path.pop(path.strip("/").lower(), None)

    @property
    def full(self) -> bool:
        """Whether the namespace has ``max_hybrid_connections`` already."""
        return len(self._by_path) >= self._max

    def _check_quota(self) -> None:
        if self.full:
            raise QuotaExceeded(
                f"the namespace already has {self._max} hybrid connections, the most allowed."
            )

    def find_for_listener(self, raw_path: str) -> HybridConnection:
        """The hybrid connection a listener opens: the exact path, or a new, *unregistered* one when the
        relay creates entities on listen. Check the listener's token against it, then :meth:`register` it:
        a request without a valid token must never create anything.

        Raises:
            EndpointNotFound: unknown path and creation is off, or the path is not a valid entity name.
            Forbidden: the hybrid connection is Disabled or ReceiveDisabled.
        """
        hc = self._by_path.get(raw_path.strip("/").lower())
        if hc is not None:
            if not hc.config.status.admits_listeners:
                raise _disabled(hc)
            return hc
        if not self._create_on_listen:
            raise EndpointNotFound("Endpoint does not exist.")
        try:
            path = validate_entity_path(raw_path)
        except ValueError as exc:
            raise EndpointNotFound(f"Endpoint does not exist and cannot be created: {exc}") from None
        return HybridConnection(HybridConnectionConfig(path=path), auto_created=True)

    def register(self, hc: HybridConnection) -> HybridConnection:
        """Add a hybrid connection from :meth:`find_for_listener`; returns the registered one (an existing
        entity of the same path wins).

        Raises:
            QuotaExceeded: the namespace already has ``max_hybrid_connections``, none of them an idle
                auto-created one that could make room.
        """
        key = hc.path.lower()
        existing = self._by_path.get(key)
        if existing is not None:
            return existing
        if len(self._by_path) >= self._max and not self._evict_idle():
            raise QuotaExceeded(
                f"the namespace already has {self._max} hybrid connections, the most allowed."
            )
        self._by_path[key] = hc
        return hc

    def release(self, hc: HybridConnection) -> None:
        """Note that a listener left ``hc``.

        An auto-created hybrid connection stays known after its last listener left, so a sender is told "There
        are no listeners connected" (Azure's answer for an entity without listeners, protocol.md 3.4) rather
        than "Endpoint does not exist", which would send the user looking for a typo. Idle auto-created
        entities only give way when a new one needs their slot (:meth:`register`), the longest idle first:
        this moves ``hc`` to the end of that order.
        """
        key = hc.path.lower()
        if hc.auto_created and not (hc.listeners or hc.reserved) and self._by_path.get(key) is hc:
            self._by_path[key] = self._by_path.pop(key)

    def _evict_idle(self) -> bool:
        """Forget the longest idle auto-created hybrid connection; False if every one has listeners."""
        for key, hc in self._by_path.items():
            if hc.auto_created and not (hc.listeners or hc.reserved):
                del self._by_path[key]
                return True
        return False


def _disabled(hc: HybridConnection) -> Forbidden:
    return Forbidden(
        f"EntityDisabled: the hybrid connection '{hc.path}' is {hc.config.status.value}; an operator can "
        "set its status back to Active."
    )
