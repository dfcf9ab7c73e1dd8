"""One worker's view of the store all workers share (the SQLite file in the data directory).

The file holds every worker's writes, but SQLite tells only the process that wrote: this wrapper tells the
other workers over the mesh (``publish``) and reports the changes they announce to this worker's watchers
(:meth:`WorkerStore.apply_remote`), so a key rotated through one worker is refused by all of them at once.
"""

from __future__ import annotations

from collections.abc import Callable

from hyco.server.store import Change, EntityRecord, RuleRecord, Snapshot, Store
from hyco.server.store.memory import Watchers

__all__ = ["WorkerStore"]


class WorkerStore(Watchers):
    """A :class:`~hyco.server.store.base.Store` that shares its changes with the other workers.

    Args:
        shared: the store every worker opened (it must be one they all read: SQLite in one data directory).
        publish: sends a change this worker made to the other workers.
    """

    def __init__(self, shared: Store, publish: Callable[[Change], None]) -> None:
        super().__init__()
        self._shared = shared
        self._publish = publish
        shared.watch(self._made_here)

    def _made_here(self, change: Change) -> None:
        self.notify(change)
        self._publish(change)

    def apply_remote(self, change: Change) -> None:
        """A change another worker made (it is already in the shared file)."""
        self.notify(change)

    async def load(self) -> Snapshot:
        """Everything in the store."""
        return await self._shared.load()

    async def put_entity(self, record: EntityRecord) -> None:
        """Create or replace a hybrid connection."""
        await self._shared.put_entity(record)

    async def delete_entity(self, path: str) -> bool:
        """Delete a hybrid connection and its rules; False if it did not exist."""
        return await self._shared.delete_entity(path)

    async def put_rule(self, record: RuleRecord) -> None:
        """Create or replace an authorization rule."""
        await self._shared.put_rule(record)

    async def delete_rule(self, scope: str, name: str) -> bool:
        """Delete an authorization rule; False if it did not exist."""
        return await self._shared.delete_rule(scope, name)

    async def close(self) -> None:
        """Close the shared store."""
        await self._shared.close()
