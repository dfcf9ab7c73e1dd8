"""Messages between worker processes: one ``SOCK_SEQPACKET`` unix socket pair per pair of workers.

The supervisor makes every pair before it starts the workers and keeps its own copy of every end, so a worker
that is restarted finds its links where the old one left them. Sequenced packets keep message boundaries: a
worker that dies half-way through its queue leaves no torn message for its successor. A message is a pickled
tuple (the mesh only links processes of one relay, started from one program) and may carry one socket
(``SCM_RIGHTS``): that is how a connection accepted by one worker is served by another.

Sends never block: a peer whose queue is full (stuck or dead) makes :meth:`Mesh.send` return False and the
caller decides (serve the connection itself, forget the peer's listener).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["MAX_MESSAGE", "Mesh", "WorkerSeat", "make_links", "tag", "worker_of"]

log = logging.getLogger("hyco.relay")

#: Largest message (an inline HTTP request or response is at most 64 KiB plus its command).
MAX_MESSAGE = 1024 * 1024
#: Each link's kernel buffer: what may queue up for a busy peer before sends fail.
LINK_BUFFER = 4 * 1024 * 1024

#: Called with (the sending worker's index, the message, the socket it carried or None).
OnMessage = Callable[[int, tuple[object, ...], socket.socket | None], None]


@dataclass
class WorkerSeat:
    """What one worker process gets from the supervisor.

    Attributes:
        index: this worker's number, 0 .. count-1.
        count: how many workers share the port.
        listener: the listening socket all workers accept from (bound by the supervisor).
        links: a link to every other worker, by its index.
        ready: tells the supervisor this worker accepts connections.
        parent: a pipe end that reads end-of-file when the supervisor is gone (the worker then stops).
    """

    index: int
    count: int
    listener: socket.socket
    links: dict[int, socket.socket] = field(default_factory=dict)
    ready: Callable[[], None] = lambda: None
    parent: int | None = None


def make_links(count: int) -> list[dict[int, socket.socket]]:
    """Every worker's links: ``result[i][j]`` is worker i's end of the pair it shares with worker j."""
    links: list[dict[int, socket.socket]] = [{} for _ in range(count)]
    for i in range(count):
        for j in range(i + 1, count):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            for end in (a, b):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LINK_BUFFER)
                end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, LINK_BUFFER)
            links[i][j], links[j][i] = a, b
    return links


def tag(index: int) -> str:
    """The suffix a worker puts on its rendezvous and request ids, so that a listener's dial can be handed to
    it (the 128 random bits before it keep the id unguessable)."""
    return f"-{index}"


def worker_of(ident: str | None) -> int | None:
    """The worker whose :func:`tag` ends a rendezvous or request id (``{tracking}_{random}-{index}``)."""
    if not ident:
        return None
    _, sep, tail = ident.rpartition("_")[2].rpartition("-")
    return int(tail) if sep and tail.isdigit() and len(tail) < 6 else None


class Mesh:
    """This worker's links to the others.

    Args:
        index: this worker's number.
        links: its end of each pair, by the other worker's index.
    """

    def __init__(self, index: int, links: dict[int, socket.socket]) -> None:
        self.index = index
        self._links = links
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def peers(self) -> list[int]:
        """The other workers' indexes."""
        return list(self._links)

    def start(self, on_message: OnMessage) -> None:
        """Deliver every message that arrives from now on to ``on_message`` (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        for peer, link in self._links.items():
            link.setblocking(False)
            self._loop.add_reader(link.fileno(), self._drain, peer, link, on_message)

    def close(self) -> None:
        """Stop reading (the sockets stay open: the supervisor's copies keep the pairs for a successor)."""
        if self._loop is not None:
            for link in self._links.values():
                self._loop.remove_reader(link.fileno())
            self._loop = None

    def send(self, peer: int, message: tuple[object, ...], sock: socket.socket | None = None) -> bool:
        """Queue ``message`` (and ``sock``, which the caller may close afterwards) for worker ``peer``.

        Returns:
            False when it could not be queued (the peer's queue is full or the link is broken).
        """
        link = self._links.get(peer)
        if link is None:
            return False
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            if sock is None:
                link.send(data)
            else:
                socket.send_fds(link, [data], [sock.fileno()])
        except OSError as exc:  # BlockingIOError included: never wait for a peer
            log.warning("worker %d could not send %s to worker %d: %s", self.index, message[0], peer, exc)
            return False
        return True

    def broadcast(self, message: tuple[object, ...]) -> None:
        """Send ``message`` to every other worker."""
        for peer in self._links:
            self.send(peer, message)

    def _drain(self, peer: int, link: socket.socket, on_message: OnMessage) -> None:
        for _ in range(64):  # let other callbacks run between batches
            try:
                data, fds, _flags, _addr = socket.recv_fds(link, MAX_MESSAGE, 1)
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("worker %d lost its link to worker %d: %s", self.index, peer, exc)
                assert self._loop is not None
                self._loop.remove_reader(link.fileno())
                return
            sock = socket.socket(fileno=fds[0]) if fds else None
            for extra in fds[1:]:
                os.close(extra)
            if not data:  # the other end is closed for good (the supervisor is gone)
                if sock is not None:
                    sock.close()
                assert self._loop is not None
                self._loop.remove_reader(link.fileno())
                return
            try:
                # Only the workers of this relay hold the links (made by their supervisor before the fork).
                message = pickle.loads(data)  # noqa: S301
            except (pickle.UnpicklingError, EOFError, ValueError) as exc:
                log.error("worker %d got a malformed message from worker %d: %s", self.index, peer, exc)
                if sock is not None:
                    sock.close()
                continue
            on_message(peer, message, sock)
