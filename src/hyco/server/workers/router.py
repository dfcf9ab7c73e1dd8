"""Routing across the workers of one host (design.md data flow step 3, with workers for nodes).

Each worker keeps its listeners' control channels. Over the mesh the workers tell each other which listeners
they hold (``up`` / ``down``, and ``hello`` from a worker that (re)started, which the others answer with what
they hold), so that:

* a sender on any worker is routed to a listener drawn at random over **all** workers' listeners: a listener
  on another worker gets its command through that worker (``deliver``, answered ``delivered``); the command's
  address names the sender's worker (its rendezvous id ends with that worker's tag, :func:`~.mesh.tag`), and
  :mod:`.door` hands the listener's dial to it;
* an HTTP response a listener sends on its control channel for another worker's request goes to that worker
  (the request id carries its tag);
* ``max_listeners`` and the management API's ``listenerCount`` count every worker's listeners.

Two listeners that connect on two workers in the same instant may both take the last slot (the directory is
told after the check): the cap can be exceeded by the number of concurrent listener handshakes, never more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import socket
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from hyco.exceptions import ConnectionLost, QuotaExceeded, RelayError, RemoteProtocolError
from hyco.protocol import messages
from hyco.server.metrics import FamilyData
from hyco.server.registry import HybridConnection, ListenerHandle, Registry
from hyco.server.router import BuildCommand, Delivery, ListenerCriteria, NoListenerConnected, qualifying
from hyco.server.store import Change
from hyco.server.workers.mesh import Mesh, worker_of

__all__ = ["RemoteListener", "WorkerRouter"]

log = logging.getLogger("hyco.relay")

#: How long a worker waits for another to confirm it passed a command to its listener.
DELIVER_TIMEOUT = 5.0
#: How long ``/$metrics`` waits for the other workers' figures (a stuck or restarting worker's are left out).
METRICS_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class RemoteListener:
    """A listener whose control channel another worker holds."""

    worker: int
    path: str  # lower case
    listener_id: str
    base_url: str
    remote: str
    since: float


class WorkerRouter:
    """The :class:`~hyco.server.router.Router` of one worker, and its listener directory.

    Args:
        mesh: the links to the other workers.
        registry: this worker's hybrid connections (and their local listeners).
        max_listeners: the per-path cap, over all workers.
        on_response: takes an HTTP response that another worker's listener got for one of this worker's
            requests (as the control channel's ``on_response``).
        serve_socket: serves a connection another worker accepted and handed over.
        on_change: applies a store change another worker made.
        metrics: this worker's metrics (another worker asks for them to answer a scrape).
    """

    def __init__(
        self,
        mesh: Mesh,
        registry: Registry,
        max_listeners: int,
        *,
        on_response: Callable[[messages.Response, bytes | None], bool],
        serve_socket: Callable[[socket.socket], None],
        on_change: Callable[[Change], None],
        metrics: Callable[[], list[FamilyData]] = list,
    ) -> None:
        self._mesh = mesh
        self._registry = registry
        self._max = max_listeners
        self._on_response = on_response
        self._serve_socket = serve_socket
        self._on_change = on_change
        self._metrics = metrics
        self._asked: dict[int, asyncio.Future[list[FamilyData] | None]] = {}
        self._remote: dict[tuple[int, str, str], RemoteListener] = {}  # (worker, path, listener id)
        self._mine: dict[
            tuple[str, str], tuple[str, str, float]
        ] = {}  # (path, id) -> (base url, remote, since)
        self._waiting: dict[int, asyncio.Future[bool]] = {}
        self._sequence = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: Connections other workers accepted and handed to this one (listeners' rendezvous dials).
        self.handed_in = 0

    @property
    def index(self) -> int:
        """This worker's index."""
        return self._mesh.index

    def start(self) -> None:
        """Follow the other workers, and tell them this worker (re)started."""
        self._mesh.start(self._on_message)
        self._mesh.broadcast(("hello",))

    def close(self) -> None:
        """Stop following the mesh; deliveries still waiting fail."""
        self._mesh.close()
        for future in self._waiting.values():
            if not future.done():
                future.set_result(False)
        for asked in self._asked.values():
            if not asked.done():
                asked.set_result(None)

    def publish_change(self, change: Change) -> None:
        """Tell the other workers about a change this worker made to the shared store."""
        self._mesh.broadcast(("change", change))

    async def metrics_of_others(self) -> list[list[FamilyData]]:
        """The other workers' metrics (those that answer within :data:`METRICS_TIMEOUT`)."""
        loop = asyncio.get_running_loop()
        asked: dict[int, asyncio.Future[list[FamilyData] | None]] = {}
        for peer in self._mesh.peers:
            self._sequence += 1
            asked[self._sequence] = self._asked[self._sequence] = loop.create_future()
            if not self._mesh.send(peer, ("metrics?", self._sequence)):
                asked.pop(self._sequence).set_result(None)
        try:
            if asked:
                await asyncio.wait(asked.values(), timeout=METRICS_TIMEOUT)
        finally:
            for sequence in asked:
                self._asked.pop(sequence, None)
        answers = [f.result() for f in asked.values() if f.done()]
        found = [families for families in answers if families is not None]
        if len(found) < len(self._mesh.peers):
            missing = len(self._mesh.peers) - len(found)
            log.warning("/$metrics: %d of %d other workers did not answer", missing, len(self._mesh.peers))
        return found

    # --- the directory ---

    def remote_listeners(self) -> list[RemoteListener]:
        """Listeners the other workers hold."""
        return list(self._remote.values())

    def listener_count(self, hc: HybridConnection) -> int:
        """Listeners of ``hc`` on every worker."""
        return len(hc.listeners) + self._remote_count(hc.path.lower())

    def _remote_count(self, path: str) -> int:
        return sum(1 for key in self._remote if key[1] == path)

    @contextlib.asynccontextmanager
    async def lease(self, path: str, listener_id: str, remote: str, base_url: str) -> AsyncIterator[None]:
        """Count a listener of ``path`` against the cap over all workers; announce it while the block runs.

        Raises:
            QuotaExceeded: ``max_listeners`` listeners are on the workers already.
        """
        key = path.lower()
        hc = self._registry.get(path)
        local = (len(hc.listeners) + hc.reserved) if hc is not None else 1  # includes this one's slot
        if local + self._remote_count(key) > self._max:
            raise QuotaExceeded(
                f"MaximumListenersPerEndpoint: '{path}' already has {self._max} listeners, the most allowed; "
                "close one or use another hybrid connection."
            )
        mine = (path, listener_id)
        self._mine[mine] = (base_url, remote, time.time())
        self._mesh.broadcast(("up", path, listener_id, base_url, remote, self._mine[mine][2]))
        try:
            yield
        finally:
            self._mine.pop(mine, None)
            self._mesh.broadcast(("down", path, listener_id))

    # --- routing ---

    async def dispatch(
        self, hc: HybridConnection, criteria: ListenerCriteria, build: BuildCommand
    ) -> Delivery:
        """See :meth:`hyco.server.router.Router.dispatch`; candidates are every worker's listeners."""
        key = hc.path.lower()
        candidates: list[ListenerHandle | RemoteListener] = list(hc.listeners)
        candidates += [r for k, r in self._remote.items() if k[1] == key]
        if not candidates:
            raise NoListenerConnected("There are no listeners connected for the endpoint.")
        candidates = qualifying(candidates, criteria)
        for candidate in candidates:
            delivery = Delivery(candidate.base_url, candidate.listener_id)
            command, body = build(delivery)
            if isinstance(candidate, RemoteListener):
                if await self._deliver_remote(candidate, command, body):
                    return delivery
                continue
            try:
                await candidate.send_with_body(command, body)
            except ConnectionLost:
                continue
            return delivery
        raise NoListenerConnected("There are no listeners connected for the endpoint.")

    async def _deliver_remote(
        self, listener: RemoteListener, command: messages.Command, body: bytes | None
    ) -> bool:
        self._sequence += 1
        sequence = self._sequence
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[sequence] = future
        try:
            message = ("deliver", sequence, listener.path, listener.listener_id, command, body)
            if self._mesh.send(listener.worker, message):
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(future, DELIVER_TIMEOUT):
                        return True
        finally:
            self._waiting.pop(sequence, None)
        # Gone meanwhile, or its worker is stuck or restarting: do not offer it again.
        self._remote.pop((listener.worker, listener.path, listener.listener_id), None)
        return False

    def forward_response(self, response: messages.Response, body: bytes | None) -> bool:
        """Send a control-channel ``response`` to the worker whose request it answers.

        Returns:
            False when the request id names no other worker.
        """
        worker = worker_of(response.request_id)
        if worker is None or worker == self.index:
            return False
        return self._mesh.send(worker, ("response", response, body))

    # --- what the other workers say ---

    def _on_message(self, peer: int, message: tuple[object, ...], sock: socket.socket | None) -> None:
        kind = message[0]
        if kind == "dial" and sock is not None:
            self.handed_in += 1
            self._serve_socket(sock)
            return
        if sock is not None:  # only a dial carries a socket
            sock.close()
        if kind == "up":
            _, path, listener_id, base_url, remote, since = message
            assert isinstance(path, str) and isinstance(listener_id, str)
            self._know(path)
            key = (peer, path.lower(), listener_id)
            self._remote[key] = RemoteListener(
                peer,
                key[1],
                listener_id,
                str(base_url),
                str(remote),
                float(since),  # type: ignore[arg-type]
            )
        elif kind == "down":
            self._remote.pop((peer, str(message[1]).lower(), str(message[2])), None)
        elif kind == "hello":  # a (re)started worker: forget what its predecessor held, tell it what is here
            for key in [k for k in self._remote if k[0] == peer]:
                del self._remote[key]
            for (path, listener_id), (base_url, remote, since) in self._mine.items():
                self._mesh.send(peer, ("up", path, listener_id, base_url, remote, since))
        elif kind == "deliver":
            task = asyncio.ensure_future(self._deliver_here(peer, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "delivered":
            future = self._waiting.get(int(message[1]))  # type: ignore[call-overload]
            if future is not None and not future.done():
                future.set_result(bool(message[2]))
        elif kind == "response":
            _, response, body = message
            if isinstance(response, messages.Response):
                self._on_response(response, body if isinstance(body, bytes) else None)
        elif kind == "change" and isinstance(message[1], Change):
            self._on_change(message[1])
        elif kind == "metrics?":
            task = asyncio.ensure_future(self._send_metrics(peer, message[1]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "metrics":
            asked = self._asked.get(int(message[1]))  # type: ignore[call-overload]
            if asked is not None and not asked.done() and isinstance(message[2], bytes):
                # Only the workers of this relay hold the links (made by their supervisor before the fork).
                asked.set_result(pickle.loads(zlib.decompress(message[2])))  # noqa: S301

    async def _send_metrics(self, peer: int, sequence: object) -> None:
        """Answer another worker's ``metrics?`` (collected off the event loop: it takes 0.3 s with 2,000 busy
        hybrid connections). Compressed: the answer must fit one mesh message (see docs/architecture.md)."""

        def packed() -> bytes:
            return zlib.compress(pickle.dumps(self._metrics(), protocol=pickle.HIGHEST_PROTOCOL), 1)

        self._mesh.send(peer, ("metrics", sequence, await asyncio.to_thread(packed)))

    def _know(self, path: str) -> None:
        """Register a hybrid connection another worker created on listen, so senders here find it."""
        if self._registry.get(path) is None:
            try:
                self._registry.register(self._registry.find_for_listener(path))
            except RelayError as exc:  # creation is off (the entity is then defined here too), or quota
                log.warning(
                    "hybrid connection %s of another worker not known here: %s", path, exc.description
                )

    async def _deliver_here(self, peer: int, message: tuple[object, ...]) -> None:
        _, sequence, path, listener_id, command, body = message
        channel = self._local_channel(str(path), str(listener_id))
        done = False
        if channel is not None and isinstance(command, messages.Accept | messages.Request):
            try:
                await channel.send_with_body(command, body if isinstance(body, bytes) else None)
                done = True
            except (ConnectionLost, RemoteProtocolError) as exc:
                log.debug("delivery for listener %s failed: %s", listener_id, exc)
        self._mesh.send(peer, ("delivered", sequence, done))

    def _local_channel(self, path: str, listener_id: str) -> ListenerHandle | None:
        hc = self._registry.get(path)
        if hc is None:
            return None
        return next((ch for ch in hc.listeners if ch.listener_id == listener_id), None)
