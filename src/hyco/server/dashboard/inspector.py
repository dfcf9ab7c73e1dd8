"""The HTTP inspector: recent relayed HTTP requests of the hybrid connections with ``inspect = true``.

Bounded in memory: the last ``max_requests`` exchanges, and of each body its first ``max_body`` bytes (its
full size is counted). Secrets never enter the record: ``Authorization``, ``ServiceBusAuthorization``,
``Proxy-Authorization`` and the ``sb-hc-token`` query parameter are replaced by ``[redacted]`` as the request
is captured. The JSON shapes follow ngrok's inspection API (``/api/requests/http``) so scripts written for it
work.

The front door starts a capture (:meth:`Inspector.begin`) and finishes it (:meth:`Inspector.finish`); the HTTP
forwarder finds the capture on the aiohttp request (under :data:`CAPTURE_KEY`) and feeds it body chunks."""

from __future__ import annotations

import base64
import itertools
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from hyco.server.registry import HybridConnection

__all__ = ["CAPTURE_KEY", "Capture", "Inspector", "redact_headers"]

REDACTED = "[redacted]"
SECRET_HEADERS = frozenset({"authorization", "servicebusauthorization", "proxy-authorization"})
SECRET_PARAMS = frozenset({"sb-hc-token"})


def redact_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers with every credential replaced by ``[redacted]``."""
    return [(k, REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in headers]


def _redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, REDACTED if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="[]")


@dataclass
class _Body:
    limit: int
    head: bytearray = field(default_factory=bytearray)
    size: int = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        room = self.limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]

    @property
    def complete(self) -> bool:
        return self.size == len(self.head)

    def json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "truncated": not self.complete,
            "base64": base64.b64encode(self.head).decode(),
        }


@dataclass
class Capture:
    """One relayed HTTP exchange being recorded (the HTTP forwarder feeds its bodies)."""

    id: str
    entity: str
    method: str
    uri: str
    remote_addr: str
    request_headers: list[tuple[str, str]]
    request_body: _Body
    started: float
    start_wall: float
    status: int = 0
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: _Body | None = None
    duration: float = 0.0
    done: bool = False

    def request_chunk(self, chunk: bytes) -> None:
        """A piece of the request body, as the forwarder reads it."""
        self.request_body.add(chunk)

    def response_started(self, status: int, headers: Mapping[str, str]) -> None:
        """The listener's status line and headers."""
        self.status = status
        self.response_headers = redact_headers(headers.items())
        if self.response_body is None:
            self.response_body = _Body(self.request_body.limit)

    def response_chunk(self, chunk: bytes) -> None:
        """A piece of the response body."""
        if self.response_body is None:
            self.response_body = _Body(self.request_body.limit)
        self.response_body.add(chunk)

    @property
    def replayable(self) -> bool:
        """Whether the whole request body was kept (a replay sends exactly what was sent)."""
        return self.done and self.request_body.complete

    def summary(self) -> dict[str, Any]:
        """ngrok's request object: ``id``, ``uri``, ``start``, ``duration`` (ns), ``request``,
        ``response``."""
        response = None
        if self.status:
            body = self.response_body or _Body(0)
            response = {
                "status": str(self.status),
                "status_code": self.status,
                "headers": _header_map(self.response_headers),
                "body": body.json(),
            }
        return {
            "id": self.id,
            "entity": self.entity,
            "uri": self.uri,
            "remote_addr": self.remote_addr,
            "start": datetime.fromtimestamp(self.start_wall, UTC).isoformat(),
            "duration": int(self.duration * 1e9),
            "replayable": self.replayable,
            "request": {
                "method": self.method,
                "uri": self.uri,
                "headers": _header_map(self.request_headers),
                "body": self.request_body.json(),
            },
            "response": response,
        }


#: Where the front door leaves the capture of a request for the HTTP forwarder (``request[CAPTURE_KEY]``).
CAPTURE_KEY = web.RequestKey("hyco.capture", Capture)


def _header_map(headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for key, value in headers:
        result.setdefault(key, []).append(value)
    return result


class Inspector:
    """Records relayed HTTP exchanges of inspected hybrid connections.

    Args:
        max_requests: exchanges kept (the oldest go first).
        max_body: bytes kept of each request and response body.
    """

    def __init__(self, max_requests: int = 200, max_body: int = 16 * 1024) -> None:
        self._captures: deque[Capture] = deque(maxlen=max_requests)
        self._by_id: dict[str, Capture] = {}
        self._max_body = max_body
        self._ids = itertools.count(1)

    def begin(self, request: web.Request, hc: HybridConnection) -> Capture | None:
        """Start recording ``request`` if its hybrid connection is inspected; the capture is also left on the
        request under :data:`CAPTURE_KEY`."""
        if not hc.config.inspect:
            return None
        query = request.rel_url.raw_query_string
        uri = request.rel_url.raw_path + (f"?{_redact_query(query)}" if query else "")
        capture = Capture(
            id=f"req_{next(self._ids)}",
            entity=hc.path,
            method=request.method,
            uri=uri,
            remote_addr=request.remote or "",
            request_headers=redact_headers(request.headers.items()),
            request_body=_Body(self._max_body),
            started=time.monotonic(),
            start_wall=time.time(),
        )
        if len(self._captures) == self._captures.maxlen:
            self._by_id.pop(self._captures[0].id, None)
        self._captures.append(capture)
        self._by_id[capture.id] = capture
        request[CAPTURE_KEY] = capture
        return capture

    def finish(self, capture: Capture, status: int) -> None:
        """The exchange ended with ``status`` (the relay's own, when the listener never answered)."""
        capture.duration = time.monotonic() - capture.started
        if not capture.status:
            capture.status = status
        capture.done = True

    def get(self, capture_id: str) -> Capture | None:
        """A recorded exchange by id."""
        return self._by_id.get(capture_id)

    def recent(self, limit: int | None = None) -> list[Capture]:
        """The recorded exchanges, newest first."""
        newest = list(reversed(self._captures))
        return newest[:limit] if limit is not None else newest

    def clear(self) -> None:
        """Forget every recorded exchange."""
        self._captures.clear()
        self._by_id.clear()
