"""The single-node store: an SQLite database in the relay's data directory (``hyco.db``).

Every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) in WAL mode with ``synchronous=FULL``,
so a relay killed mid-write (``kill -9``, power loss) restarts with the state before or after that write,
never a mix.
The file holds keys: it is created readable by its owner only.

Every statement runs on one writer thread of the store's own, never on the event loop: a write waits for its
fsync, and for the database's write lock when another process (a backup, an operator's ``sqlite3`` shell)
holds it, and the relay keeps serving meanwhile. The one thread keeps the contract's order: calls run one at a
time in the order they were made, and each change's notification is queued to the event loop by the writer
thread right after its ``COMMIT``, so notifications keep commit order and a change is in the relay's view
before the call that made it returns.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from hyco.exceptions import InvalidConfig
from hyco.protocol.sas import Right
from hyco.server.config import AuthorizationRule, Secret
from hyco.server.store.base import Change, EntityRecord, EntityStatus, RuleRecord, Snapshot, rule_key
from hyco.server.store.memory import Watchers

__all__ = ["DATABASE_NAME", "WRITER_THREAD_NAME", "SqliteStore"]

DATABASE_NAME = "hyco.db"
#: The name of the store's writer thread (its statements run there and nowhere else).
WRITER_THREAD_NAME = "hyco-store"
#: Seconds a write waits for the database's write lock held by another connection before it fails.
LOCK_TIMEOUT = 30.0
#: Seconds between attempts to open a database another process is opening at the same moment.
OPEN_RETRY = 0.02

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    key TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    requires_client_authorization INTEGER NOT NULL,
    user_metadata TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    inspect INTEGER NOT NULL DEFAULT 0
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
        # One worker: statements run one at a time, in the order the calls were made (module docstring).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=WRITER_THREAD_NAME)
        try:
            self._db = self._writer.submit(self._open, path).result()
        except (OSError, sqlite3.Error) as exc:
            self._writer.shutdown()
            raise InvalidConfig(f"cannot open the store {str(path)!r}: {exc}") from None

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) below. The
            # connection is made here, on the writer thread, and used there only (sqlite3 checks that).
            db = sqlite3.connect(path, isolation_level=None, timeout=LOCK_TIMEOUT)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(_SCHEMA)
                columns = {row[1] for row in db.execute("PRAGMA table_info(entities)")}
                if "inspect" not in columns:  # a database made before the column existed
                    db.execute("ALTER TABLE entities ADD COLUMN inspect INTEGER NOT NULL DEFAULT 0")
                return db
            except sqlite3.OperationalError as exc:
                db.close()
                # Workers of one relay open the file at the same moment: SQLite reports some of those
                # conflicts (the switch to WAL, the schema) as "locked" at once, without waiting.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(OPEN_RETRY)

    async def _on_writer(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the writer thread, after every call made before this one."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, work)

    async def _transaction(self, body: Callable[[sqlite3.Cursor], tuple[T, Change | None]]) -> T:
        """Run ``body`` in one transaction on the writer thread and return its first value.

        ``body`` returns what the call answers and the change to report (None: nothing changed); the writer
        thread queues that notification to the event loop right after the ``COMMIT``, before the call
        returns.
        """
        loop = asyncio.get_running_loop()

        def work() -> T:
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                answer, change = body(cursor)
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            if change is not None:
                loop.call_soon_threadsafe(self.notify, change)
            return answer

        return await self._on_writer(work)

    async def load(self) -> Snapshot:
        """Everything in the store."""
        return await self._on_writer(self._read_all)

    def _read_all(self) -> Snapshot:
        entities = tuple(
            EntityRecord(
                path, bool(requires), metadata, EntityStatus(status), created, updated, bool(inspect)
            )
            for path, requires, metadata, status, created, updated, inspect in self._db.execute(
                "SELECT path, requires_client_authorization, user_metadata, status, created_at, updated_at, "
                "inspect FROM entities ORDER BY key"
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
        row = (
            record.key,
            record.path,
            int(record.requires_client_authorization),
            record.user_metadata,
            record.status.value,
            record.created_at,
            record.updated_at,
            int(record.inspect),
        )

        def body(cursor: sqlite3.Cursor) -> tuple[None, Change]:
            cursor.execute(
                "INSERT OR REPLACE INTO entities (key, path, requires_client_authorization, user_metadata, "
                "status, created_at, updated_at, inspect) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return None, Change(record.path, None, record)

        await self._transaction(body)

    async def delete_entity(self, path: str) -> bool:
        """Delete a hybrid connection and its rules; False if it did not exist."""
        key = path.lower()

        def body(cursor: sqlite3.Cursor) -> tuple[bool, Change | None]:
            stored = cursor.execute("SELECT path FROM entities WHERE key = ?", (key,)).fetchone()
            cursor.execute("DELETE FROM entities WHERE key = ?", (key,))
            cursor.execute("DELETE FROM rules WHERE scope = ?", (key,))
            return (True, Change(stored[0], None, None)) if stored else (False, None)

        return await self._transaction(body)

    async def put_rule(self, record: RuleRecord) -> None:
        """Create or replace an authorization rule."""
        rule = record.rule
        scope, key = record.key
        row = (
            scope,
            key,
            rule.name,
            rule.primary_key.value,
            rule.secondary_key.value if rule.secondary_key is not None else None,
            ",".join(sorted(r.value for r in rule.rights)),
            record.created_at,
            record.updated_at,
        )

        def body(cursor: sqlite3.Cursor) -> tuple[None, Change]:
            cursor.execute("INSERT OR REPLACE INTO rules VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            return None, Change(record.scope, rule.name, record)

        await self._transaction(body)

    async def delete_rule(self, scope: str, name: str) -> bool:
        """Delete an authorization rule; False if it did not exist."""

        def body(cursor: sqlite3.Cursor) -> tuple[bool, Change | None]:
            cursor.execute("DELETE FROM rules WHERE scope = ? AND key = ?", rule_key(scope, name))
            return (True, Change(scope, name, None)) if cursor.rowcount else (False, None)

        return await self._transaction(body)

    async def close(self) -> None:
        """Close the database once every call made before has finished; stop the writer thread."""
        await self._on_writer(self._db.close)
        self._writer.shutdown()
