"""The relay: one port for WebSocket and HTTP, its lifecycle, and the request handlers.

Front door (``_dispatch``): ``/$health`` answers readiness; ``/$hc/...`` are WebSocket upgrades routed by
``sb-hc-action`` (listen, connect, accept); every other path is relayed HTTP. Errors are mapped to responses
in one place (``_error_response``) from the status each :class:`~hyco.exceptions.RelayError` carries, with a
reason that says what happened and a tracking id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aiohttp import web

from hyco.exceptions import (
    ConnectionLost,
    EndpointNotFound,
    InvalidURI,
    RelayError,
    ServerBusy,
)
from hyco.protocol import messages
from hyco.protocol.sas import Right, SasToken
from hyco.protocol.uri import (
    HC_PREFIX,
    Action,
    WebSocketTarget,
    build_rendezvous_address,
    parse_websocket_target,
    query_params,
)
from hyco.server.auth import SignatureCache, authorize
from hyco.server.config import RelayConfig
from hyco.server.control import GOING_AWAY, ControlChannel
from hyco.server.httpforward import HttpForwarder
from hyco.server.registry import HybridConnection, ListenerHandle, Registry
from hyco.server.rendezvous import Arrival, PendingConnection, Rejection, RendezvousTable
from hyco.server.splice import Splice, SpliceResult
from hyco.server.throttle import Throttle
from hyco.server.websocket import WebSocketPeer, new_websocket

__all__ = ["Relay", "serve"]

log = logging.getLogger("hyco.relay")

HEALTH_PATH = "/$health"
SB_AUTH_HEADER = "ServiceBusAuthorization"
ALLOWED_LISTENERS = "Microsoft-Relay-AllowedListeners"
DISALLOWED_LISTENERS = "Microsoft-Relay-DisallowedListeners"
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_MAX_REASON = 512


def _reason_phrase(text: str) -> str:
    """A description made safe for an HTTP status line (no CR/LF or other control characters)."""
    return _CONTROL_CHARS.sub(" ", text)[:_MAX_REASON]


def _hostname(host_header: str | None) -> str | None:
    if not host_header:
        return None
    try:
        return urlsplit(f"//{host_header}").hostname
    except ValueError:
        return None


def _new_tracking_id() -> str:
    """A random GUID-shaped id (uuid4's format without its cost; one is made per request)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


_TRACKING_ID = re.compile(r"[0-9A-Za-z-]{1,64}")


def _client_tracking_id(ident: str | None) -> str | None:
    """The GUID part of a client's ``sb-hc-id`` (before the first ``_``, protocol.md 1.5), if it is safe to
    echo in headers and logs; None otherwise (the relay then makes its own)."""
    if not ident:
        return None
    head = ident.partition("_")[0]
    return head if _TRACKING_ID.fullmatch(head) else None


def _split_ids(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


class Relay:
    """A running hyco relay. Use :func:`serve` (or :meth:`start` / :meth:`close`).

    Attributes:
        config: the configuration it runs with.
    """

    def __init__(self, config: RelayConfig, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self._ssl = ssl_context
        self._registry = Registry(
            config.hybrid_connections,
            create_on_listen=config.server.create_on_listen,
            max_hybrid_connections=config.limits.max_hybrid_connections,
        )
        self._rendezvous = RendezvousTable()
        self._channels: set[ControlChannel] = set()
        self._splices: dict[asyncio.Task[SpliceResult], Splice] = {}
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._closing = False
        self._bound: tuple[str, int] | None = None
        self._refusals = Throttle(interval=1.0)
        self._signatures = SignatureCache()
        self._http = HttpForwarder(
            lambda req, token, hc, suffix: self._authorize(req, token, hc, Right.SEND, suffix=suffix)
        )

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._bound is None:
            raise RuntimeError("the relay is not started")
        return self._bound[1]

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
        """Bind the port and start serving; returns once the relay accepts connections."""
        app = web.Application(client_max_size=1024**2)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: a sender that hangs up while waiting for a listener cancels its handler,
        # which removes its rendezvous entry (the listener's late dial then gets a clear 403).
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.config.server.host,
            self.config.server.port,
            ssl_context=self._ssl,
            backlog=1024,
        )
        await site.start()
        self._site = site
        # aiohttp has no public accessor for the bound socket; asyncio and uvloop servers both have .sockets
        server = site._server
        sockets: list[socket.socket] = list(getattr(server, "sockets", None) or ())
        self._bound = sockets[0].getsockname()[:2]
        log.info("relay listening on %s", self.url)

    async def close(self) -> None:
        """Stop accepting, close control channels with 1001, let splices finish briefly, then cut them."""
        if self._closing:
            return
        self._closing = True
        timeout = self.config.limits.shutdown_timeout
        try:
            if self._site is not None:
                # Stop listening first; connections the kernel already handed over still get registered
                # (and are closed by the runner's cleanup below) while the channels close.
                await self._site.stop()
            goodbye = "The relay is shutting down."
            closing = [channel.close(GOING_AWAY, goodbye) for channel in list(self._channels)]
            closing += [splice.shutdown(GOING_AWAY, goodbye) for splice in list(self._splices.values())]
            if closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), timeout)
            if self._splices:
                await asyncio.wait(list(self._splices), timeout=timeout)
            for task in list(self._splices):
                task.cancel()
        finally:
            if self._runner is not None:
                await self._runner.cleanup()
            log.info("relay stopped")

    # --- front door ----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        tracking_id = _new_tracking_id()
        try:
            if self._closing:
                raise ServerBusy("The relay is shutting down; retry on another node or later.")
            if raw_path == HEALTH_PATH:
                return self._health()
            if raw_path.startswith(HC_PREFIX) or raw_path == HC_PREFIX.rstrip("/"):
                try:
                    target = parse_websocket_target(raw_path, request.rel_url.raw_query_string)
                except InvalidURI as exc:
                    raise RelayError(f"Bad request: {exc.reason}.", http_status=400) from None
                tracking_id = _client_tracking_id(target.id) or tracking_id
                if request.headers.get("Upgrade", "").lower() != "websocket":
                    raise RelayError(
                        "Bad request: /$hc/ URLs take WebSocket upgrades; send plain HTTP requests to "
                        "/{hybrid-connection-path} instead.",
                        http_status=400,
                    )
                if target.action is Action.LISTEN:
                    return await self._listen(request, target, tracking_id)
                if target.action is Action.CONNECT:
                    return await self._connect(request, target, tracking_id)
                if target.action is Action.ACCEPT:
                    return await self._accept(request, target)
                return await self._http.rendezvous(request, target.id)
            return await self._forward(request, raw_path, tracking_id)
        except RelayError as exc:
            return self._error_response(request, exc, tracking_id)

    def _check_pending(self) -> None:
        limit = self.config.limits.max_pending
        if len(self._rendezvous) + len(self._http) >= limit:
            raise ServerBusy(
                f"ServerBusy: {limit} connections and requests already wait for listeners; retry later."
            )

    async def _forward(self, request: web.Request, raw_path: str, tracking_id: str) -> web.StreamResponse:
        hc, suffix = self._registry.find(raw_path)
        self._check_pending()
        ident = query_params(request.rel_url.raw_query_string).get("sb-hc-id")
        tracking_id = _client_tracking_id(ident) or tracking_id
        allowed = _split_ids(request.headers.get(ALLOWED_LISTENERS))
        disallowed = _split_ids(request.headers.get(DISALLOWED_LISTENERS))
        return await self._http.forward(
            request, hc, suffix, tracking_id, lambda: hc.candidates(allowed, disallowed)
        )

    def _error_response(self, request: web.Request, exc: RelayError, tracking_id: str) -> web.Response:
        timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        description = f"{exc.description} TrackingId:{tracking_id}, Timestamp:{timestamp}"
        remote = request.remote or "?"
        path = request.rel_url.raw_path[:200]
        log_it, suppressed = self._refusals.check((remote, path, exc.http_status))
        if log_it:
            level = logging.WARNING if exc.http_status in (401, 403) else logging.INFO
            log.log(
                level,
                "refused %s %s from %s: %d %s%s",
                request.method,
                path,
                remote,
                exc.http_status,
                exc.description,
                f" ({suppressed} more like it not logged)" if suppressed else "",
            )
        body = json.dumps({"error": {"code": exc.http_status, "message": description}})
        return web.Response(
            status=exc.http_status,
            reason=_reason_phrase(description),
            text=body,
            content_type="application/json",
            headers={"TrackingId": tracking_id},
        )

    def _health(self) -> web.Response:
        listeners = sum(len(hc.listeners) for hc in self._registry.all())
        body = {
            "status": "ready",
            "listeners": listeners,
            "pending_connections": len(self._rendezvous),
            "active_connections": len(self._splices),
            "http_requests_in_flight": len(self._http),
        }
        return web.json_response(body)

    def _authorize(
        self,
        request: web.Request,
        token_text: str | None,
        hc: HybridConnection,
        right: Right,
        *,
        grace: float = 0.0,
        suffix: str = "",
    ) -> SasToken:
        hosts = {h for h in (_hostname(request.host), self._public_host()) if h}
        return authorize(
            token_text,
            right=right,
            entity_path=hc.path,
            entity_rules=hc.config.authorization_rules,
            namespace_rules=self.config.authorization_rules,
            hosts=hosts,
            now=time.time(),
            grace=grace,
            cache=self._signatures,
            requested_path=hc.path + suffix,
        )

    def _public_host(self) -> str | None:
        public = self.config.server.public_url
        return urlsplit(public).hostname if public else None

    def _base_url(self, request: web.Request) -> str:
        """Where listeners reach this node: ``public_url``, else the host the listener itself dialed."""
        public = self.config.server.public_url
        if public:
            return public.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return f"{'wss' if request.secure else 'ws'}://{request.host}"

    # --- listeners: control channel (protocol.md 2) --------------------------------------------

    async def _listen(
        self, request: web.Request, target: WebSocketTarget, tracking_id: str
    ) -> web.StreamResponse:
        hc = self._registry.find_for_listener(target.path)
        token_text = request.headers.get(SB_AUTH_HEADER) or target.token
        token = self._authorize(request, token_text, hc, Right.LISTEN)
        hc = self._registry.register(hc)  # only after the token checked out
        limits = self.config.limits
        ws = new_websocket(
            protocol=None,
            max_message_size=limits.max_control_message_size,
            heartbeat=limits.ping_interval or None,
        )
        # A listener only needs Listen rights at connect time; renewals are checked the same way.
        channel = ControlChannel(
            ws,
            path=hc.path,
            listener_id=tracking_id.lower(),
            base_url=self._base_url(request),
            token=token,
            renew=lambda text: self._authorize(request, text, hc, Right.LISTEN),
            token_grace=limits.token_grace,
            on_response=self._http.on_control_response,
            on_invalid_response=self._http.on_invalid_response,
            send_timeout=limits.accept_timeout,
            transport=request.transport,
        )
        hc.add_listener(channel, limits.max_listeners)  # reserve the slot before the first await
        try:
            await ws.prepare(request)
            self._channels.add(channel)
            log.info(
                "listener online: path=%s listener=%s from=%s (%d connected)",
                hc.path,
                channel.listener_id,
                request.remote,
                len(hc.listeners),
            )
            await channel.run()
        finally:
            hc.remove_listener(channel)
            self._registry.release(hc)
            self._channels.discard(channel)
            if ws.prepared:
                log.info(
                    "listener offline: path=%s listener=%s%s",
                    hc.path,
                    channel.listener_id,
                    f" ({channel.close_reason})" if channel.close_reason else "",
                )
        return ws

    # --- senders (protocol.md 3) ---------------------------------------------------------------

    async def _connect(
        self, request: web.Request, target: WebSocketTarget, tracking_id: str
    ) -> web.StreamResponse:
        started = time.monotonic()
        hc, suffix = self._registry.find(target.path)
        if hc.config.requires_client_authorization:
            token_text = request.headers.get(SB_AUTH_HEADER) or target.token
            self._authorize(request, token_text, hc, Right.SEND, suffix=suffix)
        candidates = hc.candidates(
            _split_ids(request.headers.get(ALLOWED_LISTENERS)),
            _split_ids(request.headers.get(DISALLOWED_LISTENERS)),
        )
        self._check_pending()
        pending = self._rendezvous.open(tracking_id)
        spliced = False
        try:
            await self._offer(request, target, hc, suffix, pending, candidates)
            try:
                outcome = await asyncio.wait_for(
                    asyncio.shield(pending.outcome), self.config.limits.accept_timeout
                )
            except TimeoutError:
                raise EndpointNotFound(
                    "None of the connected listeners accepted the connection within the allowed timeout."
                ) from None
            finally:
                self._rendezvous.discard(pending.id)
            if isinstance(outcome, Rejection):
                log.info(
                    "connection rejected by listener: path=%s tracking=%s status=%d",
                    hc.path,
                    tracking_id,
                    outcome.status,
                )
                return web.Response(
                    status=outcome.status,
                    reason=_reason_phrase(outcome.description),
                    headers={"TrackingId": tracking_id},
                )
            ws = new_websocket(
                protocol=outcome.protocol, max_message_size=self.config.limits.max_message_size
            )
            await ws.prepare(request)
            task = self._start_splice(hc, tracking_id, request, ws, outcome, started)
            pending.spliced.set_result(task)
            spliced = True
            # Shielded: a cancelled handler (peer hung up) must not cancel the splice; it notices by itself.
            await asyncio.shield(task)
            return ws
        finally:
            if not spliced:
                pending.abandon("The sender went away before the connection was spliced.")

    async def _offer(
        self,
        request: web.Request,
        target: WebSocketTarget,
        hc: HybridConnection,
        suffix: str,
        pending: PendingConnection,
        candidates: list[ListenerHandle],
    ) -> None:
        """Send ``accept`` to the first candidate whose control channel takes it."""
        peer = request.transport.get_extra_info("peername") if request.transport else None
        connect_headers: dict[str, str] = {}
        for name, value in request.headers.items():
            if name.lower() == SB_AUTH_HEADER.lower():
                continue  # auth is stripped (protocol.md 2.3)
            connect_headers[name] = f"{connect_headers[name]}, {value}" if name in connect_headers else value
        for channel in candidates:
            accept = messages.Accept(
                address=build_rendezvous_address(
                    channel.base_url, hc.path + suffix, target.app_query, Action.ACCEPT, pending.id
                ),
                id=pending.tracking_id,
                connect_headers=connect_headers,
                remote_endpoint=messages.RemoteEndpoint(str(peer[0]), int(peer[1])) if peer else None,
            )
            try:
                await channel.send(accept)
                return
            except ConnectionLost:
                continue
        raise EndpointNotFound("There are no listeners connected for the endpoint.")

    def _start_splice(
        self,
        hc: HybridConnection,
        tracking_id: str,
        request: web.Request,
        ws: web.WebSocketResponse,
        arrival: Arrival,
        started: float,
    ) -> asyncio.Task[SpliceResult]:
        splice = Splice(
            WebSocketPeer("sender", ws, request),
            WebSocketPeer("listener", arrival.ws, arrival.request),
            close_timeout=10.0,
        )
        log.info(
            "connection accepted: path=%s tracking=%s from=%s in %.0f ms",
            hc.path,
            tracking_id,
            request.remote,
            (time.monotonic() - started) * 1000,
        )
        task = asyncio.ensure_future(splice.run())
        self._splices[task] = splice

        def _done(finished: asyncio.Task[SpliceResult]) -> None:
            self._splices.pop(finished, None)
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

    # --- listeners: rendezvous (protocol.md 3.2, 3.3) -----------------------------------------

    async def _accept(self, request: web.Request, target: WebSocketTarget) -> web.StreamResponse:
        pending = self._rendezvous.claim(target.id)
        if pending is None:
            raise RelayError(
                "The rendezvous address is unknown, was already used, or expired (the sender stopped "
                "waiting); the listener accepted too late.",
                http_status=403,
            )
        if target.status_code is not None:
            description = target.status_description or "Rejected by the listener"
            pending.outcome.set_result(Rejection(target.status_code, description))
            # protocol.md 3.3: the listener's reject dial is answered 410, which it treats as success.
            return web.Response(status=410, reason="Gone", text="The rejection was delivered to the sender.")
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        protocol = offered.split(",")[0].strip() or None
        ws = new_websocket(protocol=protocol, max_message_size=self.config.limits.max_message_size)
        await ws.prepare(request)
        pending.outcome.set_result(Arrival(ws, request, protocol))
        try:
            task = await pending.spliced
        except ConnectionLost as exc:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.close(code=GOING_AWAY, message=str(exc).encode()[:123])
            return ws
        await asyncio.shield(task)
        return ws


@asynccontextmanager
async def serve(config: RelayConfig, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Relay]:
    """Run a relay for the duration of the ``async with`` block.

    Returns only once the relay is listening; ``relay.url`` tells its real address (use port 0 in tests).

    Args:
        config: the relay configuration.
        ssl_context: TLS context for the port, or None for plain ws/http.
    """
    relay = Relay(config, ssl_context=ssl_context)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()
