"""The supervisor of ``hyco relay --workers N``: one port, N worker processes, restarted when they die.

It binds the port and makes the mesh (:func:`~.mesh.make_links`) before it forks the workers, so both are
inherited; it keeps its own copy of every socket, so a restarted worker gets the same port and links. Each
worker runs in its own process group (a Ctrl-C reaches the supervisor only, which stops the workers once with
SIGTERM) and stops by itself when the supervisor is gone (its ``parent`` pipe reads end-of-file). SIGHUP is
passed on to every worker (each re-reads the configuration file). POSIX only (``fork``, ``SCM_RIGHTS``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType

from hyco.server.workers.mesh import WorkerSeat, make_links

__all__ = ["Supervisor", "bind_listener", "supported"]

log = logging.getLogger("hyco.relay")

#: A worker that dies sooner than this after its start is restarted only after this long (a crash loop).
RESTART_DELAY = 1.0


def supported() -> bool:
    """Whether this platform can run workers (``fork`` and passing sockets between processes)."""
    return hasattr(os, "fork") and hasattr(socket, "send_fds") and hasattr(socket, "AF_UNIX")


def bind_listener(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on the first address ``host`` resolves to.

    Raises:
        OSError: the address cannot be resolved or bound (in use, not allowed).
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class Supervisor:
    """Runs ``count`` workers on ``listener``.

    Args:
        count: how many workers.
        listener: the bound, listening socket they share.
        run_worker: a worker's whole life in the child process; returns its exit status. It must call
            ``seat.ready()`` once it accepts connections, and stop (as on SIGTERM) when ``seat.parent``
            becomes readable.
    """

    def __init__(self, count: int, listener: socket.socket, run_worker: Callable[[WorkerSeat], int]) -> None:
        self._count = count
        self._listener = listener
        self._run_worker = run_worker
        self._links = make_links(count)
        self._ready_r, self._ready_w = os.pipe()
        # Restarted workers write too, and nobody reads after start-up: a full pipe must not block them.
        os.set_blocking(self._ready_w, False)
        self._life_r, self._life_w = os.pipe()
        self._workers: dict[int, tuple[int, float]] = {}  # pid -> (index, started at)
        self._stop_signal: int | None = None

    def run(self, on_ready: Callable[[], None]) -> int | None:
        """Start the workers, call ``on_ready`` once all of them accept, and restart any that dies until
        SIGTERM or SIGINT (passed on to the workers, whose exit is then awaited).

        Returns:
            The signal that stopped the relay, or None when a worker failed to start (the others are then
            stopped too; the worker said why on stderr).
        """
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        for index in range(self._count):
            self._start(index)
        if not self._await_ready():
            self._stop(signal.SIGTERM)
            self._reap_all()
            return None
        if self._stop_signal is None:
            on_ready()
        while self._workers:
            pid, status = os.waitpid(-1, 0)
            entry = self._workers.pop(pid, None)
            if entry is None or self._stop_signal is not None:
                continue
            index, started = entry
            log.warning("worker %d (pid %d) ended (%s); starting it again", index, pid, _describe(status))
            if time.monotonic() - started < RESTART_DELAY:
                time.sleep(RESTART_DELAY)
            if self._stop_signal is None:
                self._start(index)
        return self._stop_signal

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            for pid in self._workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)
            return
        self._stop(signum)

    def _stop(self, signum: int) -> None:
        """Ask every worker to stop (a second signal cuts their clean-up short, as with one process)."""
        self._stop_signal = self._stop_signal or signum
        for pid in self._workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _await_ready(self) -> bool:
        """Wait for every worker's ready byte; False if one ended before it was ready."""
        ready = 0
        while ready < self._count and self._stop_signal is None:
            readable, _, _ = select.select([self._ready_r], [], [], 0.1)
            if readable:
                ready += len(os.read(self._ready_r, self._count))
                continue
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid:
                index = self._workers.pop(pid, (-1, 0.0))[0]
                log.error("worker %d (pid %d) ended before it was ready (%s)", index, pid, _describe(status))
                return False
        return True

    def _reap_all(self) -> None:
        while self._workers:
            pid, _ = os.waitpid(-1, 0)
            self._workers.pop(pid, None)

    def _start(self, index: int) -> None:
        pid = os.fork()
        if pid:
            self._workers[pid] = (index, time.monotonic())
            return
        status = 1
        try:
            os.setpgid(0, 0)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's reload handler is in place
            os.close(self._ready_r)
            os.close(self._life_w)
            for other, links in enumerate(self._links):
                if other != index:
                    for link in links.values():
                        link.close()
            ready_w = self._ready_w
            seat = WorkerSeat(
                index,
                self._count,
                self._listener,
                self._links[index],
                ready=lambda: _write(ready_w, b"r"),
                parent=self._life_r,
            )
            status = self._run_worker(seat)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)


def _write(fd: int, data: bytes) -> None:
    with contextlib.suppress(BlockingIOError):
        os.write(fd, data)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
