"""Serve an ASGI 3 application (FastAPI, Starlette, Django's ASGI handler, ...) through a listener.

::

    from hyco.asgi import serve
    listener = HybridConnectionListener("sb://ns.example/myhc", tp)
    await serve(app, listener)          # until cancelled or the listener stops

Each relayed HTTP request becomes one ASGI ``http`` scope; request and response bodies stream in both
directions with bounded memory. URLs follow the ASGI spec: a sender's ``/myhc/a/b?q=1`` arrives with
``root_path="/myhc"``, ``path="/myhc/a/b"`` (the root path included, as uvicorn, Starlette and asgiref expect)
and ``query_string=b"q=1"``, so the application routes on ``/a/b`` and builds correct absolute URLs. Pass
``root_path_in_path=False`` for applications that expect ``path`` without the prefix (``/a/b``).

The ``lifespan`` protocol runs around the listener when the application supports it. WebSocket senders
(``sb-hc-action=connect``) are not ASGI-served; they are refused while :func:`serve` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from hyco.client.http import RelayedHttpRequest, RelayedHttpResponse, RequestHandler
from hyco.client.listener import HybridConnectionListener
from hyco.exceptions import HycoError

__all__ = ["ASGIApp", "LifespanError", "asgi_handler", "serve"]

logger = logging.getLogger("hyco.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: ``async def app(scope, receive, send)``.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ASGI = {"version": "3.0", "spec_version": "2.3"}
#: Response body chunks queued ahead of the relay before the application's ``send`` waits (backpressure).
_QUEUE_CHUNKS = 8


class LifespanError(HycoError):
    """The application reported ``lifespan.startup.failed`` (or ``shutdown.failed``)."""


class _End:
    pass


_END = _End()


class _AppBody:
    """The response body as the listener pulls it: chunks the application ``send``-s, with backpressure."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | _End | BaseException] = asyncio.Queue(_QUEUE_CHUNKS)
        self.closed = asyncio.Event()

    async def put(self, item: bytes | _End | BaseException) -> None:
        if not self.closed.is_set():
            await self._queue.put(item)

    def __aiter__(self) -> _AppBody:
        return self

    async def __anext__(self) -> bytes:
        if self.closed.is_set():
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, _End):
            await self.aclose()
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            await self.aclose()
            raise item
        return item

    async def aclose(self) -> None:
        """The listener is done with the body: drop what is queued and whatever comes later."""
        self.closed.set()
        while not self._queue.empty():
            self._queue.get_nowait()


def _scope(
    request: RelayedHttpRequest, scheme: str, state: dict[str, Any] | None, root_path_in_path: bool
) -> Scope:
    root = "/" + request.hybrid_connection_path.strip("/")
    raw_path = request.path if root_path_in_path else request.relative_path
    server_parts = urlsplit(request.url)
    port = server_parts.port or (443 if scheme == "https" else 80)
    endpoint = request.remote_endpoint
    scope: Scope = {
        "type": "http",
        "asgi": dict(_ASGI),
        "http_version": "1.1",
        "method": request.method,
        "scheme": scheme,
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("latin-1", "replace"),
        "query_string": request.query.encode("latin-1", "replace"),
        "root_path": root,
        "headers": [
            (name.lower().encode("latin-1", "replace"), value.encode("latin-1", "replace"))
            for name, value in request.headers.items()
        ],
        "client": (endpoint.address, endpoint.port) if endpoint else None,
        "server": (server_parts.hostname or "", port),
    }
    if state is not None:
        scope["state"] = dict(state)
    return scope


