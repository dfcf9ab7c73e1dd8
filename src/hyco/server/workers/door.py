"""A worker's accept loop: connections go to this worker's front door, except a listener's rendezvous dial
for another worker, which is handed to that worker over the mesh.

A dial (``GET /$hc/{path}?sb-hc-action=accept|request&sb-hc-id={id}``) names the worker where its sender or
HTTP request waits by the tag that ends its id (:func:`~.mesh.worker_of`). The door reads the request line
with ``MSG_PEEK``: the bytes stay in the kernel, so the worker that gets the socket reads the whole request
itself, as if it had accepted it. Everything else (listeners, senders, plain HTTP, management) is served where
it was accepted: senders and HTTP requests reach listeners on other workers through
:class:`~.router.WorkerRouter`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from hyco.protocol.uri import HC_PREFIX, query_params
from hyco.server.workers.mesh import Mesh, worker_of

__all__ = ["WorkerDoor", "dial_target"]

log = logging.getLogger("hyco.relay")

#: The longest request line looked at: a dial's is short; a longer line is served where it was accepted.
PEEK_BYTES = 4096
#: How often a connection whose request line is still incomplete is looked at again.
REPEEK_INTERVAL = 0.01
_DIAL_START = b"GET " + HC_PREFIX.encode()


def dial_target(head: bytes) -> int | None:
    """The worker a request line (and whatever follows it) is for, if it is a rendezvous dial with a tag.

    Args:
        head: the first bytes of a connection, holding at least a complete request line.
    """
    if not head.startswith(_DIAL_START):
        return None
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3:
        return None
    query = parts[1].partition("?")[2]
    params = query_params(query)
    if params.get("sb-hc-action") not in ("accept", "request"):
        return None
    return worker_of(params.get("sb-hc-id"))


class WorkerDoor:
    """Accepts from the listening socket all workers share.

    Args:
        listener: the shared listening socket.
        mesh: the links to the other workers.
        serve: serves a connection in this worker (the front door's protocol on it).
        head_timeout: how long a client may take to send its request line before it is served here anyway
            (the front door then applies its own timeouts).
    """

    def __init__(
        self,
        listener: socket.socket,
        mesh: Mesh,
        serve: Callable[[socket.socket], None],
        head_timeout: float,
    ) -> None:
        self._listener = listener
        self._mesh = mesh
        self._serve = serve
        self._head_timeout = head_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[socket.socket, asyncio.TimerHandle | None] = {}

    def start(self) -> None:
        """Start accepting (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._listener.setblocking(False)
        self._loop.add_reader(self._listener.fileno(), self._accept)

    def stop(self) -> None:
        """Stop accepting; connections whose request line had not arrived are closed."""
        if self._loop is None:
            return
        self._loop.remove_reader(self._listener.fileno())
        for conn, timer in self._waiting.items():
            if timer is not None:
                timer.cancel()
            else:
                self._loop.remove_reader(conn.fileno())
            conn.close()
        self._waiting.clear()
        self._loop = None

    def _accept(self) -> None:
        for _ in range(64):  # the other workers accept too; let this loop's other work run
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return  # another worker took it
            except OSError as exc:  # EMFILE and the like: the front door's limits apply to what got in
                log.warning("accept failed: %s", exc)
                return
            conn.setblocking(False)
            self._look(conn, time.monotonic() + self._head_timeout)

    def _look(self, conn: socket.socket, deadline: float) -> None:
        """Hand ``conn`` on once its request line is there (or it cannot be a dial for another worker)."""
        assert self._loop is not None
        try:
            head = conn.recv(PEEK_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            self._waiting[conn] = None
            self._loop.add_reader(conn.fileno(), self._readable, conn, deadline)
            return
        except OSError:
            conn.close()
            return
        complete = b"\r\n" in head or not head or len(head) >= PEEK_BYTES
        if not complete and _DIAL_START.startswith(head[: len(_DIAL_START)]) and time.monotonic() < deadline:
            # A slow client: look again a little later (the bytes stay readable, so no reader until then).
            self._waiting[conn] = self._loop.call_later(REPEEK_INTERVAL, self._again, conn, deadline)
            return
        worker = dial_target(head) if complete else None
        if worker is not None and worker != self._mesh.index and self._mesh.send(worker, ("dial",), conn):
            conn.close()  # the other worker has its own copy
            return
        self._serve(conn)

    def _readable(self, conn: socket.socket, deadline: float) -> None:
        assert self._loop is not None
        self._loop.remove_reader(conn.fileno())
        del self._waiting[conn]
        self._look(conn, deadline)

    def _again(self, conn: socket.socket, deadline: float) -> None:
        del self._waiting[conn]
        self._look(conn, deadline)
