"""Accepting every waiting connection on each loop turn, whatever the event loop.

libuv (under uvloop) accepts **one** connection per listening socket per loop iteration. When the relay is
busy (floods, full-speed streams, a CPU shared with other jobs), an iteration can take tens of milliseconds,
and clients that connect faster than that pile up in the kernel's accept queue: measured under every hostile
kind at once with the relay held to a third of a core, the queue reached 724 and a bystander could not
connect for 30 s, while asyncio's own loop (which accepts up to the backlog per wake-up) kept it under 32
(docs/reliability.md, "Accept fairness"). A flooding client must not be able to lock others out that way.

:class:`BacklogDrain` restores asyncio's behaviour on any loop: the first connection the loop accepts in a
turn schedules one callback, which accepts what else is waiting (up to :data:`ACCEPTS_PER_TURN` per socket)
and serves it exactly like the loop's own. When nothing else waits (the common case) the callback costs one
failed ``accept`` system call; connections accepted here cost more than the loop's own (a Python ``accept``
and a task each), which is paid only while connections are queueing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Iterable
from typing import Protocol

__all__ = ["ACCEPTS_PER_TURN", "BacklogDrain"]

log = logging.getLogger("hyco.relay")

#: Connections accepted per listening socket per drain (asyncio's loop accepts up to its backlog, 100 by
#: default, per wake-up); what is left waits for the next turn, so other work still runs in between.
ACCEPTS_PER_TURN = 128


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


class BacklogDrain:
    """Accepts the connections still queued on listening sockets after the loop accepted one.

    Args:
        serve: serves one accepted (non-blocking) socket, as the loop would have.
    """

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self._serve = serve
        self._sockets: list[socket.socket] = []
        self._scheduled = False

    def watch(self, listening: Iterable[_HasFileno]) -> None:
        """Drain these listening sockets too (a server's ``sockets``; they are duplicated, not taken)."""
        for sock in listening:
            own = socket.socket(fileno=os.dup(sock.fileno()))
            own.setblocking(False)
            self._sockets.append(own)

    def accepted(self) -> None:
        """The loop accepted a connection: accept the rest of the queue right after this turn's I/O."""
        if not self._scheduled and self._sockets:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def close(self) -> None:
        """Stop draining (the server stops listening)."""
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def _drain(self) -> None:
        self._scheduled = False
        for listening in self._sockets:
            for _ in range(ACCEPTS_PER_TURN):
                try:
                    conn, _ = listening.accept()
                except (BlockingIOError, InterruptedError):
                    break  # the queue is empty
                except OSError as exc:  # EMFILE and the like: what got in is served, the rest waits
                    log.warning("accept failed: %s", exc)
                    break
                conn.setblocking(False)
                self._serve(conn)
