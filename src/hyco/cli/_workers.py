"""``hyco relay --workers N``: how many processes, and running them (hyco.server.workers does the work).

One process per core by default, where workers are possible: not with TLS (a worker must read a listener's
request line to hand its rendezvous dial to the right worker, and cannot read it through TLS), not on a
cluster node, not with the in-memory store (each process would keep its own), not without ``fork`` (Windows).
Asking for more than one worker in those cases is an error that says what to do instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hyco.cli._loop import EXIT_INTERRUPTED, run
from hyco.exceptions import InvalidConfig

if TYPE_CHECKING:
    from hyco.server.config import RelayConfig
    from hyco.server.workers import WorkerSeat

__all__ = ["run_workers", "worker_count"]


def cores() -> int:
    """The cores this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def worker_count(requested: int | None, config: RelayConfig) -> int:
    """How many processes serve the port: ``requested`` (``--workers``, else ``server.workers``), or one per
    core where workers are possible.

    Raises:
        InvalidConfig: more than one worker asked for where they are not possible.
    """
    from hyco.server.workers.supervisor import supported

    reasons = [
        (
            config.server.tls is not None,
            "TLS (terminate TLS in front of the relay, e.g. with haproxy or nginx, "
            "and run the workers plain behind it; or run --workers 1)",
        ),
        (config.cluster is not None, "a cluster node (run one node per process instead: docs/cluster.md)"),
        (
            config.server.store == "memory",
            'server.store = "memory" (each process would keep its own '
            'entities and rules; use store = "sqlite", the default)',
        ),
        (not supported(), "this platform (workers need fork and passing sockets between processes)"),
    ]
    why_not = [text for applies, text in reasons if applies]
    if requested is None:
        return 1 if why_not else cores()
    if requested > 1 and why_not:
        raise InvalidConfig(f"--workers {requested} is not possible with {why_not[0]}")
    return requested


def run_workers(
    config: RelayConfig, count: int, config_path: Path | None, data_dir: Path, banner: Callable[[str], None]
) -> None:
    """Serve the configured port with ``count`` worker processes until SIGTERM or Ctrl-C.

    Raises:
        click.ClickException: the port cannot be bound, or a worker failed to start.
        click.exceptions.Exit: status 130 after Ctrl-C.
    """
    from hyco.cli._reload import pid_file
    from hyco.server.workers.supervisor import Supervisor, bind_listener

    server = config.server
    try:
        listener = bind_listener(server.host, server.port)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {server.host}:{server.port}: {exc.strerror or exc}"
        ) from None
    supervisor = Supervisor(count, listener, lambda seat: _work(seat, config, config_path))

    with pid_file(data_dir):
        stopped = supervisor.run(lambda: banner(_url(listener)))
    if stopped is None:
        raise click.ClickException("a worker could not start (its error is above)")
    if stopped == signal.SIGINT:
        raise click.exceptions.Exit(EXIT_INTERRUPTED)


def _url(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"ws://{f'[{host}]' if ':' in host else host}:{port}"


def _work(seat: WorkerSeat, config: RelayConfig, config_path: Path | None) -> int:
    """One worker's life (in its own process); returns its exit status."""
    from hyco.cli._reload import reload_config
    from hyco.server import serve

    async def main() -> None:
        async with serve(config, worker=seat) as relay:
            loop = asyncio.get_running_loop()
            if config_path is not None:
                path = config_path
                loop.add_signal_handler(signal.SIGHUP, lambda: reload_config(relay, path))
            if seat.parent is not None:
                loop.add_reader(seat.parent, _supervisor_gone, loop, seat.parent)
            seat.ready()
            try:
                await asyncio.Event().wait()  # until SIGTERM cancels this (cli._loop)
            except asyncio.CancelledError:
                if seat.index == 0:
                    click.echo("shutting down: closing control channels and connections ...", err=True)
                raise

    try:
        run(main())
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 1
    except InvalidConfig as exc:
        click.echo(f"Error: {exc}", err=True)
        return 1
    return 0


def _supervisor_gone(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """The supervisor's end of the pipe closed (it was killed): stop as on SIGTERM."""
    loop.remove_reader(fd)
    with contextlib.suppress(ProcessLookupError):
        os.kill(os.getpid(), signal.SIGTERM)
