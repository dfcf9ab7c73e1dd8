"""The single-node store: an SQLite database in the relay's data directory (``hyco.db``).

Every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) in WAL mode with ``synchronous=FULL``,
so a relay killed mid-write (``kill -9``, power loss) restarts with the state before or after that write,
never a mix.
The file holds keys: it is created readable by its owner only. Calls run on the event loop: each is a few
small statements on a local file (well under a millisecond, plus an fsync on writes), and management writes
are rare.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from hyco.exceptions import InvalidConfig
from hyco.protocol.sas import Right
from hyco.server.config import AuthorizationRule, Secret
from hyco.server.store.base import Change, EntityRecord, EntityStatus, RuleRecord, Snapshot, rule_key
from hyco.server.store.memory import Watchers

__all__ = ["DATABASE_NAME", "SqliteStore"]

DATABASE_NAME = "hyco.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    key TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    requires_client_authorization INTEGER NOT NULL,
    user_metadata TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rules (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    primary_key TEXT NOT NULL,
    secondary_key TEXT,
    rights TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (scope, key)
);
"""


class SqliteStore(Watchers):
    """A :class:`~hyco.server.store.base.Store` in an SQLite file.

    Args:
        path: the database file (created with mode 0600 if missing).

    Raises:
        InvalidConfig: the file cannot be created or is not a hyco database.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) below.
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise InvalidConfig(f"cannot open the store {str(path)!r}: {exc}") from None

    def _write(self, *statements: tuple[str, tuple[object, ...]]) -> int:
        """Run statements in one transaction; returns the rows the first one changed."""
        cursor = self._db.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            changed = -1
            for sql, args in statements:
                cursor.execute(sql, args)
                changed = cursor.rowcount if changed < 0 else changed
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        return changed

    async def load(self) -> Snapshot:
        """Everything in the store."""
        entities = tuple(
            EntityRecord(path, bool(requires), metadata, EntityStatus(status), created, updated)
            for path, requires, metadata, status, created, updated in self._db.execute(
                "SELECT path, requires_client_authorization, user_metadata, status, created_at, updated_at "
                "FROM entities ORDER BY key"
            )
        )
        rules = tuple(
            RuleRecord(
                scope,
                AuthorizationRule(
                    name=name,
                    primary_key=Secret(primary),
                    secondary_key=Secret(secondary) if secondary is not None else None,
                    rights=frozenset(Right(r) for r in rights.split(",")),
                ),
                created,
                updated,
            )
            for scope, name, primary, secondary, rights, created, updated in self._db.execute(
                "SELECT scope, name, primary_key, secondary_key, rights, created_at, updated_at "
                "FROM rules ORDER BY scope, key"
            )
        )
        return Snapshot(entities, rules)

    async def put_entity(self, record: EntityRecord) -> None:
        """Create or replace a hybrid connection."""
        self._write(
            (
                "INSERT OR REPLACE INTO entities VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.key,
                    record.path,
                    int(record.requires_client_authorization),
                    record.user_metadata,
                    record.status.value,
                    record.created_at,
                    record.updated_at,
                ),
            )
        )
        self.notify(Change(record.path, None, record))

    async def delete_entity(self, path: str) -> bool:
        """Delete a hybrid connection and its rules; False if it did not exist."""
        key = path.lower()
        row = self._db.execute("SELECT path FROM entities WHERE key = ?", (key,)).fetchone()
        deleted = self._write(
            ("DELETE FROM entities WHERE key = ?", (key,)), ("DELETE FROM rules WHERE scope = ?", (key,))
        )
        if deleted:
            self.notify(Change(row[0] if row else path, None, None))
        return deleted > 0

    async def put_rule(self, record: RuleRecord) -> None:
        """Create or replace an authorization rule."""
        rule = record.rule
        scope, key = record.key
        self._write(
            (
                "INSERT OR REPLACE INTO rules VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    scope,
                    key,
                    rule.name,
                    rule.primary_key.value,
                    rule.secondary_key.value if rule.secondary_key is not None else None,
                    ",".join(sorted(r.value for r in rule.rights)),
                    record.created_at,
                    record.updated_at,
                ),
            )
        )
        self.notify(Change(record.scope, rule.name, record))

    async def delete_rule(self, scope: str, name: str) -> bool:
        """Delete an authorization rule; False if it did not exist."""
        deleted = self._write(("DELETE FROM rules WHERE scope = ? AND key = ?", rule_key(scope, name)))
        if deleted:
            self.notify(Change(scope, name, None))
        return deleted > 0

    async def close(self) -> None:
        """Close the database."""
        self._db.close()
