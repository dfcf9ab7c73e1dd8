"""Stream forwarding: a WebSocket sender meets a listener (protocol.md 3, design.md data flow steps 2-5).

1. :meth:`StreamForwarder.connect` parks the sender under a fresh rendezvous id (``rendezvous``), asks the
   router to get an ``accept`` naming that id to one listener, and waits ``accept_timeout`` for the answer.
2. :meth:`StreamForwarder.accept` serves the listener's dial of the address: a rejection is handed to the
   sender (who gets the listener's status and reason; the listener gets 410), an acceptance completes both
   upgrades and starts a :class:`~hyco.server.splice.Splice`.
3. Splices run as tasks owned by the forwarder, so shutdown can ask them all to close.

Every path out of :meth:`connect` (accepted, rejected, timed out, sender gone, listener gone, failure)
releases the sender's admission slot and rendezvous entry; a listener that dialed is never left waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from hyco.exceptions import ConnectionLost, EndpointNotFound, RelayError
from hyco.protocol import messages
from hyco.protocol.uri import Action, WebSocketTarget, build_rendezvous_address
from hyco.server.answer import HttpAnswer
from hyco.server.capacity import Capacity
from hyco.server.config import Limits
from hyco.server.engine import SpliceHandshake
from hyco.server.metrics import LiveConnection, RelayMetrics
from hyco.server.peer import Peer, PeerGone
from hyco.server.registry import HybridConnection
from hyco.server.rendezvous import Arrival, PendingConnection, Rejection, RendezvousTable
from hyco.server.router import Delivery, ListenerCriteria, Router
from hyco.server.splice import Splice, SpliceResult

__all__ = ["StreamForwarder"]

log = logging.getLogger("hyco.relay")

SB_AUTH_HEADER = "ServiceBusAuthorization"
GOING_AWAY = 1001
#: Seconds the surviving side of a splice gets to answer a Close after its peer vanished.
SPLICE_CLOSE_TIMEOUT = 10.0


def connect_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The sender's headers as the ``accept`` carries them: auth stripped (2.3), repeats comma-joined.

    Raises:
        RelayError: 400, a header value no ``accept`` can carry (``messages.check_deliverable_headers``).
    """
    joined: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() == SB_AUTH_HEADER.lower():
            continue
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    messages.check_deliverable_headers(joined)
    return joined


def _expire(outcome: asyncio.Future[Arrival | Rejection]) -> None:
    """No listener answered in time: the sender's wait ends with TimeoutError."""
    if not outcome.done():
        outcome.set_exception(TimeoutError())


def _valid_reject_status(status: int) -> bool:
    # A 1xx would leave the sender's handshake waiting for a final answer (101 would even claim success).
    return 200 <= status <= 599


