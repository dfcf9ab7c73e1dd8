"""``/$dashboard``: a page (static assets shipped in the package, plain JavaScript, no CDN) that logs in
with a Manage key or token and follows the relay live over server-sent events.

* ``GET /$dashboard`` and ``/$dashboard/static/{file}``: the page;
* ``POST /$dashboard/login`` ``{"keyName", "key"}`` or ``{"token"}``: checks Manage rights and sets an
  HttpOnly, SameSite=Strict session cookie holding a namespace token (signed here for one hour from a key; a
  given token keeps its own expiry). The key itself is never stored or sent back;
* ``GET /$dashboard/events``: ``text/event-stream``, one ``snapshot`` event a second (hybrid connections,
  listeners with their time online, relayed connections with their bytes so far, live counts, recent
  inspected requests); an ``expired`` event ends it when the session's token
  expires. The page's detail view and replay use the inspector API under ``/$management/requests/http`` with
  the same cookie.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from aiohttp import web

from hyco.exceptions import RelayError
from hyco.protocol.sas import create_token, parse_token
from hyco.server.listeners import ConnectedListener
from hyco.server.management import SESSION_COOKIE, ManagementApi

__all__ = ["Dashboard"]

PREFIX = "/$dashboard"
SESSION_SECONDS = 3600
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_ASSETS = ("index.html", "app.js", "style.css")


class Dashboard:
    """Serves the dashboard.

    Args:
        management: the management API (status, inspector, token checks).
        listeners: the listeners connected to this node.
        node: this node's name, shown with each listener.
        interval: seconds between snapshots.
    """

    def __init__(
        self,
        management: ManagementApi,
        listeners: Callable[[], list[ConnectedListener]],
        node: str,
        interval: float = 1.0,
    ) -> None:
        self._management = management
        self._listeners = listeners
        self._node = node
        self._interval = interval

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one request under ``/$dashboard``."""
        tail = request.rel_url.path[len(PREFIX) :].strip("/")
        if tail in ("", "index.html") and request.method == "GET":
            return self._asset("index.html")
        if tail.startswith("static/") and request.method == "GET" and tail[7:] in _ASSETS:
            return self._asset(tail[7:])
        if tail == "login" and request.method == "POST":
            return await self._login(request)
        if tail == "logout" and request.method == "POST":
            response = web.json_response({"loggedOut": True})
            response.del_cookie(SESSION_COOKIE, path="/")
            return response
        if tail == "events" and request.method == "GET":
            return await self._events(request)
        return web.json_response(
            {"error": {"code": "NotFound", "message": "No such dashboard page."}}, status=404
        )

    @staticmethod
    def _asset(name: str) -> web.Response:
        body = files("hyco.server.dashboard").joinpath("static", name).read_bytes()
        suffix = name[name.rfind(".") :]
        return web.Response(body=body, content_type=_TYPES[suffix], headers={"Cache-Control": "no-cache"})

    async def _login(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error(400, "BadRequest", 'Send {"keyName": ..., "key": ...} or {"token": ...}.')
        token = body.get("token")
        if not token:
            name, key = body.get("keyName") or "RootManageSharedAccessKey", body.get("key")
            if not isinstance(key, str) or not key or not isinstance(name, str):
                return _error(400, "BadRequest", "Give a key (and its rule's name) or a token.")
            host = request.host.rsplit(":", 1)[0].strip("[]") if request.host else "localhost"
            token = create_token(f"http://{host}/", name, key, int(time.time()) + SESSION_SECONDS)
        if not isinstance(token, str):
            return _error(400, "BadRequest", "'token' must be text.")
        try:
            self._management.check_manage(request, token)
        except RelayError as exc:
            return _error(
                exc.http_status, "Unauthorized" if exc.http_status == 401 else "Forbidden", exc.description
            )
        response = web.json_response({"expiresAt": parse_token(token).expiry})
        response.set_cookie(
            SESSION_COOKIE, token, path="/", httponly=True, samesite="Strict", secure=request.secure
        )
        return response

    async def _events(self, request: web.Request) -> web.StreamResponse:
        token = request.cookies.get(SESSION_COOKIE)
        try:
            self._management.check_manage(request, token)
        except RelayError as exc:
            return _error(exc.http_status, "Unauthorized", f"Log in again: {exc.description}")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        while True:
            try:
                self._management.check_manage(request, token)
            except RelayError as exc:
                await response.write(_event("expired", {"message": exc.description}))
                return response
            await response.write(_event("snapshot", self._snapshot()))
            await asyncio.sleep(self._interval)

    def _snapshot(self) -> dict[str, Any]:
        status = self._management.status()
        status["listeners"] = [
            {
                "entity": listener.path,
                "id": listener.listener_id,
                "remote": listener.remote,
                "node": listener.node or self._node,
                "tokenExpiresAt": listener.token_expiry,
                "onlineSince": listener.online_since,
            }
            for listener in self._listeners()
        ]
        status["requests"] = [c.summary() for c in self._management.inspector.recent(50)]
        status["time"] = time.time()
        return status


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
