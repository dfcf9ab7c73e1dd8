"""The store seam: both implementations keep the same contract; SQLite survives a restart and a kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hyco.protocol.sas import Right
from hyco.server.config import AuthorizationRule, EntityStatus, Secret
from hyco.server.store import Change, EntityRecord, MemoryStore, RuleRecord, Snapshot, SqliteStore, Store
from tests.conftest import KEY, KEY_NAME, TIMEOUT

RULE = AuthorizationRule("sender", Secret("k1"), frozenset({Right.SEND}), Secret("k2"))


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "hyco.db")
    yield made
    await made.close()


async def test_put_load_and_notify(store: Store):
    changes: list[Change] = []
    store.watch(changes.append)
    entity = EntityRecord("Orders/In", False, "meta", EntityStatus.SEND_DISABLED, 1.0, 2.0, inspect=True)
    rule = RuleRecord("Orders/In", RULE, 3.0, 4.0)
    await store.put_entity(entity)
    await store.put_rule(rule)
    snapshot = await store.load()
    assert snapshot.entities == (entity,)
    (loaded,) = snapshot.rules
    assert loaded.key == ("orders/in", "sender")
    assert loaded.rule == RULE
    assert changes == [Change("Orders/In", None, entity), Change("Orders/In", "sender", rule)]


async def test_put_replaces_by_case_insensitive_key(store: Store):
    await store.put_entity(EntityRecord("echo", user_metadata="old"))
    await store.put_entity(EntityRecord("ECHO", user_metadata="new"))
    (only,) = (await store.load()).entities
    assert (only.path, only.user_metadata) == ("ECHO", "new")


async def test_deleting_an_entity_deletes_its_rules_only(store: Store):
    await store.put_entity(EntityRecord("a"))
    await store.put_rule(RuleRecord("a", RULE))
    await store.put_rule(RuleRecord("", RULE))
    changes: list[Change] = []
    store.watch(changes.append)
    assert await store.delete_entity("A") is True
    assert await store.delete_entity("a") is False
    snapshot = await store.load()
    assert snapshot.entities == ()
    assert [r.scope for r in snapshot.rules] == [""]
    assert changes == [Change("a", None, None)]


async def test_delete_rule(store: Store):
    await store.put_rule(RuleRecord("", RULE))
    assert await store.delete_rule("", "SENDER") is True
    assert await store.delete_rule("", "sender") is False
    assert (await store.load()).rules == ()


async def test_sqlite_survives_reopen_and_is_private(tmp_path: Path):
    path = tmp_path / "data" / "hyco.db"
    first = SqliteStore(path)
    await first.put_entity(EntityRecord("kept", created_at=5.0, updated_at=6.0))
    await first.put_rule(RuleRecord("kept", RULE))
    await first.close()
    assert path.stat().st_mode & 0o077 == 0
    second = SqliteStore(path)
    snapshot = await second.load()
    await second.close()
    assert snapshot.entities == (EntityRecord("kept", created_at=5.0, updated_at=6.0),)
    assert snapshot.rules[0].rule == RULE


async def test_sqlite_opens_a_database_made_before_inspect_existed(tmp_path: Path):
    """A hyco.db written by an earlier version (no ``inspect`` column) opens, keeps its entities (not
    inspected), and takes the new column."""
    path = tmp_path / "hyco.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE entities (key TEXT PRIMARY KEY, path TEXT NOT NULL, requires_client_authorization "
        "INTEGER NOT NULL, user_metadata TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL, "
        "updated_at REAL NOT NULL);"
        "INSERT INTO entities VALUES ('old', 'Old', 1, 'm', 'Active', 1.0, 2.0);"
    )
    old.commit()
    old.close()
    store = SqliteStore(path)
    assert (await store.load()).entities == (EntityRecord("Old", True, "m", EntityStatus.ACTIVE, 1.0, 2.0),)
    await store.put_entity(EntityRecord("new", inspect=True))
    assert [e.inspect for e in (await store.load()).entities] == [True, False]
    await store.close()


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path):
    bogus = tmp_path / "hyco.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(Exception, match="cannot open the store"):
        SqliteStore(bogus)


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from hyco.protocol.sas import Right
    from hyco.server.config import AuthorizationRule, Secret
    from hyco.server.store import EntityRecord, RuleRecord, SqliteStore

    async def main():
        store = SqliteStore(__import__("pathlib").Path(sys.argv[1]))
        i = 0
        while True:
            # Each round: an entity with a rule, then the previous round's entity deleted (two rows at once).
            await store.put_entity(EntityRecord(f"e{i}", created_at=i))
            rule = AuthorizationRule("r", Secret("k"), frozenset({Right.SEND}))
            await store.put_rule(RuleRecord(f"e{i}", rule))
            if i:
                await store.delete_entity(f"e{i - 1}")
            print(i, flush=True)
            i += 1

    asyncio.run(main())
    """
)