def asgi_handler(
    app: ASGIApp,
    *,
    scheme: str = "https",
    state: dict[str, Any] | None = None,
    root_path_in_path: bool = True,
) -> RequestHandler:
    """A listener ``request_handler`` that runs ``app`` for every relayed request.

    Args:
        app: the ASGI 3 application.
        scheme: the ``scheme`` the application sees (what senders used).
        state: the lifespan state, copied into every request's ``scope["state"]``.
        root_path_in_path: put the hybrid connection prefix in ``path`` too (the ASGI spec; default).

    If the application fails before it starts a response, the sender gets 500; if it fails while the body
    streams, the sender's response is cut short (the relay drops the connection).
    """

    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        loop = asyncio.get_running_loop()
        started: asyncio.Future[Message] = loop.create_future()
        body = _AppBody()
        finished = False

        async def receive() -> Message:
            if not request.body.at_eof:
                try:
                    chunk = await request.body.read_chunk()
                except HycoError:
                    return {"type": "http.disconnect"}
                return {"type": "http.request", "body": chunk, "more_body": not request.body.at_eof}
            await body.closed.wait()  # the response is out (or abandoned): the client is "gone"
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal finished
            kind = message.get("type")
            if kind == "http.response.start":
                if started.done():
                    raise RuntimeError("http.response.start sent twice")
                started.set_result(message)
            elif kind == "http.response.body":
                if not started.done():
                    raise RuntimeError("http.response.body sent before http.response.start")
                if finished:
                    return
                chunk = bytes(message.get("body", b""))
                if chunk:
                    await body.put(chunk)
                if not message.get("more_body", False):
                    finished = True
                    await body.put(_END)
            # Other messages (trailers, pathsend, ...) are not supported and are ignored.

        async def run() -> None:
            try:
                await app(_scope(request, scheme, state, root_path_in_path), receive, send)
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)
                else:
                    logger.error("! the ASGI app failed while streaming %s: %r", request.target, exc)
                    await body.put(exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
                if not isinstance(exc, Exception):
                    raise
            else:
                if not started.done():
                    started.set_exception(RuntimeError("the ASGI app returned without a response"))
                elif not finished:
                    await body.put(_END)
            finally:
                # The application is done with the request: drop what it left unread (see _httpserve).
                await request.body.discard()

        task = asyncio.ensure_future(run())
        try:
            start = await started
        except BaseException:
            with contextlib.suppress(BaseException):
                await task
            raise
        status = int(start["status"])
        headers = [
            (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
            for name, value in start.get("headers", [])
        ]
        return RelayedHttpResponse(status, _Tracked(body, task), headers=headers)

    return handler


_RUNNING: set[asyncio.Future[None]] = set()


class _Tracked:
    """The app's body; closing it also makes sure the application task ends."""

    def __init__(self, body: _AppBody, task: asyncio.Future[None]) -> None:
        self._body = body
        self._task = task

    def __aiter__(self) -> _Tracked:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._body.__anext__()
        except StopAsyncIteration:
            await self._finish()
            raise
        except BaseException:
            await self._finish()
            raise

    async def aclose(self) -> None:
        """Stop listening to the application's body."""
        await self._body.aclose()
        await self._finish()

    async def _finish(self) -> None:
        # The application may still run (Starlette runs background tasks after the response): let it, but
        # keep a reference so it is not collected, and never delay the end of the response for it.
        await self._body.aclose()
        if not self._task.done():
            _RUNNING.add(self._task)
            self._task.add_done_callback(_RUNNING.discard)


class _Lifespan:
    """The ASGI lifespan protocol, driven from outside the application."""

    def __init__(self, app: ASGIApp, mode: Literal["auto", "on", "off"]) -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.supported = mode != "off"

    async def _run(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": dict(_ASGI), "state": self.state}
        try:
            await self.app(scope, self._to_app.get, self._from_app.put)
        except Exception as exc:
            if self.mode == "on":
                await self._from_app.put({"type": "lifespan.startup.failed", "message": repr(exc)})
            else:
                logger.debug("= the app does not do lifespan (%r)", exc)
        self.supported = False
        await self._from_app.put({"type": "_ended"})

    async def _step(self, kind: str) -> None:
        await self._to_app.put({"type": f"lifespan.{kind}"})
        reply = await self._from_app.get()
        if reply["type"] == "_ended":
            if self.mode == "on":
                raise LifespanError(f"the ASGI app ended during lifespan {kind}")
            return
        if reply["type"] == f"lifespan.{kind}.failed":
            raise LifespanError(f"the ASGI app's lifespan {kind} failed: {reply.get('message', '')}")

    async def startup(self) -> None:
        if not self.supported:
            return
        self._task = asyncio.ensure_future(self._run())
        await self._step("startup")

    async def shutdown(self) -> None:
        if not self.supported or self._task is None:
            return
        try:
            await self._step("shutdown")
        finally:
            if not self._task.done():
                self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


async def serve(
    app: ASGIApp,
    listener: HybridConnectionListener,
    *,
    lifespan: Literal["auto", "on", "off"] = "auto",
    scheme: str | None = None,
    root_path_in_path: bool = True,
    ready: Callable[[HybridConnectionListener], object] | None = None,
) -> None:
    """Serve ``app`` through ``listener`` until the listener stops or this task is cancelled.

    Runs lifespan ``startup``, sets ``listener.request_handler``, opens the listener unless it is already
    open (then closes it at the end), and runs lifespan ``shutdown`` on the way out.

    Args:
        app: the ASGI 3 application.
        listener: a :class:`HybridConnectionListener` (opened or not).
        lifespan: ``"auto"`` (use it if the app supports it), ``"on"`` (required) or ``"off"``.
        scheme: the scheme the app sees (default: ``https`` for a TLS relay address, else ``http``).
        root_path_in_path: see :func:`asgi_handler`.
        ready: ``ready(listener)`` called once the app started and the listener is open.

    Raises:
        LifespanError: the application's startup failed.
        EndpointNotFound, AuthorizationFailed, Forbidden: the listener could not open (see its ``open``).
    """
    manager = _Lifespan(app, lifespan)
    await manager.startup()
    try:
        handler = asgi_handler(
            app,
            scheme=scheme or ("https" if listener.address.tls else "http"),
            state=manager.state,
            root_path_in_path=root_path_in_path,
        )
        await listener.serve_requests(handler, ready=ready)
    finally:
        await manager.shutdown()
