"""The cluster's listener directory as this node last saw it: leases and nodes from the shared KV bucket.

Pure bookkeeping, no I/O: :class:`~hyco.server.routing.cluster.ClusterRouter` feeds it every change its KV
watcher sees (:meth:`Directory.apply`) and asks it which listeners hold a path, which of the path's slots are
free, and which nodes are alive. Keys in the bucket:

* ``n.{node}`` -> ``{"url": public_url}``: a node's presence;
* ``l.{path hex}.{slot}`` -> ``{"node": node, "listener": listener id}``: one of the path's listener slots
  (``slot`` < ``max_listeners``), created only if absent, so the cap holds across nodes without a lock.

The bucket has a bucket-level TTL (works on every JetStream version): an entry the owner stops refreshing
disappears from the bucket without a notification, so the directory ages entries out itself, ``lease_seconds``
after they were written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Directory", "Lease", "lease_key", "node_key"]


def _path_token(path: str) -> str:
    # Entity paths may hold '/' and '.', which KV keys treat as separators: hex keeps one token per path.
    return path.lower().encode().hex()


def _path_of(token: str) -> str:
    try:
        return bytes.fromhex(token).decode("utf-8", "replace")
    except ValueError:
        return ""


def lease_key(path: str, slot: int) -> str:
    """The KV key of listener slot ``slot`` of ``path``."""
    return f"l.{_path_token(path)}.{slot}"


def node_key(node: str) -> str:
    """The KV key of a node's presence."""
    return f"n.{node}"


def lease_value(node: str, listener_id: str, remote: str = "", since: float = 0.0) -> bytes:
    """The KV value of a listener lease: who holds it, and (for operators) from where and since when."""
    return json.dumps({"node": node, "listener": listener_id, "remote": remote, "since": since}).encode()


def node_value(url: str) -> bytes:
    """The KV value of a node's presence."""
    return json.dumps({"url": url}).encode()


@dataclass(frozen=True, slots=True)
class Lease:
    """A listener held by a node."""

    key: str
    node: str
    listener_id: str
    expires: float
    #: The hybrid connection's path (lower case), the listener's address and when it came online.
    path: str = ""
    remote: str = ""
    since: float = 0.0


class Directory:
    """Leases and nodes by key, each expiring ``lease_seconds`` after it was written.

    Args:
        lease_seconds: the bucket's TTL.
        now: wall-clock seconds (entries carry the time the NATS server stored them).
    """

    def __init__(self, lease_seconds: float, now: Callable[[], float]) -> None:
        self._ttl = lease_seconds
        self._now = now
        self._leases: dict[str, dict[str, Lease]] = {}  # path token -> key -> lease
        self._nodes: dict[str, tuple[str, float]] = {}  # node -> (url, expires)

    def apply(self, key: str, value: bytes | None, written_at: float) -> None:
        """Record a put (``value``) or a delete/purge (``value`` None) seen on the bucket; bad entries are
        ignored (the bucket is shared, a newer hyco may write more)."""
        kind, _, rest = key.partition(".")
        expires = written_at + self._ttl
        try:
            data = json.loads(value) if value else None
        except ValueError:
            data = None
        if kind == "n":
            if isinstance(data, dict) and isinstance(data.get("url"), str):
                self._nodes[rest] = (data["url"], expires)
            else:
                self._nodes.pop(rest, None)
        elif kind == "l":
            token = rest.rpartition(".")[0]
            if isinstance(data, dict) and isinstance(data.get("node"), str):
                lease = Lease(
                    key,
                    data["node"],
                    str(data.get("listener", "")).lower(),
                    expires,
                    _path_of(token),
                    str(data.get("remote", "")),
                    float(data.get("since", 0.0)) if isinstance(data.get("since"), int | float) else 0.0,
                )
                self._leases.setdefault(token, {})[key] = lease
            else:
                self.forget(key)

    def forget(self, key: str) -> None:
        """Drop one lease."""
        token = key.partition(".")[2].rpartition(".")[0]
        slots = self._leases.get(token)
        if slots is not None:
            slots.pop(key, None)
            if not slots:
                del self._leases[token]

    def forget_node(self, node: str) -> list[str]:
        """Drop a node and every lease it holds; returns the lease keys dropped."""
        self._nodes.pop(node, None)
        dropped = [
            lease.key for slots in self._leases.values() for lease in slots.values() if lease.node == node
        ]
        for key in dropped:
            self.forget(key)
        return dropped

    def listeners(self, path: str) -> list[Lease]:
        """The live leases of ``path``."""
        now = self._now()
        return [lease for lease in self._leases.get(_path_token(path), {}).values() if lease.expires > now]

    def all_listeners(self) -> list[Lease]:
        """Every live lease, of every path."""
        now = self._now()
        return [lease for leases in self._leases.values() for lease in leases.values() if lease.expires > now]

    def free_slots(self, path: str, limit: int) -> list[int]:
        """Slot numbers below ``limit`` that no live lease holds (the bucket has the final word)."""
        taken = {lease.key for lease in self.listeners(path)}
        return [slot for slot in range(limit) if lease_key(path, slot) not in taken]

    def nodes(self) -> dict[str, str]:
        """Live nodes and their public URLs."""
        now = self._now()
        return {node: url for node, (url, expires) in self._nodes.items() if expires > now}

    def listener_count(self) -> int:
        """Live leases over all paths."""
        now = self._now()
        return sum(1 for slots in self._leases.values() for lease in slots.values() if lease.expires > now)
