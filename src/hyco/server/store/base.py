"""The store seam: where hybrid connections and authorization rules created at run time are kept.

A :class:`Store` keeps two kinds of records, each under a case-insensitive key:

* :class:`EntityRecord`, keyed by the hybrid connection's path (lower-cased);
* :class:`RuleRecord`, keyed by ``(scope, rule name)`` (both lower-cased), where the scope is ``""`` for the
  namespace or the path of the hybrid connection the rule belongs to.

Contract for implementations (SQLite on one node, NATS KV in a cluster, memory in tests):

* ``put_*`` creates or replaces a whole record; ``delete_*`` removes it and says whether it existed;
  deleting an entity also deletes the rules of its scope. Every call is atomic and durable when it returns (a
  crash right after leaves the old or the new state, never a mix).
* Every change, including changes made by other processes sharing the store (a cluster), is reported to the
  callbacks given to :meth:`Store.watch` as a :class:`Change`, in the order the changes took effect. A
  callback runs on the event loop and must not block.
* Records hold keys in clear (as the configuration file does); the store must be private to the relay.

The relay never reads the store on a request's path: it loads it once (:meth:`Store.load`) and then applies
changes to its in-memory view (:class:`~hyco.server.store.namespace.Namespace`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hyco.server.config import AuthorizationRule, EntityStatus

__all__ = ["Change", "EntityRecord", "EntityStatus", "RuleRecord", "Snapshot", "Store", "rule_key"]


@dataclass(frozen=True, slots=True)
class EntityRecord:
    """A hybrid connection created at run time.

    Attributes:
        path: the entity path as it was created (keys compare case-insensitively).
        requires_client_authorization: senders need a Send token.
        user_metadata: free text kept for the user.
        status: whether listeners and senders are admitted.
        created_at, updated_at: seconds since the epoch.
        inspect: the HTTP inspector records its relayed requests (hyco's own setting; Azure has none).
    """

    path: str
    requires_client_authorization: bool = True
    user_metadata: str = ""
    status: EntityStatus = EntityStatus.ACTIVE
    created_at: float = 0.0
    updated_at: float = 0.0
    inspect: bool = False

    @property
    def key(self) -> str:
        """The store key: the path, lower-cased."""
        return self.path.lower()


@dataclass(frozen=True, slots=True)
class RuleRecord:
    """An authorization rule created at run time.

    Attributes:
        scope: ``""`` for a namespace rule, else the path of its hybrid connection.
        rule: the rule (name, keys, rights).
        created_at, updated_at: seconds since the epoch.
    """

    scope: str
    rule: AuthorizationRule
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        """The store key: ``(scope, name)``, lower-cased."""
        return rule_key(self.scope, self.rule.name)


def rule_key(scope: str, name: str) -> tuple[str, str]:
    """The store key of the rule ``name`` in ``scope``."""
    return scope.lower(), name.lower()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a store holds."""

    entities: tuple[EntityRecord, ...] = ()
    rules: tuple[RuleRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class Change:
    """One change that took effect in a store.

    Attributes:
        entity: the path of the entity that changed or whose rule changed (``""`` for a namespace rule).
        rule_name: the rule that changed, or None when the entity itself changed.
        record: the new record, or None when it was deleted.
    """

    entity: str
    rule_name: str | None
    record: EntityRecord | RuleRecord | None


class Store(Protocol):
    """Persistent hybrid connections and authorization rules (see the module docstring for the contract)."""

    async def load(self) -> Snapshot:
        """Everything in the store."""
        ...

    async def put_entity(self, record: EntityRecord) -> None:
        """Create or replace a hybrid connection."""
        ...

    async def delete_entity(self, path: str) -> bool:
        """Delete a hybrid connection and its rules; False if it did not exist."""
        ...

    async def put_rule(self, record: RuleRecord) -> None:
        """Create or replace an authorization rule."""
        ...

    async def delete_rule(self, scope: str, name: str) -> bool:
        """Delete an authorization rule; False if it did not exist."""
        ...

    def watch(self, on_change: Callable[[Change], None]) -> None:
        """Call ``on_change`` for every change from now on (this process's and others')."""
        ...

    async def close(self) -> None:
        """Release the store's resources; no calls may follow."""
        ...
