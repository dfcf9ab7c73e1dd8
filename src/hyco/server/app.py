"""The relay: wiring and lifecycle. What each request goes through is in the modules named below.

Data flow (design.md, "The relay's data flow"): ``frontdoor`` classifies every request -> ``auth`` checks its
token -> ``router`` picks a listener -> ``listeners`` (control channels), ``streams`` (rendezvous and splices)
or ``httpforward`` (relayed HTTP). ``engine`` is the only module that knows the WebSocket library.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from hyco._clock import SYSTEM_CLOCK, Clock
from hyco.protocol import messages
from hyco.protocol.sas import Right, SasToken
from hyco.server import logs
from hyco.server.auth import SignatureCache, authorize
from hyco.server.backlog import BacklogDrain
from hyco.server.buffers import READ_BUFFER, ByteBudget
from hyco.server.capacity import Capacity
from hyco.server.config import RelayConfig
from hyco.server.dashboard.handler import Dashboard
from hyco.server.door import Door
from hyco.server.engine import ConnectionGate, FactorySite, ListenHandshake, SpliceHandshake, bound_address
from hyco.server.frontdoor import FrontDoor
from hyco.server.httpforward import HttpForwarder
from hyco.server.listeners import ConnectedListener, ListenerHub
from hyco.server.management import ManagementApi
from hyco.server.metrics import RelayMetrics
from hyco.server.registry import HybridConnection, Registry
from hyco.server.router import LocalRouter, Router
from hyco.server.sources import SourceLimits
from hyco.server.store import Change, Namespace, Store, open_store
from hyco.server.streams import StreamForwarder
from hyco.server.workers.door import WorkerDoor
from hyco.server.workers.mesh import Mesh, WorkerSeat, tag
from hyco.server.workers.router import WorkerRouter
from hyco.server.workers.store import WorkerStore

if TYPE_CHECKING:
    from hyco.server.routing.cluster import ClusterRouter

__all__ = ["Relay", "serve"]

log = logging.getLogger("hyco.relay")

GOING_AWAY = 1001


def _hostname(host_header: str | None) -> str | None:
    return _host_of(f"//{host_header}") if host_header else None


@functools.lru_cache(maxsize=1024)
def _host_of(url: str) -> str | None:
    """The host name in ``url`` (None if it has none or is malformed); cached: a relay sees few distinct
    Host headers and parses one for every token it checks."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


