"""Running a command's main coroutine until it ends or a signal stops it (the one copy of that logic).

Exit statuses every long-running command shares: the command's own on success, **130** after Ctrl-C (SIGINT,
the shell convention: 128 + 2, so scripts can tell "interrupted" from "done"), **0** after SIGTERM (a service
manager asked for a clean stop, and got one).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any

import click

__all__ = ["EXIT_INTERRUPTED", "run"]

#: Exit status after Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 128 + signal.SIGINT


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` until it returns, or until SIGINT/SIGTERM cancels it.

    A signal cancels ``main`` once; its ``async with`` / ``finally`` blocks then close listeners, servers
    and connections as on any other exit. A second signal cancels the clean-up too. Runs on uvloop when it
    is installed (``hyco[speed]``; 35-90 % more round trips, design.md), else on asyncio's default loop.

    Raises:
        click.exceptions.Exit: status 130 after Ctrl-C.
    """
    received: list[int] = []

    async def until_signal() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(signum: int) -> None:
            received.append(signum)
            task.cancel()

        installed = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Not available on Windows' proactor loop: there Ctrl-C arrives as KeyboardInterrupt instead.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop, signum)
                installed.append(signum)
        try:
            await main
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    try:
        _run_on_fastest_loop(until_signal())
    except KeyboardInterrupt:
        received.append(signal.SIGINT)
    except asyncio.CancelledError:
        if not received:
            raise
    if signal.SIGINT in received:
        raise click.exceptions.Exit(EXIT_INTERRUPTED)


def _run_on_fastest_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