class StreamForwarder:
    """Parks senders, offers them to listeners through the router, and splices the pairs.

    Args:
        router: gets the ``accept`` to a listener.
        limits: accept_timeout, message sizes, ping interval.
        capacity: the admission slots shared with HTTP forwarding.
        authorize_send: checks a sender's token text for Send rights on an entity plus the sender's path
            suffix (raises RelayError 401/403).
        metrics: told when each splice starts and ends.
        id_tag: ends every rendezvous id (see :class:`~hyco.server.rendezvous.RendezvousTable`).
    """

    def __init__(
        self,
        router: Router,
        limits: Limits,
        capacity: Capacity,
        authorize_send: Callable[[SpliceHandshake, str | None, HybridConnection, str], None],
        metrics: RelayMetrics | None = None,
        id_tag: str = "",
    ) -> None:
        self._metrics = metrics
        self._router = router
        self._authorize_send = authorize_send
        self._limits = limits
        self._capacity = capacity
        self._table = RendezvousTable(id_tag)
        self._splices: dict[asyncio.Task[SpliceResult], Splice] = {}

    @property
    def waiting(self) -> int:
        """Senders waiting for a listener's answer."""
        return len(self._table)

    @property
    def active(self) -> int:
        """Running splices."""
        return len(self._splices)

    # --- the sender ---------------------------------------------------------------------------

    async def connect(
        self,
        handshake: SpliceHandshake,
        target: WebSocketTarget,
        hc: HybridConnection,
        suffix: str,
        tracking_id: str,
    ) -> HttpAnswer | None:
        """Serve a sender's ``connect`` until its splice starts (the splice then runs as a task of its own).

        Returns:
            The listener's rejection to answer with, or None once the WebSocket was spliced (or the sender
            vanished during its handshake).

        Raises:
            AuthorizationFailed, Forbidden: the hybrid connection requires a Send token and this is not one.
            EndpointNotFound: no listener (router errors) or none answered within ``accept_timeout``.
            ServerBusy: the admission slots are all taken.
        """
        started = time.monotonic()
        if hc.config.requires_client_authorization:
            token = handshake.headers.get(SB_AUTH_HEADER) or target.token
            self._authorize_send(handshake, token, hc, suffix)
        criteria = ListenerCriteria.from_headers(
            handshake.headers.get("Microsoft-Relay-AllowedListeners"),
            handshake.headers.get("Microsoft-Relay-DisallowedListeners"),
        )
        with self._capacity.hold():
            pending = self._table.open(tracking_id, hc.path + suffix)
            try:
                outcome = await self._offer(handshake, target, hc, suffix, criteria, pending)
            except BaseException:
                pending.abandon("The sender stopped waiting.")
                raise
            finally:
                self._table.discard(pending.id)
        if isinstance(outcome, Rejection):
            log.info(
                "connection rejected by listener: path=%s tracking=%s status=%d",
                hc.path,
                tracking_id,
                outcome.status,
            )
            return HttpAnswer(outcome.status, outcome.description, {"TrackingId": tracking_id})
        try:
            sender = await handshake.accept_spliced(
                "sender",
                protocol=outcome.protocol,
                max_message_size=self._limits.max_message_size,
                heartbeat=self._limits.ping_interval or None,
            )
        except BaseException:
            pending.abandon("The sender went away before the connection was spliced.")
            raise
        task = self._start_splice(hc, tracking_id, handshake.remote, sender, outcome, started)
        pending.deliver(task)
        # The splice runs on its own (the engine took the connection from the HTTP server): returning frees
        # the handler's request and tasks.
        return None

    async def _offer(
        self,
        handshake: SpliceHandshake,
        target: WebSocketTarget,
        hc: HybridConnection,
        suffix: str,
        criteria: ListenerCriteria,
        pending: PendingConnection,
    ) -> Arrival | Rejection:
        headers = connect_headers(handshake.headers)
        peer = handshake.peername
        remote = messages.RemoteEndpoint(*peer) if peer else None

        def build(delivery: Delivery) -> tuple[messages.Command, None]:
            address = build_rendezvous_address(
                delivery.base_url, hc.path + suffix, target.app_query, Action.ACCEPT, pending.id
            )
            accept = messages.Accept(
                address=address, id=pending.tracking_id, connect_headers=headers, remote_endpoint=remote
            )
            messages.check_accept_size(accept)  # 431 rather than an accept official listeners cannot read
            return accept, None

        await self._router.dispatch(hc, criteria, build)
        outcome = pending.outcome
        # One timer on the outcome itself, no timeout scope or shield: it fails the outcome unless the
        # listener answered first (a sender that goes away cancels it, as abandon() would).
        timer = asyncio.get_running_loop().call_later(self._limits.accept_timeout, _expire, outcome)
        try:
            return await outcome
        except TimeoutError:
            raise EndpointNotFound(
                "None of the connected listeners accepted the connection within the allowed timeout."
            ) from None
        finally:
            timer.cancel()

    def _start_splice(
        self,
        hc: HybridConnection,
        tracking_id: str,
        remote: str,
        sender: Peer,
        arrival: Arrival,
        started: float,
    ) -> asyncio.Task[SpliceResult]:
        splice = Splice(sender, arrival.peer, close_timeout=SPLICE_CLOSE_TIMEOUT)
        log.info(
            "connection accepted: path=%s tracking=%s from=%s in %.0f ms",
            hc.path,
            tracking_id,
            remote,
            (time.monotonic() - started) * 1000,
        )
        task = asyncio.ensure_future(splice.run())
        self._splices[task] = splice
        connection = LiveConnection(hc.path, tracking_id, remote, time.time(), splice.moved)
        if self._metrics is not None:
            self._metrics.splice_started(connection, time.monotonic() - started)

        def _done(finished: asyncio.Task[SpliceResult]) -> None:
            self._splices.pop(finished, None)
            if self._metrics is not None:
                self._metrics.splice_ended(connection)
            if finished.cancelled():
                return
            exc = finished.exception()
            if exc is not None:
                log.error("connection %s on %s failed: %r", tracking_id, hc.path, exc)
                return
            result = finished.result()
            how = f"{result.vanished} vanished" if result.vanished else f"closed by {result.first_to_close}"
            log.info(
                "connection ended: path=%s tracking=%s sent=%d received=%d after %.1f s (%s, code %s)",
                hc.path,
                tracking_id,
                result.bytes_a_to_b,
                result.bytes_b_to_a,
                time.monotonic() - started,
                how,
                result.close_code,
            )

        task.add_done_callback(_done)
        return task

    # --- the listener's dial (3.2, 3.3) ------------------------------------------------------

    async def accept(self, handshake: SpliceHandshake, target: WebSocketTarget) -> HttpAnswer | None:
        """Serve a listener's dial of a rendezvous address until the splice starts.

        Returns:
            410 after a rejection was delivered (the listener treats it as success), else None.

        Raises:
            RelayError: 403 when the address is unknown, used, expired, or names another path.
        """
        pending = self._table.claim(target.id, target.path)
        if pending is None:
            raise RelayError(
                "The rendezvous address is unknown, was already used, or expired (the sender stopped "
                "waiting); the listener accepted too late.",
                http_status=403,
            )
        if target.status_code is not None:
            status, description = target.status_code, target.status_description or "Rejected by the listener"
            if not _valid_reject_status(status):
                status, description = (
                    502,
                    f"The listener rejected the connection with invalid status {status}.",
                )
            pending.resolve(Rejection(status, description))
            return HttpAnswer(410, "Gone", text="The rejection was delivered to the sender.")
        protocol = handshake.offered_protocol
        listener = await handshake.accept_spliced(
            "listener",
            protocol=protocol,
            max_message_size=self._limits.max_message_size,
            heartbeat=self._limits.ping_interval or None,
        )
        if not pending.resolve(Arrival(listener, protocol)):
            await self._turn_away(listener, "The sender stopped waiting.")
            return None
        try:
            await pending.spliced  # the splice then runs on its own
        except ConnectionLost as exc:
            await self._turn_away(listener, str(exc))
        return None

    @staticmethod
    async def _turn_away(listener: Peer, reason: str) -> None:
        with contextlib.suppress(PeerGone):
            await listener.send_close(GOING_AWAY, reason)
        listener.abort()

    # --- lifecycle ---------------------------------------------------------------------------

    async def shutdown(self, code: int, reason: str, timeout: float) -> None:
        """Ask every splice to close, wait up to ``timeout`` for them to finish, then cut the rest."""
        closing = [splice.shutdown(code, reason) for splice in list(self._splices.values())]
        if closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), timeout)
        if self._splices:
            await asyncio.wait(list(self._splices), timeout=timeout)
        for task in list(self._splices):
            task.cancel()
