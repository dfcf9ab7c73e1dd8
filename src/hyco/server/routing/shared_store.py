"""The cluster's shared store: hybrid connections and authorization rules created at run time, kept in a NATS
JetStream KV bucket that every node reads (implements :class:`~hyco.server.store.base.Store`).

Theory of operation:

* One KV entry per record: ``e.{path}`` for an entity, ``r.{scope}.{name}`` for a rule (``_`` is the namespace
  scope; names are hex-encoded, since entity paths hold characters KV keys do not allow). Values are JSON.
* Each node mirrors the bucket through a KV watcher; every entry the watcher delivers, this node's writes and
  other nodes' alike, becomes one :class:`~hyco.server.store.base.Change`, in the bucket's order. A write
  returns once this node's mirror shows it, so a management call reads its own write on the node that made it.
  A key regenerated on node A is refused on node C as soon as C's watcher delivers the entry (milliseconds).
* Deleting an entity deletes its rules first, then the entity: a crash in between leaves an entity with fewer
  rules (a state a user could create), never rules that outlive their entity.
* Without NATS the node starts with the configuration file's entities only and keeps trying; writes are
  refused with 503 and the reason. When NATS is (back) within reach the watcher is reopened, and what changed
  meanwhile is reported as changes, so the node catches up by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType
from nats.js.kv import KeyValue

from hyco.exceptions import ServerBusy
from hyco.protocol.sas import Right
from hyco.server.config import AuthorizationRule, ClusterConfig, EntityStatus, Secret
from hyco.server.routing.natsconn import RETRY_SECONDS, connect
from hyco.server.store.base import Change, EntityRecord, RuleRecord, Snapshot, rule_key
from hyco.server.store.memory import Watchers

__all__ = ["BUCKET", "SharedStore"]

log = logging.getLogger("hyco.cluster")

BUCKET = "hyco_namespace"
_UNREACHABLE = "This relay node cannot reach the cluster (NATS), so entities and rules cannot be changed now"

Record = EntityRecord | RuleRecord


def _token(text: str) -> str:
    return text.lower().encode().hex() or "_"


def entity_key(path: str) -> str:
    """The KV key of hybrid connection ``path``."""
    return f"e.{_token(path)}"


def rule_kv_key(scope: str, name: str) -> str:
    """The KV key of rule ``name`` in ``scope`` (``""``: the namespace)."""
    return f"r.{_token(scope)}.{_token(name)}"


def encode(record: Record) -> bytes:
    """A record as the bucket keeps it."""
    if isinstance(record, EntityRecord):
        body: dict[str, Any] = {
            "path": record.path,
            "requires_client_authorization": record.requires_client_authorization,
            "user_metadata": record.user_metadata,
            "status": record.status.value,
            "inspect": record.inspect,
        }
    else:
        rule = record.rule
        body = {
            "scope": record.scope,
            "name": rule.name,
            "primary_key": rule.primary_key.value,
            "secondary_key": rule.secondary_key.value if rule.secondary_key is not None else None,
            "rights": sorted(r.value for r in rule.rights),
        }
    body["created_at"], body["updated_at"] = record.created_at, record.updated_at
    return json.dumps(body).encode()


def decode(key: str, value: bytes) -> Record:
    """A record from the bucket.

    Raises:
        ValueError: the entry is not one this version understands (the bucket is shared; a newer hyco may
            write more).
    """
    body = json.loads(value)
    stamps = float(body["created_at"]), float(body["updated_at"])
    if key.startswith("e."):
        return EntityRecord(
            str(body["path"]),
            bool(body["requires_client_authorization"]),
            str(body["user_metadata"]),
            EntityStatus(body["status"]),
            *stamps,
            inspect=bool(body.get("inspect", False)),  # absent in entries written before it existed
        )
    if key.startswith("r."):
        secondary = body["secondary_key"]
        rule = AuthorizationRule(
            name=str(body["name"]),
            primary_key=Secret(str(body["primary_key"])),
            secondary_key=Secret(str(secondary)) if secondary is not None else None,
            rights=frozenset(Right(r) for r in body["rights"]),
        )
        return RuleRecord(str(body["scope"]), rule, *stamps)
    raise ValueError(f"unknown key kind {key!r}")


def _change(record: Record | None, was: Record) -> Change:
    """The change that turns ``was`` into ``record`` (None: deleted)."""
    if isinstance(was, EntityRecord):
        return Change(was.path, None, record)
    return Change(was.scope, was.rule.name, record)


class SharedStore(Watchers):
    """Entities and rules in the cluster's KV bucket (see the module docstring).

    Args:
        config: the ``[cluster]`` settings (NATS servers, replicas, request timeout).
        node_id: this node's id (names its NATS connection).
    """

    def __init__(self, config: ClusterConfig, node_id: str) -> None:
        super().__init__()
        self._config = config
        self._node_id = node_id
        self._nc: NatsClient | None = None
        self._kv: KeyValue | None = None
        self._mirror: dict[str, Record] = {}
        self._synced = asyncio.Event()
        self._applied = asyncio.Condition()
        self._resync = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- Store ---

    async def load(self) -> Snapshot:
        """What the bucket holds; empty (the node starts with its file) when NATS is not reachable within a
        few request timeouts, in which case the records arrive as changes once it is."""
        self._spawn(self._supervise())
        try:
            await asyncio.wait_for(self._synced.wait(), self._config.request_timeout * 3)
        except TimeoutError:
            log.warning("%s: starting with the configuration file's entities only", _UNREACHABLE)
        records = list(self._mirror.values())
        return Snapshot(
            tuple(r for r in records if isinstance(r, EntityRecord)),
            tuple(r for r in records if isinstance(r, RuleRecord)),
        )

    async def put_entity(self, record: EntityRecord) -> None:
        """Create or replace a hybrid connection (every node sees it)."""
        await self._write(entity_key(record.path), record)

    async def delete_entity(self, path: str) -> bool:
        """Delete a hybrid connection and its rules, the rules first; False if it did not exist."""
        scope = path.lower()
        for key, record in list(self._mirror.items()):
            if isinstance(record, RuleRecord) and record.key[0] == scope:
                await self._write(key, None)
        return await self._write(entity_key(path), None)

    async def put_rule(self, record: RuleRecord) -> None:
        """Create or replace an authorization rule (every node sees it)."""
        await self._write(rule_kv_key(*record.key), record)

    async def delete_rule(self, scope: str, name: str) -> bool:
        """Delete an authorization rule; False if it did not exist."""
        return await self._write(rule_kv_key(*rule_key(scope, name)), None)

    async def close(self) -> None:
        """Stop following the bucket and disconnect."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._nc is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await asyncio.wait_for(self._nc.close(), self._config.request_timeout)

    # --- writes ---

    async def _write(self, key: str, record: Record | None) -> bool:
        """Put (or delete, ``record`` None) one entry and wait until this node's mirror shows it.

        Returns:
            False for a delete of an entry that did not exist.

        Raises:
            ServerBusy: NATS is out of reach.
        """
        kv = self._kv
        if kv is None or self._nc is None or not self._nc.is_connected:
            raise ServerBusy(f"{_UNREACHABLE}; try again when it is back.")
        if record is None and key not in self._mirror:
            return False
        try:
            if record is None:
                await kv.delete(key)
            else:
                await kv.put(key, encode(record))
        except (TimeoutError, nats.errors.Error) as exc:
            raise ServerBusy(f"{_UNREACHABLE} ({type(exc).__name__}).") from None
        await self._until(lambda: self._mirror.get(key) == record)
        return True

    async def _until(self, shown: Callable[[], bool]) -> None:
        # The write took effect in the bucket; if the watcher is slow the caller still gets its answer, and
        # the change arrives a moment later.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._config.request_timeout), self._applied:
                await self._applied.wait_for(shown)

    # --- following the bucket ---

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self) -> None:
        self._nc = await connect(
            self._config, f"hyco-{self._node_id}-store", reconnected=self._on_reconnected
        )
        self._resync.set()
        while True:
            await self._resync.wait()
            self._resync.clear()
            try:
                await self._sync()
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                log.warning("reading the cluster's entities failed (%s); retrying", exc)
                await asyncio.sleep(RETRY_SECONDS)
                self._resync.set()

    async def _on_reconnected(self) -> None:
        self._resync.set()

    async def _sync(self) -> None:
        """(Re)open the bucket and its watcher; report what changed while this node was not following."""
        assert self._nc is not None
        js = self._nc.jetstream(timeout=self._config.request_timeout)
        try:
            kv = await js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(
                bucket=BUCKET, history=1, storage=StorageType.FILE, replicas=self._config.replicas
            )
        watcher = await kv.watchall()
        seen: dict[str, Record] = {}
        while (entry := await watcher.updates(self._config.request_timeout * 3)) is not None:  # type: ignore[no-untyped-call]
            if entry.operation not in ("DEL", "PURGE") and entry.value is not None:
                record = self._decode(entry.key, entry.value)
                if record is not None:
                    seen[entry.key] = record
        for key in set(self._mirror) | set(seen):
            await self._set(key, seen.get(key))
        self._kv = kv
        self._synced.set()
        self._spawn(self._follow(watcher))

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:
                continue
            if entry.operation in ("DEL", "PURGE") or entry.value is None:
                await self._set(entry.key, None)
            elif (record := self._decode(entry.key, entry.value)) is not None:
                await self._set(entry.key, record)

    async def _set(self, key: str, record: Record | None) -> None:
        was = self._mirror.get(key)
        if record == was:
            return
        if record is None:
            del self._mirror[key]
        else:
            self._mirror[key] = record
        basis = was if was is not None else record
        assert basis is not None
        self.notify(_change(record, basis))
        async with self._applied:
            self._applied.notify_all()

    @staticmethod
    def _decode(key: str, value: bytes) -> Record | None:
        try:
            return decode(key, value)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring entry %s of the cluster's entities: %s", key, exc)
            return None