class Relay:
    """A running hyco relay. Use :func:`serve` (or :meth:`start` / :meth:`close`).

    Args:
        config: the configuration to run with.
        ssl_context: TLS for the port, or None for plain ws/http.
        router: where senders are routed (default: the listeners of this process).
        clock: where token expiry is read and waited for (tests pass ``hyco.testing.FakeClock``).
        store: where entities and rules created at run time are kept (default: the cluster's shared bucket
            on a cluster node, else :func:`open_store`).
        worker: this process is one of several workers behind one port (``hyco relay --workers N``): it
            accepts from the seat's listening socket and meets the other workers over its links
            (hyco.server.workers). The store must be one all workers share (SQLite in one data directory).

    Attributes:
        config: the configuration it runs with.
    """

    def __init__(
        self,
        config: RelayConfig,
        *,
        ssl_context: ssl.SSLContext | None = None,
        router: Router | None = None,
        clock: Clock = SYSTEM_CLOCK,
        store: Store | None = None,
        worker: WorkerSeat | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._ssl = ssl_context
        limits = config.limits
        self._registry = Registry(
            (),
            create_on_listen=config.server.create_on_listen,
            max_hybrid_connections=limits.max_hybrid_connections,
        )
        self._signatures = SignatureCache()
        self._background: set[asyncio.Task[None]] = set()
        self._cluster = self._cluster_router(config) if router is None and config.cluster else None
        store = store if store is not None else self._default_store(config)
        self._seat = worker
        self._mesh = Mesh(worker.index, worker.links) if worker is not None else None
        self._workers: WorkerRouter | None = None
        if self._mesh is not None:
            shared = WorkerStore(store, lambda change: self._publish_change(change))
            store = shared
            self._workers = WorkerRouter(
                self._mesh,
                self._registry,
                limits.max_listeners,
                on_response=lambda response, body: self._http.on_control_response(response, body),
                serve_socket=self._serve_socket,
                on_change=shared.apply_remote,
                metrics=lambda: self.metrics.families(),
            )
        self._worker_door: WorkerDoor | None = None
        self._connecting: set[asyncio.Future[Any]] = set()
        self.namespace = Namespace(
            config,
            store,
            self._registry,
            on_rules_changed=self._signatures.clear,
            close_listeners=self._close_listeners,
        )
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._door: Door | None = None
        self._bound: tuple[str, int] | None = None
        self.metrics = RelayMetrics(self._registry.all)
        router = router or self._cluster or self._workers or LocalRouter()
        id_tag = tag(worker.index) if worker is not None else ""
        capacity = Capacity(limits.max_pending)
        self._http = HttpForwarder(
            router,
            capacity,
            lambda req, token, hc, suffix: self._authorize(req.host, token, hc, Right.SEND, suffix),
            body_timeout=limits.body_timeout,
            buffers=ByteBudget(limits.max_buffered_bytes),
            id_tag=id_tag,
        )
        self._listeners = ListenerHub(
            self._registry,
            limits,
            lambda hs, token, hc, right: self._authorize(hs.host, token, hc, right),
            self._base_url,
            self._on_listener_response,
            self._http.on_invalid_response,
            clock,
            self.metrics,
            **({"lease": self._cluster.lease} if self._cluster else {}),
            **({"lease": self._workers.lease} if self._workers else {}),
        )
        self._sources = SourceLimits(limits.max_connections_per_source, limits.handshake_rate_per_source)
        self._gate = ConnectionGate(self._sources.open_connection, self._sources.close_connection)
        self._streams = StreamForwarder(
            router, limits, capacity, self._authorize_sender, self.metrics, id_tag=id_tag
        )
        self.management = ManagementApi(
            self.namespace,
            self._registry,
            self._authorize_manage,
            config.server.public_url,
            clock.time,
            metrics=self.metrics,
            health=self.health,
            metrics_public=config.server.metrics_public,
            own_url=lambda: self.http_url,
            listener_count=self._listener_count,
            other_metrics=self._workers.metrics_of_others if self._workers else None,
        )
        dashboard = Dashboard(
            self.management,
            self.cluster_listeners,
            self._cluster.node_id if self._cluster else socket.gethostname(),
        )
        self._front_door = FrontDoor(
            self._registry,
            self._listeners,
            self._streams,
            self._http,
            lambda: self._closing,
            sources=self._sources,
            uncount=self._gate.uncount,
            management=self.management,
            metrics=self.metrics,
            inspector=self.management.inspector,
            dashboard=dashboard.handle,
            cluster_health=self._cluster.health if self._cluster else None,
            worker_health=self._worker_health if worker is not None else None,
        )

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._bound is None:
            raise RuntimeError("the relay is not started")
        return self._bound[1]

    @property
    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        """What serves one accepted connection (for ``loop.connect_accepted_socket``); after :meth:`start`."""
        if self._door is None:
            raise RuntimeError("the relay is not started")
        return self._door

    @property
    def url(self) -> str:
        """The WebSocket base URL of this relay as bound, e.g. ``ws://127.0.0.1:9350``."""
        if self._bound is None:
            raise RuntimeError("the relay is not started")
        host = self._bound[0]
        host = f"[{host}]" if ":" in host else host
        return f"{'wss' if self._ssl else 'ws'}://{host}:{self._bound[1]}"

    @property
    def http_url(self) -> str:
        """The HTTP base URL of this relay as bound, e.g. ``http://127.0.0.1:9350``."""
        return "http" + self.url[2:]

    async def start(self) -> None:
        """Load the store, bind the port and start serving; returns once the relay accepts connections."""
        # Tokens never reach the log, and no peer value can forge a log line (docs/relay.md, "Logs").
        logs.install()
        await self.namespace.open()
        app = web.Application(client_max_size=1024**2)
        app.router.add_route("*", "/{tail:.*}", self._front_door.handle)
        # aiohttp serves what the lean door (hyco.server.door) hands over; the door serves senders' connects
        # and listeners' rendezvous dials itself, with the same rules as below.
        # handler_cancellation: a sender that hangs up while waiting for a listener cancels its handler,
        # which removes its rendezvous entry (the listener's late dial then gets a clear 403).
        # keepalive_timeout: a connection gets idle_timeout seconds to send a complete request head, from
        # its start and after each response (slow or silent clients cannot hold sockets).
        self._runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=None,
            keepalive_timeout=self.config.limits.idle_timeout,
            # read_bufsize: a request body buffer stops reading the sender above twice this (buffers.py).
            read_bufsize=READ_BUFFER,
        )
        await self._runner.setup()
        self._gate.install(self._runner)
        assert self._runner.server is not None
        self._door = Door(self._front_door, self._runner.server, self._gate, self.config.limits.idle_timeout)
        if self._seat is not None:
            self._serve_worker(self._seat)
            return
        site = FactorySite(
            self._runner,
            self._door,
            self.config.server.host,
            self.config.server.port,
            ssl_context=self._ssl,
            backlog=1024,
            drain=BacklogDrain(self._serve_socket),
        )
        await site.start()
        self._site = site
        self._bound = bound_address(site)
        log.info("relay listening on %s", self.url)
        if self._cluster is not None:
            try:
                await self._cluster.start(self._node_url())
            except BaseException:
                await self._runner.cleanup()
                raise

    async def close(self) -> None:
        """Stop accepting, close control channels with 1001, let splices finish briefly, then cut them."""
        if self._closing:
            return
        self._closing = True
        timeout = self.config.limits.shutdown_timeout
        goodbye = "The relay is shutting down."
        try:
            if self._site is not None:
                # Stop listening first; connections the kernel already handed over still get registered
                # (and are closed by the runner's cleanup below) while the channels close.
                await self._site.stop()
            if self._worker_door is not None:
                self._worker_door.stop()  # the other workers accept what comes now
            if self._cluster is not None:
                await self._cluster.close()  # leases go first: other nodes stop routing here at once
            await self._listeners.close_all(GOING_AWAY, goodbye)
            await self._streams.shutdown(GOING_AWAY, goodbye, timeout)
            await self._listeners.hang_up_all(timeout)
            if self._workers is not None:
                self._workers.close()
        finally:
            if self._door is not None:
                self._door.close()  # connections still in the lean door's hands
            if self._runner is not None:
                await self._runner.cleanup()
            await asyncio.gather(*self._background, return_exceptions=True)
            await self.namespace.store.close()
            log.info("relay stopped")

    def _serve_worker(self, seat: WorkerSeat) -> None:
        """Accept from the port all workers share, and meet the other workers."""
        assert self._workers is not None and self._mesh is not None
        self._worker_door = WorkerDoor(
            seat.listener, self._mesh, self._serve_socket, self.config.limits.idle_timeout
        )
        self._workers.start()
        self._worker_door.start()
        self._bound = seat.listener.getsockname()[:2]
        log.info("relay worker %d of %d listening on %s", seat.index, seat.count, self.url)

    def _serve_socket(self, sock: socket.socket) -> None:
        """Serve a connection accepted outside the loop's server (a worker's accept loop, another worker's
        hand-over, the backlog drain) with the front door, as the loop's server would."""
        if self._closing or self._door is None:
            sock.close()
            return
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(loop.connect_accepted_socket(self._door, sock, ssl=self._ssl))
        self._connecting.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._connecting.discard)
        task.add_done_callback(_log_failed_connection)

    def _listener_count(self, hc: HybridConnection) -> int:
        """Listeners of ``hc`` on every node of a cluster, every worker, or this relay."""
        counter = self._cluster or self._workers
        return counter.listener_count(hc) if counter is not None else len(hc.listeners)

    def _publish_change(self, change: Change) -> None:
        if self._workers is not None:
            self._workers.publish_change(change)

    def _worker_health(self) -> dict[str, object]:
        """``/$health``'s listeners over every worker, and which worker answered (its own listeners, the
        listeners' dials other workers handed to it)."""
        assert self._seat is not None and self._workers is not None
        own = len(self._listeners)
        return {
            "listeners": own + len(self._workers.remote_listeners()),
            "worker": {
                "index": self._seat.index,
                "workers": self._seat.count,
                "pid": os.getpid(),
                "listeners": own,
                "dials_handed_in": self._workers.handed_in,
            },
        }

    # --- what is going on (operations, tests) -------------------------------------------------

    def health(self) -> dict[str, object]:
        """The ``/$health`` body: readiness and live counts."""
        return self._front_door.health()

    def connected_listeners(self) -> list[ConnectedListener]:
        """Every listener whose control channel is open on this relay."""
        return self._listeners.connected()

    def cluster_listeners(self) -> list[ConnectedListener]:
        """This relay's listeners and, on a cluster node, those the other nodes hold (``node`` set; their
        token expiry and channel number are only known on their own node: 0 here)."""
        local = self._listeners.connected()
        if self._workers is not None:
            here = f"worker-{self._workers.index}"
            return [dataclasses.replace(listener, node=here) for listener in local] + [
                ConnectedListener(r.path, r.listener_id, r.remote, 0.0, 0, r.since, f"worker-{r.worker}")
                for r in self._workers.remote_listeners()
            ]
        if self._cluster is None:
            return local
        node = self._cluster.node_id
        return [dataclasses.replace(listener, node=node) for listener in local] + [
            ConnectedListener(lease.path, lease.listener_id, lease.remote, 0.0, 0, lease.since, lease.node)
            for lease in self._cluster.remote_listeners()
        ]

    async def disconnect_listener(self, listener_id: str, code: int = GOING_AWAY, reason: str = "") -> bool:
        """Close the control channel of the listener whose ``sb-hc-id`` GUID is ``listener_id``.

        Returns:
            False when no such listener is connected.
        """
        return await self._listeners.disconnect(listener_id, code, reason or "Disconnected by the operator.")

    def reload(self, config: RelayConfig) -> None:
        """Take the hybrid connections and rules of a re-read configuration file; connections stay up.

        Entities that left the file are removed (their listeners closed with 1001); changed keys take effect
        at once. Server settings and limits take effect at the next start.
        """
        self.namespace.reseed(config)
        self.config = dataclasses.replace(
            self.config,
            hybrid_connections=config.hybrid_connections,
            authorization_rules=config.authorization_rules,
        )
        log.info("configuration reloaded: %d hybrid connections in the file", len(config.hybrid_connections))

    # --- wiring helpers -----------------------------------------------------------------------

    def _cluster_router(self, config: RelayConfig) -> ClusterRouter:
        # Imported here: the cluster needs the optional nats-py package (the `cluster` extra).
        from hyco.server.routing.cluster import ClusterRouter, node_identity

        assert config.cluster is not None
        return ClusterRouter(
            config.cluster,
            self._registry,
            node_id=node_identity(config.cluster, config.server.data_dir),
            max_listeners=config.limits.max_listeners,
            on_response=lambda response, body: self._http.on_control_response(response, body),
        )

    def _on_listener_response(self, response: messages.Response, body: bytes | None) -> bool:
        """A ``response`` on a control channel: for a request of this node, else (cluster) of another node."""
        if self._http.on_control_response(response, body):
            return True
        if self._workers is not None:
            return self._workers.forward_response(response, body)
        return self._cluster is not None and self._cluster.forward_response(response, body)

    def _default_store(self, config: RelayConfig) -> Store:
        """The cluster's shared bucket on a cluster node (entities and keys made on any node work on all),
        else :func:`open_store`."""
        if self._cluster is None:
            return open_store(config)
        from hyco.server.routing.shared_store import SharedStore

        assert config.cluster is not None
        return SharedStore(config.cluster, self._cluster.node_id)

    def _node_url(self) -> str:
        """Where listeners dial this very node: ``public_url``, else the bound address."""
        public = self.config.server.public_url
        if public:
            return public.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return self.url

    def _authorize(
        self, host: str | None, token_text: str | None, hc: HybridConnection, right: Right, suffix: str = ""
    ) -> SasToken:
        """Check a token for ``right`` on ``hc`` plus the sender's ``suffix`` (a token for a deeper path than
        the one requested does not cover it: protocol.md 5.3)."""
        hosts = {h for h in (_hostname(host), self._public_host()) if h}
        return authorize(
            token_text,
            right=right,
            entity_path=hc.path,
            requested_path=hc.path + suffix,
            entity_rules=hc.config.authorization_rules,
            namespace_rules=self.namespace.namespace_rules,
            hosts=hosts,
            now=self._clock.time(),
            cache=self._signatures,
        )

    def _authorize_sender(
        self, handshake: SpliceHandshake, token_text: str | None, hc: HybridConnection, suffix: str
    ) -> None:
        self._authorize(handshake.host, token_text, hc, Right.SEND, suffix)

    def _authorize_manage(self, request: web.Request, token_text: str | None, scope: str) -> SasToken:
        """Manage rights on the hybrid connection ``scope``, or on the namespace when ``scope`` is ""."""
        hc = self._registry.get(scope) if scope else None
        return authorize(
            token_text,
            right=Right.MANAGE,
            entity_path=scope,
            entity_rules=hc.config.authorization_rules if hc is not None else (),
            namespace_rules=self.namespace.namespace_rules,
            hosts={h for h in (_hostname(request.host), self._public_host()) if h},
            now=self._clock.time(),
            cache=self._signatures,
        )

    def _close_listeners(self, hc: HybridConnection) -> None:
        """Close the channels of a deleted or disabled hybrid connection with 1001 (protocol.md 2.8)."""
        reason = f"The hybrid connection '{hc.path}' was deleted or disabled."
        ids = [lst.listener_id for lst in hc.listeners]
        if not ids:
            return

        async def close_them() -> None:
            for listener_id in ids:
                await self.disconnect_listener(listener_id, GOING_AWAY, reason)

        task = asyncio.ensure_future(close_them())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _public_host(self) -> str | None:
        public = self.config.server.public_url
        return _host_of(public) if public else None

    def _base_url(self, handshake: ListenHandshake) -> str:
        """Where listeners reach this node: ``public_url``, else the host the listener itself dialed."""
        public = self.config.server.public_url
        if public:
            return public.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return f"{'wss' if handshake.secure else 'ws'}://{handshake.host}"


def _log_failed_connection(task: asyncio.Future[Any]) -> None:
    """A handed-over connection that failed before the front door took it (the client went away)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.debug("a connection could not be served: %s", exc)


@asynccontextmanager
async def serve(
    config: RelayConfig,
    *,
    ssl_context: ssl.SSLContext | None = None,
    clock: Clock = SYSTEM_CLOCK,
    worker: WorkerSeat | None = None,
) -> AsyncIterator[Relay]:
    """Run a relay for the duration of the ``async with`` block.

    Returns only once the relay is listening; ``relay.url`` tells its real address (use port 0 in tests).

    Args:
        config: the relay configuration.
        ssl_context: TLS context for the port, or None for plain ws/http.
        clock: where token expiry is read (tests pass ``hyco.testing.FakeClock``).
        worker: run as one worker of ``hyco relay --workers N`` (see :class:`Relay`).
    """
    relay = Relay(config, ssl_context=ssl_context, clock=clock, worker=worker)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()
