"""The front door: every request the relay's port receives is classified here and handed to its forwarder
(design.md, "The relay's data flow").

* ``/$health`` answers readiness;
* ``/$hc/{path}?sb-hc-action=listen|connect|accept|request`` are WebSocket upgrades: listeners' control
  channels (:class:`~hyco.server.listeners.ListenerHub`), senders and listeners' dials
  (:class:`~hyco.server.streams.StreamForwarder`), request rendezvous
  (:class:`~hyco.server.httpforward.HttpForwarder`);
* every other path is relayed HTTP (:class:`~hyco.server.httpforward.HttpForwarder`).

Errors are mapped to responses in one place (:meth:`FrontDoor.error_response`) from the status each
:class:`~hyco.exceptions.RelayError` carries, with a reason that says what happened and a tracking id.
Refusals are logged at most once a second per (client address, status), so a client cannot flood the log.
Every WebSocket handshake and HTTP request is charged to its client address's rate (``sources``), except a
listener's dial of a rendezvous address, which also stops counting against its address's connections once
upgraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from hyco.exceptions import InvalidURI, RelayError, ServerBusy
from hyco.protocol.messages import status_description
from hyco.protocol.uri import HC_PREFIX, Action, WebSocketTarget, parse_websocket_target, query_params
from hyco.server.answer import HttpAnswer
from hyco.server.dashboard.inspector import Inspector
from hyco.server.engine import Handshake, ListenHandshake, answer_and_close
from hyco.server.httpforward import HttpForwarder, RelayedRequest, Respond
from hyco.server.listeners import ListenerHub
from hyco.server.management import MANAGEMENT_PREFIX, ManagementApi, is_runtime_information_request
from hyco.server.metrics import RelayMetrics
from hyco.server.registry import HybridConnection, Registry
from hyco.server.sources import RateLimited, SourceLimits
from hyco.server.streams import StreamForwarder
from hyco.server.throttle import Throttle

__all__ = ["FrontDoor", "HttpOutcome", "is_websocket_path", "reason_phrase", "request_tracking_id"]

log = logging.getLogger("hyco.relay")

HEALTH_PATH = "/$health"
METRICS_PATH = "/$metrics"
DASHBOARD_PREFIX = "/$dashboard"
#: Longest path quoted in a refusal's reason phrase (a path can be kilobytes long).
MAX_TRACKED_PATH = 200
_TRACKING_ID = re.compile(r"[0-9A-Za-z-]{1,64}")


def reason_phrase(text: str) -> str:
    """A description made safe for an HTTP status line (no CR/LF or other control characters)."""
    return status_description(text)


def new_tracking_id() -> str:
    """A random GUID-shaped id (uuid4's format without its cost; one is made per request)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def client_tracking_id(ident: str | None) -> str | None:
    """The GUID part of a client's ``sb-hc-id`` (before the first ``_``, protocol.md 1.5), if it is safe to
    echo in headers and logs; None otherwise (the relay then makes its own)."""
    if not ident:
        return None
    head = ident.partition("_")[0]
    return head if _TRACKING_ID.fullmatch(head) else None


def system_tracker(host: str, raw_path: str) -> str:
    """``sb://{host}/{path}`` of what a request named, as Azure's error texts carry it (protocol.md 1.5).

    The .NET SDK puts the reason phrase in its exception message and adds the entity address only when the
    phrase has no tracking id of its own; this keeps the entity path in the message users see.
    """
    path = raw_path.removeprefix(HC_PREFIX) if raw_path.startswith(HC_PREFIX) else raw_path.lstrip("/")
    return f"sb://{host}/{path[:MAX_TRACKED_PATH]}"


def is_websocket_path(raw_path: str) -> bool:
    """Whether a path is one of the ``/$hc/`` WebSocket upgrade paths."""
    return raw_path.startswith(HC_PREFIX) or raw_path == HC_PREFIX.rstrip("/")


def request_tracking_id(raw_query: str) -> str:
    """The tracking id of a request: the client's ``sb-hc-id`` GUID when it sent one, else a fresh one.

    protocol.md 1.5: a client that sent an sb-hc-id finds it in every answer, refusals included (the .NET SDK
    adds its own id to an error only when the relay's text names none).
    """
    return client_tracking_id(query_params(raw_query).get("sb-hc-id")) or new_tracking_id()


@dataclass(slots=True)
class HttpOutcome:
    """How a relayed HTTP request ended: its status (499 until known: the sender went away, nginx's "client
    closed request") and the response body bytes sent."""

    status: int = 499
    sent: int = 0

    def done(self, status: int, sent: int) -> None:
        """The response was written."""
        self.status, self.sent = status, sent


class FrontDoor:
    """The relay's one aiohttp handler.

    Args:
        registry: finds the hybrid connection a path names.
        listeners, streams, http: the forwarders requests are handed to.
        closing: tells whether the relay is shutting down (new requests then get 503).
        sources: per-address limits; every handshake and request is charged to its address's rate.
        uncount: stops counting a connection against its address (a listener's upgraded rendezvous dial).
        management: serves ``/$management/...``, ``/$metrics`` and the SDKs' runtime-information GET.
        metrics: told how each listener, sender and HTTP request ended.
        inspector: records the HTTP requests of inspected hybrid connections.
        dashboard: serves ``/$dashboard`` (an aiohttp handler).
        cluster_health: the ``cluster`` member of ``/$health`` (node, NATS state, nodes seen), if clustered.
        worker_health: with ``--workers N``: members of ``/$health`` that replace or add to this process's
            (``worker``: which worker answered; ``listeners``: every worker's).
    """

    def __init__(
        self,
        registry: Registry,
        listeners: ListenerHub,
        streams: StreamForwarder,
        http: HttpForwarder,
        closing: Callable[[], bool],
        *,
        sources: SourceLimits | None = None,
        uncount: Callable[[asyncio.BaseTransport | None], None] | None = None,
        management: ManagementApi | None = None,
        metrics: RelayMetrics | None = None,
        inspector: Inspector | None = None,
        dashboard: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None,
        cluster_health: Callable[[], dict[str, object]] | None = None,
        worker_health: Callable[[], dict[str, object]] | None = None,
    ) -> None:
        self._registry = registry
        self._listeners = listeners
        self._streams = streams
        self._http = http
        self._closing = closing
        self._sources = sources
        self._uncount = uncount
        self._management = management
        self._metrics = metrics
        self._inspector = inspector
        self._dashboard = dashboard
        self._cluster_health = cluster_health
        self._worker_health = worker_health
        self._refusals = Throttle(interval=1.0)

    def check_open(self) -> None:
        """Raise ServerBusy (503) once the relay is shutting down."""
        if self._closing():
            raise ServerBusy("The relay is shutting down; retry on another node or later.")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one request (aiohttp calls this for every path the lean door hands over)."""
        raw_path = request.rel_url.raw_path
        tracking_id = request_tracking_id(request.rel_url.raw_query_string)
        try:
            self.check_open()
            if raw_path == HEALTH_PATH:
                return web.json_response(self.health())
            if is_websocket_path(raw_path):
                return await self._websocket(request, raw_path, tracking_id)
            self._charge(request.remote or "?")
            if self._management is not None:
                if raw_path == MANAGEMENT_PREFIX or raw_path.startswith(MANAGEMENT_PREFIX + "/"):
                    return await self._management.handle(request)
                if self._dashboard is not None and (
                    raw_path == DASHBOARD_PREFIX or raw_path.startswith(DASHBOARD_PREFIX + "/")
                ):
                    return await self._dashboard(request)
                if raw_path == METRICS_PATH:
                    return await self._management.metrics(request)
                if is_runtime_information_request(request):
                    return await self._management.runtime_information(request, raw_path)
            hc, suffix = self._registry.find_for_sender(raw_path)
            return await self._forward_http(request, hc, suffix, tracking_id)
        except RelayError as exc:
            response = self.error_response(request, exc, tracking_id)
            if exc.http_status == 408:  # the rest of the body is not coming: close, as RFC 9110 15.5.9 says
                with contextlib.suppress(ConnectionError):
                    await answer_and_close(request, response)
            return response

    async def _forward_http(
        self, request: web.Request, hc: HybridConnection, suffix: str, tracking_id: str
    ) -> web.StreamResponse:
        capture = self._inspector.begin(request, hc) if self._inspector is not None else None
        outcome = HttpOutcome()
        try:
            with self._http_observed(hc, request.content_length or 0, outcome):
                response = await self._http.forward(request, hc, suffix, tracking_id)
                # A web.Response is written after the handler returns: its length is its content length.
                outcome.done(response.status, response.body_length or response.content_length or 0)
                return response
        finally:
            if capture is not None and self._inspector is not None:
                self._inspector.finish(capture, outcome.status)

    async def relay_http(
        self, request: RelayedRequest, tracking_id: str, respond: Respond[HttpOutcome]
    ) -> bool:
        """Serve relayed HTTP the lean door read itself (``hyco.server.leanhttp``): the same shutdown check,
        per-source rate, routing, forwarder and metrics as aiohttp's path (:meth:`handle`).

        Args:
            request: a request to a hybrid connection's path (not ``/$...``, not the SDKs' runtime
                information GET: the lean door leaves those to aiohttp).
            tracking_id: the request's tracking id.
            respond: writes the listener's response to the sender; returns its status and body bytes sent.

        Returns:
            False, having done nothing, when the request must go to aiohttp's path instead (its hybrid
            connection is inspected: the inspector records aiohttp requests); True once it was served.

        Raises:
            RelayError: the refusal to answer with.
        """
        self.check_open()
        remote = request.peer[0] if request.peer else "?"
        try:
            hc, suffix = self._registry.find_for_sender(request.raw_path)
        except RelayError:
            self._charge(remote)  # as aiohttp's path charges before it looks (a 429 wins over the 404)
            raise
        if hc.config.inspect and self._inspector is not None:
            return False
        self._charge(remote)
        outcome = HttpOutcome()
        with self._http_observed(hc, request.content_length or 0, outcome):
            answered = await self._http.relay(request, hc, suffix, tracking_id, respond)
            outcome.done(answered.status, answered.sent)
        return True

    @contextlib.contextmanager
    def _http_observed(self, hc: HybridConnection, received: int, outcome: HttpOutcome) -> Iterator[None]:
        """Report a relayed HTTP request to the metrics when it ends, with the status in ``outcome`` (a
        refusal's, or 499 when the sender went away)."""
        started = time.monotonic()
        try:
            yield
        except RelayError as exc:
            outcome.status = exc.http_status
            raise
        finally:
            if self._metrics is not None:
                self._metrics.http_done(
                    hc.path, outcome.status, time.monotonic() - started, received, outcome.sent
                )

    async def _websocket(self, request: web.Request, raw_path: str, tracking_id: str) -> web.StreamResponse:
        handshake = Handshake(request)
        answer = await self.upgrade(handshake, raw_path, request.rel_url.raw_query_string, tracking_id)
        if answer is not None:
            return web.Response(
                status=answer.status,
                reason=reason_phrase(answer.reason),
                headers=answer.headers,
                text=answer.text or None,
            )
        assert handshake.response is not None  # upgrade() raises when it neither answered nor upgraded
        return handshake.response

    async def upgrade(
        self, handshake: ListenHandshake, raw_path: str, raw_query: str, tracking_id: str
    ) -> HttpAnswer | None:
        """Serve a ``/$hc/`` WebSocket upgrade: classify it, charge its source, hand it to its forwarder.

        ``handshake`` is aiohttp's :class:`~hyco.server.engine.Handshake`, or for a ``connect``, an
        ``accept`` or a ``listen`` the lean door's (``hyco.server.door``); request upgrades need aiohttp's.

        Returns:
            The answer to send instead of a 101 (a listener's rejection, the 410 of a delivered rejection),
            or None once the connection was upgraded.

        Raises:
            RelayError: the refusal to answer with (nothing was upgraded).
        """
        try:
            target = parse_websocket_target(raw_path, raw_query)
        except InvalidURI as exc:
            raise RelayError(f"Bad request: {exc.reason}.", http_status=400) from None
        if handshake.headers.get("Upgrade", "").lower() != "websocket":
            raise RelayError(
                "Bad request: /$hc/ URLs take WebSocket upgrades; send plain HTTP requests to "
                "/{hybrid-connection-path} instead.",
                http_status=400,
            )
        dial = target.action in (Action.ACCEPT, Action.REQUEST)
        if not dial:
            self._charge(handshake.remote)
        uncount = self._uncount
        if dial and uncount is not None:
            handshake.on_upgrade = lambda: uncount(handshake.transport)
        answer: HttpAnswer | None = None
        status = 499  # the client went away during its handshake
        try:
            if target.action is Action.CONNECT:
                hc, suffix = self._registry.find_for_sender(target.path)
                answer = await self._streams.connect(handshake, target, hc, suffix, tracking_id)
            elif target.action is Action.ACCEPT:
                answer = await self._streams.accept(handshake, target)
            elif target.action is Action.LISTEN:
                await self._listeners.serve(handshake, target, tracking_id)
            elif not isinstance(handshake, Handshake):
                raise TypeError(f"a {target.action.value} upgrade needs aiohttp's Handshake")  # a bug
            else:
                await self._http.rendezvous(handshake, target.id)
        except RelayError as exc:
            status = exc.http_status
            if not handshake.upgraded:
                raise
            # Once the upgrade is done, errors travel as Close frames (sent by the handler); log and end.
            log.debug("%s %s ended: %s", target.action.value, target.path[:200], exc.description)
        finally:
            self._observe(target, handshake.upgraded, answer.status if answer is not None else status)
        if answer is None and not handshake.upgraded:  # the handler ended without upgrading or answering
            raise RelayError("The client went away during the WebSocket handshake.", http_status=400)
        return answer

    def _charge(self, remote: str) -> None:
        if self._sources is not None:
            self._sources.take(remote)

    def _observe(self, target: WebSocketTarget, upgraded: bool, status: int) -> None:
        """Report how a listener's or a sender's handshake ended (101 once it was upgraded)."""
        if self._metrics is None or target.action not in (Action.LISTEN, Action.CONNECT):
            return
        status = 101 if upgraded else status
        if target.action is Action.LISTEN:
            hc = self._registry.get(target.path)
            # An auto-created entity may be gone by now; a listener that got in named a real one.
            entity = hc.path if hc is not None else (target.path.strip("/") if upgraded else "")
            self._metrics.listener_ended(entity, status)
        else:
            try:
                entity = self._registry.find(target.path)[0].path
            except RelayError:
                entity = ""
            self._metrics.sender_ended(entity, status)

    def error_response(self, request: web.Request, exc: RelayError, tracking_id: str) -> web.Response:
        """The response for a refusal, logged (throttled per client and status)."""
        answer = self.refusal(
            exc, tracking_id, request.method, request.rel_url.raw_path, request.host, request.remote or "?"
        )
        return web.Response(
            status=answer.status,
            reason=answer.reason,
            text=answer.text,
            content_type="application/json",
            headers=answer.headers,
        )

    def refusal(
        self, exc: RelayError, tracking_id: str, method: str, raw_path: str, host: str, remote: str
    ) -> HttpAnswer:
        """The answer to a refused request (a JSON body, reason phrase made safe), logged (throttled per
        client and status)."""
        timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        description = (
            f"{exc.description} TrackingId:{tracking_id}, SystemTracker:{system_tracker(host, raw_path)}, "
            f"Timestamp:{timestamp}"
        )
        log_it, suppressed = self._refusals.check((remote, exc.http_status))
        if log_it:
            level = logging.WARNING if exc.http_status in (401, 403) else logging.INFO
            log.log(
                level,
                "refused %s %s from %s: %d %s%s",
                method,
                raw_path[:200],
                remote,
                exc.http_status,
                exc.description,
                f" ({suppressed} more like it not logged)" if suppressed else "",
            )
        body = json.dumps({"error": {"code": exc.http_status, "message": description}})
        headers = {"TrackingId": tracking_id}
        if exc.http_status == 401:
            # RFC 9110 11.6.1: a 401 names its scheme; Java's HTTP client hides a 401 that does not.
            headers["WWW-Authenticate"] = "SharedAccessSignature"
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        return HttpAnswer(exc.http_status, reason_phrase(description), headers, body)

    def health(self) -> dict[str, Any]:
        """The ``/$health`` body: readiness and live counts."""
        body: dict[str, Any] = {
            "status": "ready",
            "listeners": len(self._listeners),
            "pending_connections": self._streams.waiting,
            "active_connections": self._streams.active,
            "http_requests_in_flight": len(self._http),
        }
        if self._cluster_health is not None:
            body["cluster"] = self._cluster_health()
        if self._worker_health is not None:
            body.update(self._worker_health())
        return body
