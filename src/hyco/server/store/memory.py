"""A store in memory: nothing survives the process. For tests and for relays run without a data directory."""

from __future__ import annotations

from collections.abc import Callable

from hyco.server.store.base import Change, EntityRecord, RuleRecord, Snapshot, rule_key

__all__ = ["MemoryStore", "Watchers"]


class Watchers:
    """The callbacks of :meth:`Store.watch`, called in order for each change (shared by the stores)."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[Change], None]] = []

    def watch(self, on_change: Callable[[Change], None]) -> None:
        """Add a callback."""
        self._callbacks.append(on_change)

    def notify(self, change: Change) -> None:
        """Report one change to every callback."""
        for callback in self._callbacks:
            callback(change)


class MemoryStore(Watchers):
    """A :class:`~hyco.server.store.base.Store` kept in dictionaries."""

    def __init__(self) -> None:
        super().__init__()
        self._entities: dict[str, EntityRecord] = {}
        self._rules: dict[tuple[str, str], RuleRecord] = {}

    async def load(self) -> Snapshot:
        """Everything in the store."""
        return Snapshot(tuple(self._entities.values()), tuple(self._rules.values()))

    async def put_entity(self, record: EntityRecord) -> None:
        """Create or replace a hybrid connection."""
        self._entities[record.key] = record
        self.notify(Change(record.path, None, record))

    async def delete_entity(self, path: str) -> bool:
        """Delete a hybrid connection and its rules; False if it did not exist."""
        record = self._entities.pop(path.lower(), None)
        if record is None:
            return False
        for key in [k for k in self._rules if k[0] == path.lower()]:
            del self._rules[key]
        self.notify(Change(record.path, None, None))
        return True

    async def put_rule(self, record: RuleRecord) -> None:
        """Create or replace an authorization rule."""
        self._rules[record.key] = record
        self.notify(Change(record.scope, record.rule.name, record))

    async def delete_rule(self, scope: str, name: str) -> bool:
        """Delete an authorization rule; False if it did not exist."""
        record = self._rules.pop(rule_key(scope, name), None)
        if record is None:
            return False
        self.notify(Change(record.scope, record.rule.name, None))
        return True

    async def close(self) -> None:
        """Nothing to release."""
