"""``hyco expose``: publish a local HTTP server (or an ASGI app) at a hybrid connection's URL, like ngrok.

Theory of operation:

* A :class:`HybridConnectionListener` listens on the hybrid connection; it reconnects by itself with the
  official back-off (protocol.md 2.9), so ``expose`` survives relay restarts and network drops.
* Every relayed HTTP request (protocol.md 4) becomes one request to the local server: the hybrid connection's
  path prefix is removed (``/{hc}/a/b?q`` reaches the app as ``/a/b?q``), headers pass through (minus
  connection-level ones), and ``X-Forwarded-For``/``-Host``/``-Proto``/``-Prefix`` say where it came from.
  Bodies stream both ways with bounded memory (aiohttp to the local server, frame streaming to the relay).
* The local server's status, reason, headers and body go back unchanged. If it cannot be reached the sender
  gets **502** with a reason that says so; if it does not answer in time, **504**.
* ``--asgi module:app`` serves an ASGI application in-process instead (:mod:`hyco.asgi`), lifespan included.
* Each request is reported once, when its response starts: method, path, status, milliseconds.

Only the public SDK is used (design.md, layering).
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from hyco.client.asgi import ASGIApp, serve
from hyco.client.http import RelayedHttpRequest, RelayedHttpResponse, RequestHandler
from hyco.client.listener import HybridConnectionListener
from hyco.exceptions import InvalidInput
from hyco.protocol.messages import UNFORWARDED_HEADERS

__all__ = [
    "DEFAULT_LOCAL_TIMEOUT",
    "RequestRecord",
    "expose",
    "load_asgi_app",
    "local_proxy_handler",
    "normalize_target",
]

logger = logging.getLogger("hyco.expose")

#: Seconds to wait for the local server's response headers (the relay gives up after 60 s anyway).
DEFAULT_LOCAL_TIMEOUT = 55.0
_CHUNK = 64 * 1024
#: Never forwarded to the local server (aiohttp frames the body and names the host itself).
_REQUEST_SKIP = UNFORWARDED_HEADERS | {"expect", "host"}
#: Never sent back to the relay (it frames the body and adds its own).
_RESPONSE_SKIP = UNFORWARDED_HEADERS
#: A HEAD response has no body to frame: its Content-Length is the size a GET would send, so keep it.
_HEAD_RESPONSE_SKIP = _RESPONSE_SKIP - {"content-length"}


def _public_location(location: str, base: str, prefix: str, public_origin: str) -> str:
    """A local server's redirect target as the sender must see it.

    The local app knows nothing of the hybrid connection's path: its ``Location: /sub/`` (or
    ``http://localhost:8000/sub/``) must become ``/web/sub/`` (``https://ns.example/web/sub/``), or the sender
    leaves the exposed site. Targets outside the local base URL, on other hosts, or relative ones pass as
    they are.

    Args:
        location: the ``Location`` header from the local server.
        base: the local base URL (:func:`normalize_target`), e.g. ``http://localhost:8000/app``.
        prefix: the public path prefix, e.g. ``/web``.
        public_origin: the public ``scheme://host``.
    """
    local = urlsplit(base)
    target = urlsplit(location)
    if target.scheme or target.netloc:
        if (target.scheme, target.netloc) != (local.scheme, local.netloc):
            return location  # another site
        origin = public_origin
    elif location.startswith("/"):
        origin = ""
    else:
        return location  # relative: resolves against the public URL by itself
    path = target.path or "/"
    if local.path and path != local.path and not path.startswith(local.path + "/"):
        return location  # outside the exposed base path: not reachable through the relay
    rest = path[len(local.path) :] or "/"
    query = f"?{target.query}" if target.query else ""
    fragment = f"#{target.fragment}" if target.fragment else ""
    return f"{origin}{prefix.rstrip('/')}{rest}{query}{fragment}"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One relayed request, reported when its response starts.

    Attributes:
        method: the HTTP method.
        path: the path and query the local app saw (hybrid connection prefix removed).
        status: the status sent back.
        milliseconds: from the request reaching the listener to the response headers.
        remote: the sender's address, when known.
        error: why the local server could not answer (502/504), or None.
    """

    method: str
    path: str
    status: int
    milliseconds: float
    remote: str | None = None
    error: str | None = None

    def __str__(self) -> str:
        suffix = f"  ({self.error})" if self.error else ""
        return f"{self.method:<7} {self.path}  {self.status}  {self.milliseconds:.0f} ms{suffix}"


