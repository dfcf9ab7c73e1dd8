"""A relay node in a cluster: listener leases in NATS JetStream KV, deliveries to other nodes over NATS
request/reply (docs/cluster.md; design.md "Cluster").

Theory of operation:

* Every listener's control channel on this node holds a **lease**, one of its path's ``max_listeners`` slots
  in the shared KV bucket (:mod:`~hyco.server.routing.directory`). A slot is taken with a create-if-absent, so
  the 25-listener cap holds across nodes; it is refreshed every third of ``lease_seconds``, deleted as soon
  as the channel ends, and expires by the bucket's TTL when the node dies.
* A KV watcher mirrors the bucket into a :class:`~hyco.server.routing.directory.Directory`, so choosing a
  listener costs no NATS round trip. :meth:`ClusterRouter.dispatch` draws at random among this node's own
  channels and the live leases of other nodes, filtered by AllowedListeners/DisallowedListeners.
* A listener on another node gets the command as **one NATS request** to that node's subject
  ``hyco.node.{id}``; the owner writes it to the listener's control channel and replies ``ok`` (or ``gone``:
  no such listener there, try the next). The command's address names **this** node, so the listener dials
  back here and no stream byte crosses between nodes. A small HTTP request travels whole (with its inline
  body, at most 64 KiB); the owner sends the listener's control-channel ``response`` back to this node on
  ``hyco.response.{id}``. A large response comes over the request rendezvous, which names this node.
  "No responders" means the node is gone: its leases are dropped and the next candidate is tried. A
  timeout means the outcome is unknown: the sender keeps waiting, its rendezvous id stays single-use and
  expires with ``accept_timeout``.
* Without NATS (not reachable, or lost) the node keeps serving pairs whose listener is local and refuses what
  it cannot route, and new listeners, with 503 and the reason; once NATS is back it re-announces itself and
  re-takes its leases (a restarted NATS server may have lost the bucket).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import StorageType
from nats.js.kv import KeyValue

from hyco.exceptions import (
    ConnectionLost,
    EndpointNotFound,
    InvalidConfig,
    QuotaExceeded,
    RemoteProtocolError,
    ServerBusy,
)
from hyco.protocol import messages
from hyco.server.config import ClusterConfig, check_node_id
from hyco.server.registry import HybridConnection, ListenerHandle, Registry
from hyco.server.router import BuildCommand, Delivery, ListenerCriteria, NoListenerConnected, qualifying
from hyco.server.routing.directory import Directory, Lease, lease_key, lease_value, node_key, node_value
from hyco.server.routing.natsconn import RETRY_SECONDS, connect

__all__ = ["ClusterRouter", "node_identity"]

log = logging.getLogger("hyco.cluster")

BUCKET = "hyco_leases"
NODE_ID_FILE = "node-id"
_PATH_HEADER = "Hyco-Path"
_LISTENER_HEADER = "Hyco-Listener"
#: On a delivery: the length of the command's JSON (an inline body follows it); the node to answer.
_COMMAND_LENGTH_HEADER = "Hyco-Command-Length"
_FROM_HEADER = "Hyco-From"
_OK, _GONE = b"ok", b"gone"
_UNREACHABLE = "This relay node cannot reach the cluster (NATS); "


#: Seconds a node remembers where to send the response to another node's HTTP request (the longest
#: request_timeout a hybrid connection is likely to have; a later response is dropped, the sender got 504).
ANSWER_WINDOW = 600.0


def _response_subject(node: str) -> str:
    return f"hyco.response.{node}"


def node_identity(config: ClusterConfig, data_dir: Path | None) -> str:
    """This node's id: ``config.node_id``, else the one kept in ``data_dir/node-id`` (made on first use).

    Raises:
        InvalidConfig: the file cannot be read or written, or holds an invalid id.
    """
    if config.node_id:
        return config.node_id
    path = (data_dir or Path()) / NODE_ID_FILE
    try:
        if path.exists():
            return check_node_id(path.read_text(encoding="utf-8").strip(), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        node_id = uuid.uuid4().hex[:12]
        path.write_text(node_id + "\n", encoding="utf-8")
        return node_id
    except OSError as exc:
        raise InvalidConfig(f"cannot keep the cluster node id in {str(path)!r}: {exc}") from None


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _written_at(created: Any) -> float:
    stamp = getattr(created, "timestamp", None)
    return float(stamp()) if callable(stamp) else time.time()


class ClusterRouter:
    """Routes senders to listeners anywhere in the cluster (implements :class:`~hyco.server.router.Router`).

    Args:
        config: the ``[cluster]`` settings.
        registry: this node's hybrid connections and their local channels.
        node_id: this node's id (see :func:`node_identity`).
        max_listeners: listener slots per hybrid connection, cluster-wide.
        on_response: takes an HTTP ``response`` (and body) that another node's listener sent for a request
            from this node; False for an unknown request.
    """

    def __init__(
        self,
        config: ClusterConfig,
        registry: Registry,
        *,
        node_id: str,
        max_listeners: int,
        on_response: Callable[[messages.Response, bytes | None], bool] = lambda r, b: False,
    ) -> None:
        self._config = config
        self._registry = registry
        self.node_id = node_id
        self._max_listeners = max_listeners
        self._node_url = ""
        self._directory = Directory(config.lease_seconds, time.time)
        self._nc: NatsClient | None = None
        self._kv: KeyValue | None = None
        self._joined = False
        self._refused: str | None = None
        self._held: dict[str, tuple[bytes, int]] = {}  # lease key -> (value, revision)
        self._rejoin = asyncio.Event()
        self._first_join: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: KeyValue.KeyWatcher | None = None
        self._closing = False
        self._on_response = on_response
        #: HTTP requests delivered here for other nodes: request id -> (node that asked, when it expires).
        self._answer_to: dict[str, tuple[str, float]] = {}

    @property
    def subject(self) -> str:
        """Where other nodes send this node's deliveries."""
        return f"hyco.node.{self.node_id}"

    @property
    def connected(self) -> bool:
        """Whether this node can route through the cluster now."""
        return self._joined and self._nc is not None and self._nc.is_connected

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def start(self, node_url: str) -> None:
        """Join the cluster as the node reachable at ``node_url``; returns after the first attempt (the node
        serves local pairs meanwhile if NATS is down, and keeps trying).

        Raises:
            InvalidConfig: ``node_url`` is a loopback address while other nodes are on other hosts.
        """
        self._node_url = node_url
        self._first_join = asyncio.get_running_loop().create_future()
        self._spawn(self._supervise())
        self._spawn(self._refresh_loop())
        await asyncio.wait({self._first_join}, timeout=self._config.request_timeout * 3)
        if self._first_join.done() and self._first_join.exception() is not None:
            await self.close()
            raise self._first_join.exception()  # type: ignore[misc]

    async def close(self) -> None:
        """Release this node's leases and presence at once (senders go to other nodes), then disconnect."""
        if self._closing:
            return
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.connected and self._kv is not None:
            keys = [*self._held, node_key(self.node_id)]
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                async with asyncio.timeout(self._config.request_timeout):
                    await asyncio.gather(*(self._kv.delete(k) for k in keys), return_exceptions=True)
        self._held.clear()
        self._joined = False
        if self._nc is not None:
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await asyncio.wait_for(self._nc.close(), self._config.request_timeout)

    def health(self) -> dict[str, object]:
        """The ``cluster`` member of ``/$health``."""
        if self._refused:
            state = "refused"
        elif self.connected:
            state = "connected"
        elif self._nc is not None and self._nc.is_reconnecting:
            state = "reconnecting"
        else:
            state = "disconnected"
        return {
            "node_id": self.node_id,
            "node_url": self._node_url,
            "nats": state,
            "nodes_seen": len(self._directory.nodes()) if self.connected else 1,
            "listeners_seen": self._directory.listener_count() if self.connected else None,
        }

    def remote_listeners(self) -> list[Lease]:
        """The listeners other nodes hold, as this node last saw the bucket (none while NATS is away)."""
        if not self.connected:
            return []
        return [lease for lease in self._directory.all_listeners() if lease.node != self.node_id]

    def listener_count(self, hc: HybridConnection) -> int:
        """``hc``'s listeners in the whole cluster: this node's channels and other nodes' leases."""
        if not self.connected:
            return len(hc.listeners)
        others = sum(1 for lease in self._directory.listeners(hc.path) if lease.node != self.node_id)
        return len(hc.listeners) + others

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self) -> None:
        self._nc = await connect(
            self._config,
            f"hyco-{self.node_id}",
            reconnected=self._on_reconnected,
            disconnected=self._on_disconnected,
            failed=self._on_connect_failed,
        )
        await self._nc.subscribe(self.subject, cb=self._on_deliver)
        await self._nc.subscribe(_response_subject(self.node_id), cb=self._on_remote_response)
        self._rejoin.set()
        while True:
            await self._rejoin.wait()
            self._rejoin.clear()
            try:
                await self._join()
            except InvalidConfig as exc:
                self._refused = str(exc)
                log.error("not joining the cluster: %s", exc)
                self._note_first_join(exc)
                return
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                log.warning("joining the cluster failed (%s); retrying", exc)
                self._note_first_join(None)
                await asyncio.sleep(RETRY_SECONDS)
                self._rejoin.set()
            else:
                self._note_first_join(None)

    def _note_first_join(self, exc: Exception | None) -> None:
        if self._first_join is not None and not self._first_join.done():
            if exc is None:
                self._first_join.set_result(None)
            else:
                self._first_join.set_exception(exc)

    async def _join(self) -> None:
        """(Re)open the bucket, mirror it, check the public URL, announce this node and re-take its leases."""
        assert self._nc is not None
        self._joined = False
        js = self._nc.jetstream(timeout=self._config.request_timeout)
        try:
            kv = await js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(
                bucket=BUCKET,
                ttl=self._config.lease_seconds,
                history=1,
                storage=StorageType.MEMORY,
                replicas=self._config.replicas,
            )
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await self._watcher.stop()  # type: ignore[no-untyped-call]
        watcher = await kv.watchall()
        snapshot_timeout = self._config.request_timeout * 3
        while (entry := await watcher.updates(snapshot_timeout)) is not None:  # type: ignore[no-untyped-call]
            self._apply(entry)
        self._check_public_url()
        self._kv, self._watcher = kv, watcher
        self._spawn(self._follow(watcher))
        await kv.put(node_key(self.node_id), node_value(self._node_url))
        for key, (value, _) in list(self._held.items()):
            await self._retake(key, value)
        self._joined = True
        log.info(
            "joined the cluster as node %s (%d nodes seen)", self.node_id, len(self._directory.nodes()) + 1
        )

    def _check_public_url(self) -> None:
        others = {n: u for n, u in self._directory.nodes().items() if n != self.node_id}
        own_host = urlsplit(self._node_url).hostname
        if _is_loopback(self._node_url) and any(
            not _is_loopback(url) and urlsplit(url).hostname != own_host for url in others.values()
        ):
            raise InvalidConfig(
                f"this node's public URL {self._node_url} is a loopback address, but other nodes of the "
                "cluster are on other hosts: their listeners could not dial back to it. Set --public-url "
                "(server.public_url) to an address the other nodes' listeners can reach."
            )

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is not None:
                self._apply(entry)

    def _apply(self, entry: KeyValue.Entry) -> None:
        value = None if entry.operation in ("DEL", "PURGE") else entry.value
        self._directory.apply(entry.key, value, _written_at(entry.created))

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("%sserving local listeners only until it is back", _UNREACHABLE)

    async def _on_reconnected(self) -> None:
        log.info("NATS connection is back; rejoining the cluster")
        self._rejoin.set()

    def _on_connect_failed(self, exc: BaseException) -> None:
        self._note_first_join(None)
        log.warning("%scannot connect to %s (%s); retrying", _UNREACHABLE, self._config.nats, exc)

    # --- leases --------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(
        self, path: str, listener_id: str, remote: str = "", base_url: str = ""
    ) -> AsyncIterator[None]:
        """Hold one of ``path``'s cluster-wide listener slots for ``listener_id`` (at ``remote``) while the
        block runs (``base_url`` is not needed: addresses name the node where the sender waits).

        Raises:
            QuotaExceeded: every slot is taken (by listeners on any node).
            ServerBusy: NATS is not reachable, so the slot cannot be taken.
        """
        key = await self._acquire(path, listener_id, remote)
        try:
            yield
        finally:
            self._held.pop(key, None)
            self._directory.forget(key)
            if self.connected and self._kv is not None:
                with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                    await self._kv.delete(key)

    async def _acquire(self, path: str, listener_id: str, remote: str) -> str:
        if not self.connected or self._kv is None:
            raise ServerBusy(
                f"{_UNREACHABLE}the listener cannot be registered; it retries, or connect to another node."
            )
        value = lease_value(self.node_id, listener_id, remote, time.time())
        try:
            for slot in self._directory.free_slots(path, self._max_listeners):
                key = lease_key(path, slot)
                try:
                    revision = await self._kv.create(key, value)
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue  # taken meanwhile (or the directory is behind): try the next slot
                self._held[key] = (value, revision)
                self._directory.apply(key, value, time.time())
                return key
        except (TimeoutError, nats.errors.Error) as exc:
            raise ServerBusy(f"{_UNREACHABLE}the listener cannot be registered ({exc}).") from None
        raise QuotaExceeded(
            f"MaximumListenersPerEndpoint: '{path}' already has {self._max_listeners} listeners in the "
            "cluster, the most allowed; close one or use another hybrid connection."
        )

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.lease_seconds / 3)
            if not self.connected or self._kv is None:
                continue
            try:
                await self._kv.put(node_key(self.node_id), node_value(self._node_url))
                for key, (value, revision) in list(self._held.items()):
                    try:
                        self._held[key] = (value, await self._kv.update(key, value, last=revision))
                    except nats.js.errors.KeyWrongLastSequenceError:
                        await self._retake(key, value)
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("refreshing this node's leases failed (%s); retrying", exc)

    async def _retake(self, key: str, value: bytes) -> None:
        """Take ``key`` again after it expired (NATS was out of reach, or restarted)."""
        assert self._kv is not None
        if key not in self._held:
            return  # the channel ended meanwhile
        try:
            self._held[key] = (value, await self._kv.create(key, value))
        except nats.js.errors.KeyWrongLastSequenceError:
            # Another node's listener took the slot while this node was away: the cluster is over its cap
            # until one of them leaves. Keep the listener (it still serves local senders) and retry.
            log.warning("lease %s was taken by another node while this node was away; retrying", key)

    # --- routing ---------------------------------------------------------------------------------------

    async def dispatch(
        self, hc: HybridConnection, criteria: ListenerCriteria, build: BuildCommand
    ) -> Delivery:
        """See :meth:`hyco.server.router.Router.dispatch`; the address names this node, wherever the listener
        is.

        Raises:
            NoListenerConnected, NoListenerMatches: as the protocol says.
            ServerBusy: no local listener qualifies and NATS is out of reach (so other nodes' are unknown).
        """
        connected = self.connected
        candidates: list[ListenerHandle | Lease] = list(hc.listeners)
        if connected:
            candidates += [
                lease for lease in self._directory.listeners(hc.path) if lease.node != self.node_id
            ]
        if not candidates:
            if not connected:
                raise ServerBusy(f"{_UNREACHABLE}no listener on this node can take the connection.")
            raise NoListenerConnected("There are no listeners connected for the endpoint.")
        candidates = qualifying(candidates, criteria)
        for candidate in candidates:
            if isinstance(candidate, Lease):
                delivery = await self._deliver_remote(hc, candidate, build)
            else:
                delivery = await self._deliver_local(candidate, build)
            if delivery is not None:
                return delivery
        if not self.connected:
            raise ServerBusy(f"{_UNREACHABLE}no listener on this node can take the connection.")
        raise NoListenerConnected("There are no listeners connected for the endpoint.")

    async def _deliver_local(self, channel: ListenerHandle, build: BuildCommand) -> Delivery | None:
        # The node's own URL, not the host the listener dialed: that may be a load balancer, whose next
        # connection can land on another node.
        delivery = Delivery(self._node_url, channel.listener_id)
        command, body = build(delivery)
        try:
            await channel.send_with_body(command, body)
        except ConnectionLost:
            return None
        return delivery

    async def _deliver_remote(
        self, hc: HybridConnection, lease: Lease, build: BuildCommand
    ) -> Delivery | None:
        assert self._nc is not None
        delivery = Delivery(self._node_url, lease.listener_id)
        command, body = build(delivery)
        encoded = messages.encode(command).encode()
        try:
            reply = await self._nc.request(
                f"hyco.node.{lease.node}",
                encoded + (body or b""),
                timeout=self._config.request_timeout,
                headers={
                    _PATH_HEADER: hc.path,
                    _LISTENER_HEADER: lease.listener_id,
                    _COMMAND_LENGTH_HEADER: str(len(encoded)),
                    _FROM_HEADER: self.node_id,
                },
            )
        except nats.errors.NoRespondersError:
            log.warning("node %s does not answer (gone); dropping its listeners", lease.node)
            self._forget_node(lease.node)
            return None
        except nats.errors.TimeoutError:
            # The command may or may not have reached the listener: let the sender wait (its rendezvous id is
            # single-use and expires), rather than offer it twice.
            log.warning(
                "node %s did not confirm a delivery within %g s", lease.node, self._config.request_timeout
            )
            return delivery
        except nats.errors.Error as exc:
            log.warning("delivery to node %s failed: %s", lease.node, exc)
            return None
        if reply.data == _OK:
            return delivery
        self._directory.forget(lease.key)
        return None

    def _forget_node(self, node: str) -> None:
        keys = self._directory.forget_node(node)
        kv = self._kv
        if kv is not None and self.connected:

            async def drop() -> None:
                for key in [*keys, node_key(node)]:
                    with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                        await kv.delete(key)

            self._spawn(drop())

    async def _on_deliver(self, msg: Msg) -> None:
        # nats-py runs one subscription's callbacks one after another: a slow listener must not hold the rest.
        self._spawn(self._deliver_here(msg))

    async def _deliver_here(self, msg: Msg) -> None:
        headers = msg.headers or {}
        channel = self._local_channel(headers.get(_PATH_HEADER, ""), headers.get(_LISTENER_HEADER, ""))
        answer = _GONE
        if channel is not None:
            try:
                split = int(headers.get(_COMMAND_LENGTH_HEADER, len(msg.data)))
                command = messages.decode(msg.data[:split])
                body = msg.data[split:] or None
                if isinstance(command, messages.Request) and not command.is_stub and command.id:
                    # A whole HTTP request: its response comes back on this channel, for the asking node.
                    asker = headers.get(_FROM_HEADER, "")
                    self._answer_to[command.id] = (asker, time.monotonic() + ANSWER_WINDOW)
                if isinstance(command, messages.Accept | messages.Request):
                    await channel.send_with_body(command, body)
                    answer = _OK
            except (ConnectionLost, RemoteProtocolError, ValueError) as exc:
                log.debug("delivery for listener %s failed: %s", channel.listener_id, exc)
        with contextlib.suppress(nats.errors.Error):
            await msg.respond(answer)

    # --- HTTP responses for other nodes' requests ---

    def forward_response(self, response: messages.Response, body: bytes | None) -> bool:
        """Send a listener's control-channel ``response`` to the node whose request it answers.

        Returns:
            False when no request from another node has that id (the caller then ignores the response).
        """
        now = time.monotonic()
        while self._answer_to:  # oldest first (one window for all): drop the expired ones
            oldest = next(iter(self._answer_to))
            if self._answer_to[oldest][1] >= now:
                break
            del self._answer_to[oldest]
        target = self._answer_to.pop(response.request_id, None)
        if target is None or self._nc is None or not self.connected:
            return False
        encoded = messages.encode(response).encode()
        self._spawn(self._publish_response(target[0], encoded, body))
        return True

    async def _publish_response(self, node: str, encoded: bytes, body: bytes | None) -> None:
        assert self._nc is not None
        try:
            await self._nc.publish(
                _response_subject(node),
                encoded + (body or b""),
                headers={_COMMAND_LENGTH_HEADER: str(len(encoded))},
            )
        except nats.errors.Error as exc:  # the asking node's sender gets 504 at its request timeout
            log.warning("an HTTP response for node %s was lost: %s", node, exc)

    async def _on_remote_response(self, msg: Msg) -> None:
        headers = msg.headers or {}
        try:
            split = int(headers.get(_COMMAND_LENGTH_HEADER, len(msg.data)))
            response = messages.decode(msg.data[:split])
        except (ValueError, RemoteProtocolError) as exc:
            log.warning("ignoring a malformed HTTP response from another node: %s", exc)
            return
        if isinstance(response, messages.Response):
            self._on_response(response, msg.data[split:] if response.body else None)

    def _local_channel(self, path: str, listener_id: str) -> ListenerHandle | None:
        try:
            hc, suffix = self._registry.find(path)
        except EndpointNotFound:  # an unknown path is simply not here
            return None
        if suffix:
            return None
        return next((ch for ch in hc.listeners if ch.listener_id == listener_id.lower()), None)