async def test_sqlite_survives_kill_9_mid_write(tmp_path: Path):
    """A process writing in a loop is killed with SIGKILL: what it acknowledged is there, nothing is torn."""
    db = tmp_path / "hyco.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(db), stdout=asyncio.subprocess.PIPE, env=os.environ.copy()
    )
    assert proc.stdout is not None
    acknowledged = -1
    async with asyncio.timeout(TIMEOUT * 3):
        while acknowledged < 200:
            acknowledged = int(await proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    await proc.wait()

    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = SqliteStore(db)
    snapshot = await store.load()
    await store.close()
    indices = sorted(int(e.path[1:]) for e in snapshot.entities)
    # The killed round left one or two entities (delete of the previous one done or not), never zero.
    assert indices[-1] >= acknowledged
    assert len(indices) in (1, 2)
    assert indices == list(range(indices[0], indices[-1] + 1))
    # Every entity kept has its rule or is the newest (killed between its two writes); no orphaned rules.
    scopes = {r.scope for r in snapshot.rules}
    assert scopes <= {f"e{i}" for i in indices}
    assert {f"e{i}" for i in indices[:-1]} <= scopes


# --- configuration keys of the store and of entities ----------------------------------------------------


async def test_store_key_and_open_store(tmp_path: Path):
    from hyco.exceptions import InvalidConfig
    from hyco.server.config import parse_config
    from hyco.server.store import open_store

    sqlite_store = open_store(parse_config({"server": {"data_dir": "d"}}, base=tmp_path))
    assert isinstance(sqlite_store, SqliteStore)
    await sqlite_store.close()
    assert (tmp_path / "d" / "hyco.db").is_file()
    assert isinstance(open_store(parse_config({"server": {"store": "memory"}}, base=tmp_path)), MemoryStore)
    with pytest.raises(InvalidConfig, match=r'server\.store must be "sqlite" or "memory"'):
        parse_config({"server": {"store": "redis"}})


def test_entity_status_and_metadata_keys():
    from hyco.exceptions import InvalidConfig
    from hyco.server.config import parse_config

    config = parse_config(
        {"hybrid_connections": [{"path": "a", "status": "SendDisabled", "user_metadata": "m"}]}
    )
    (hc,) = config.hybrid_connections
    assert (hc.status, hc.user_metadata) == (EntityStatus.SEND_DISABLED, "m")
    assert hc.status.admits_listeners and not hc.status.admits_senders
    with pytest.raises(InvalidConfig, match="status must be one of Active"):
        parse_config({"hybrid_connections": [{"path": "a", "status": "Paused"}]})


# --- SQLite writes run off the event loop ------------------------------------------------------------


async def test_concurrent_writes_commit_and_notify_in_call_order(tmp_path: Path):
    """Writes made at once commit one at a time in call order, and are reported in that order: the last
    change reported is what the database holds."""
    store = SqliteStore(tmp_path / "hyco.db")
    changes: list[Change] = []
    store.watch(changes.append)
    await asyncio.gather(*(store.put_entity(EntityRecord("e", user_metadata=str(i))) for i in range(20)))
    await store.put_rule(RuleRecord("e", RULE))
    assert await store.delete_entity("E") is True
    assert [c.record.user_metadata for c in changes[:20]] == [str(i) for i in range(20)]  # type: ignore[union-attr]
    assert changes[20:] == [Change("e", "sender", RuleRecord("e", RULE)), Change("e", None, None)]
    assert await store.load() == Snapshot()
    await store.close()


async def test_a_write_waiting_for_the_database_lock_does_not_stop_the_relay(relay_factory, tmp_path: Path):
    """Another connection holds SQLite's write lock (as a backup or an operator's sqlite3 shell would): a
    management write waits for it on the store's thread while the relay keeps relaying and answering; when
    the lock is released the write completes and takes effect."""
    from hyco import HybridConnectionListener, RelayedHttpRequest, RelayedHttpResponse, TokenProvider
    from hyco.server import ServerConfig
    from tests.management.conftest import Api
    from tests.server.wire import recording_session

    relay = await relay_factory(server=ServerConfig(host="127.0.0.1", port=0, data_dir=tmp_path))
    holder = sqlite3.connect(tmp_path / "hyco.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # SQLite's write lock, until ROLLBACK below

    async def answer(request: RelayedHttpRequest) -> RelayedHttpResponse:
        return RelayedHttpResponse(200, "served")

    async with (
        recording_session() as session,
        HybridConnectionListener(
            f"{relay.url}/open", TokenProvider.from_shared_access_key(KEY_NAME, KEY), request_handler=answer
        ),
    ):
        write = asyncio.ensure_future(
            relay.namespace.store.put_entity(EntityRecord("held", user_metadata="m"))
        )
        await asyncio.sleep(0)  # one turn: the write has started (a write on the loop would end in it)
        async with session.get(f"{relay.http_url}/open/x") as resp:
            assert (resp.status, await resp.text()) == (200, "served")
        api = Api(session, relay)
        status, listed = await api.call("GET", "hybridConnections")
        assert status == 200
        assert "held" not in [hc["name"] for hc in listed["value"]]
        assert not write.done()  # still waiting for the lock, off the loop

        holder.execute("ROLLBACK")
        await asyncio.wait_for(write, TIMEOUT)
        status, shown = await api.call("GET", "hybridConnections/held")
        assert (status, shown["properties"]["userMetadata"]) == (200, "m")
    holder.close()