Reporter = Callable[[RequestRecord], object]


def normalize_target(target: str) -> str:
    """``8000``, ``localhost:8000`` or ``http://localhost:8000[/base]`` -> a base URL without trailing ``/``.

    Raises:
        InvalidInput: not a port, ``host:port`` or ``http(s)://`` URL.
    """
    text = target.strip()
    if text.isdigit():
        text = f"http://localhost:{text}"
    elif "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"cannot expose {target!r}: give a port, host:port or an http(s):// URL")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise InvalidInput(f"cannot expose {target!r}: {exc}") from None
    if parts.query or parts.fragment:
        raise InvalidInput(f"cannot expose {target!r}: the local URL must not have a query")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class _LocalBody:
    """The local response body, streamed; releasing the local connection however the relay side ends."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    def __aiter__(self) -> _LocalBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._response.content.read(_CHUNK)
        except BaseException:
            self._response.close()
            raise
        if not chunk:
            self._response.release()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Drop the local response (the relay does not want the body, e.g. for HEAD)."""
        self._response.close()


def _forwarded_headers(request: RelayedHttpRequest, scheme: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        if name.lower() not in _REQUEST_SKIP:
            headers[name] = value
    remote = request.remote_endpoint.address if request.remote_endpoint else None
    if remote:
        previous = headers.pop("X-Forwarded-For", None) or request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{previous}, {remote}" if previous else remote
    headers["X-Forwarded-Host"] = request.host
    headers["X-Forwarded-Proto"] = scheme
    headers["X-Forwarded-Prefix"] = "/" + request.hybrid_connection_path.strip("/")
    return headers


def local_proxy_handler(
    target: str,
    session: aiohttp.ClientSession,
    *,
    scheme: str = "https",
    timeout: float = DEFAULT_LOCAL_TIMEOUT,
    report: Reporter | None = None,
) -> RequestHandler:
    """A listener ``request_handler`` forwarding every request to the local server at ``target``.

    Args:
        target: the local base URL (see :func:`normalize_target`).
        session: the aiohttp session used for the local requests (its owner closes it).
        scheme: what ``X-Forwarded-Proto`` says.
        timeout: seconds to wait for the local response headers (then 504).
        report: called with a :class:`RequestRecord` for every request.
    """
    base = normalize_target(target)

    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        started = time.monotonic()
        path = request.relative_path + (f"?{request.query}" if request.query else "")
        if not request.has_body:
            data: Any = None
        elif (inline := request.body.inline_data) is not None:
            data = inline  # known length: the local server gets Content-Length
        else:
            data = request.body  # streamed (chunked) as it arrives
        error: str | None = None
        try:
            local = await session.request(
                request.method,
                base + path,
                headers=_forwarded_headers(request, scheme),
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
        except TimeoutError:
            error = f"the local server {base} did not answer within {timeout:g} s"
            response = RelayedHttpResponse(
                504, error.encode() + b"\n", reason="Gateway Timeout (hyco expose)"
            )
        except (aiohttp.ClientError, OSError) as exc:
            error = f"hyco expose could not reach the local server {base}: {_describe(exc)}"
            response = RelayedHttpResponse(502, error.encode() + b"\n", reason=error[:200])
        else:
            skip = _HEAD_RESPONSE_SKIP if request.method == "HEAD" else _RESPONSE_SKIP
            prefix = "/" + request.hybrid_connection_path.strip("/")
            headers = [
                (
                    k,
                    _public_location(v, base, prefix, f"{scheme}://{request.host}")
                    if k.lower() == "location"
                    else v,
                )
                for k, v in local.headers.items()
                if k.lower() not in skip
            ]
            response = RelayedHttpResponse(
                local.status, _LocalBody(local), reason=local.reason or None, headers=headers
            )
        if error is not None:
            response.headers["Content-Type"] = "text/plain; charset=utf-8"
        if report is not None:
            remote = request.remote_endpoint.address if request.remote_endpoint else None
            ms = (time.monotonic() - started) * 1000
            report(RequestRecord(request.method, path, response.status, ms, remote, error))
        return response

    return handler


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{exc.os_error.strerror or exc.os_error}" if exc.os_error else str(exc)
    return str(exc) or type(exc).__name__


def load_asgi_app(spec: str, app_dir: str | None = ".") -> ASGIApp:
    """Import ``module:attribute`` (``attribute`` may be dotted; default ``app``), as uvicorn does.

    Args:
        spec: ``package.module:app``.
        app_dir: a directory put first on ``sys.path`` (default: the current directory).

    Raises:
        InvalidInput: the module or attribute cannot be found, or is not callable.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise InvalidInput(f"--asgi wants module:app, not {spec!r}")
    if app_dir is not None and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import {module_name!r} for --asgi: {exc}") from exc
    target: Any = module
    for part in (attribute or "app").split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise InvalidInput(f"module {module_name!r} has no attribute {attribute or 'app'!r}") from None
    if not callable(target):
        raise InvalidInput(f"{spec!r} is not an ASGI application (not callable)")
    app: ASGIApp = target
    return app


def _logging_app(app: ASGIApp, report: Reporter) -> ASGIApp:
    """ASGI middleware reporting each request when its response starts."""

    async def wrapped(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        started = time.monotonic()
        root = scope.get("root_path", "")
        path = scope.get("raw_path", b"").decode("latin-1") or scope.get("path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        client = scope.get("client")

        async def logging_send(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                ms = (time.monotonic() - started) * 1000
                report(RequestRecord(scope["method"], path, int(message["status"]), ms, client and client[0]))
            await send(message)

        await app(scope, receive, logging_send)

    return wrapped


async def expose(
    listener: HybridConnectionListener,
    *,
    target: str | None = None,
    app: ASGIApp | None = None,
    report: Reporter | None = None,
    ready: Callable[[HybridConnectionListener], object] | None = None,
    local_timeout: float = DEFAULT_LOCAL_TIMEOUT,
) -> None:
    """Serve every HTTP request relayed to ``listener`` from ``target`` (a local URL) or ``app`` (ASGI).

    Runs until cancelled or the listener stops for good. The listener is opened here (and closed at the end)
    unless it is already open.

    Args:
        listener: the listener (its reconnects keep ``expose`` alive through relay outages).
        target: the local server, e.g. ``http://localhost:8000`` (see :func:`normalize_target`).
        app: an ASGI 3 application to serve in-process instead.
        report: called with a :class:`RequestRecord` for every request.
        ready: ``ready(listener)`` once the listener is open (and the app started).
        local_timeout: seconds to wait for the local server's response headers.

    Raises:
        InvalidInput: neither or both of ``target`` and ``app``, or a bad ``target``.
        EndpointNotFound, AuthorizationFailed, Forbidden: the listener could not open.
        LifespanError: the ASGI app's startup failed.
    """
    if (target is None) == (app is None):
        raise InvalidInput("expose needs a local URL or an ASGI app (exactly one)")
    scheme = "https" if listener.address.tls else "http"
    if app is not None:
        await serve(
            app if report is None else _logging_app(app, report), listener, ready=ready, scheme=scheme
        )
        return
    assert target is not None
    base = normalize_target(target)
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        # WebSocket senders are not forwarded by expose (use ``hyco forward``): serve_requests closes them.
        handler = local_proxy_handler(base, session, scheme=scheme, timeout=local_timeout, report=report)
        await listener.serve_requests(handler, ready=ready)
