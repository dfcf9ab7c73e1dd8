"""Persistence of hybrid connections and authorization rules created at run time (the store seam).

:class:`Store` is the seam (contract in :mod:`hyco.server.store.base`); :class:`SqliteStore` is the
single-node default, :class:`MemoryStore` keeps nothing across restarts; :class:`Namespace` is the relay's
merged, in-memory view of the configuration file and the store.
"""

from __future__ import annotations

from hyco.server.config import RelayConfig
from hyco.server.store.base import Change, EntityRecord, EntityStatus, RuleRecord, Snapshot, Store
from hyco.server.store.memory import MemoryStore
from hyco.server.store.namespace import Namespace, RuleView
from hyco.server.store.sqlite import DATABASE_NAME, SqliteStore

__all__ = [
    "Change",
    "EntityRecord",
    "EntityStatus",
    "MemoryStore",
    "Namespace",
    "RuleRecord",
    "RuleView",
    "Snapshot",
    "SqliteStore",
    "Store",
    "open_store",
]


def open_store(config: RelayConfig) -> Store:
    """The store a configuration asks for: SQLite in the data directory, else memory.

    Raises:
        InvalidConfig: the database cannot be opened.
    """
    data_dir = config.server.data_dir
    if config.server.store == "sqlite" and data_dir is not None:
        return SqliteStore(data_dir / DATABASE_NAME)
    return MemoryStore()
