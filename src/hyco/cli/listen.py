"""``hyco listen``: accept relayed connections; echo them, pipe them to stdio, or run a command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

import click

from hyco.cli._errors import logging_options, setup_logging, user_errors
from hyco.cli._loop import run
from hyco.cli._options import PS_NOTE, ClientOptions, client_options
from hyco.cli._status import ListenerStatus
from hyco.cli.send import pipe_stream
from hyco.client.listener import HybridConnectionListener
from hyco.client.stream import HybridConnectionStream
from hyco.exceptions import HycoError

__all__ = ["command"]

_CHUNK = 65536


def _status(message: str) -> None:
    click.echo(message, err=True)


async def _echo(stream: HybridConnectionStream) -> None:
    async with stream:
        while data := await stream.read():
            await stream.write(data)
        await stream.shutdown()


async def _exec(stream: HybridConnectionStream, shell_command: str) -> None:
    process = await asyncio.create_subprocess_shell(
        shell_command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout

    async def to_process() -> None:
        with contextlib.suppress(ConnectionError, HycoError):
            while data := await stream.read():
                stdin.write(data)
                await stdin.drain()
        stdin.close()

    async def from_process() -> None:
        while data := await stdout.read(_CHUNK):
            await stream.write(data)
        await stream.shutdown()

    async with stream:
        feeder = asyncio.create_task(to_process())
        try:
            await from_process()
            await process.wait()
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _serve(
    listener: HybridConnectionListener,
    status: ListenerStatus,
    mode: str,
    shell_command: str | None,
    once: bool,
) -> None:
    tasks: set[asyncio.Task[None]] = set()
    async with listener:
        status.opened(listener)
        try:
            async for stream in listener:
                _status(f"accepted {stream.tracking_id}")
                if mode == "stdio":
                    async with stream:
                        await pipe_stream(stream, sys.stdin.buffer, sys.stdout.buffer)
                    return
                work = _echo(stream) if mode == "echo" else _exec(stream, shell_command or "")
                if once:
                    with contextlib.suppress(HycoError):
                        await work
                    return
                task = asyncio.create_task(work)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


_EPILOG = f"""\b
Examples:
  export HYCO_CONNECTION_STRING='Endpoint=ws://127.0.0.1:9350/;SharedAccessKeyName=...;SharedAccessKey=...;EntityPath=echo'
  hyco listen --echo
  hyco listen --exec 'tr a-z A-Z'
  hyco listen -a sb://ns.example/echo -K listen -k "$KEY" > received.bin

\b
Exit status: 0 done, 1 error, 2 usage, 130 interrupted (Ctrl-C).
{PS_NOTE}
"""


@click.command(name="listen", epilog=_EPILOG)
@client_options()
@click.option("--echo", "mode", flag_value="echo", help="Echo every connection back to its sender.")
@click.option("--exec", "shell_command", metavar="COMMAND", help="Run COMMAND per connection, piped to it.")
@click.option("--once", is_flag=True, help="Stop after the first connection ends.")
@logging_options
@click.pass_context
def command(
    ctx: click.Context,
    mode: str | None,
    shell_command: str | None,
    once: bool,
    verbose: int,
    log_level: str | None,
) -> None:
    """Listen on a hybrid connection and serve each relayed connection.

    \b
    default      pipe the first connection to stdout/stdin, then exit
    --echo       echo every connection (concurrently) until interrupted
    --exec CMD   run CMD for every connection with its stdin/stdout piped to the sender

    The listener reconnects by itself if the relay goes away; status lines go to stderr.
    """
    options = ClientOptions.of(ctx)
    setup_logging(options.scrub, verbose=verbose, level=log_level, default=logging.ERROR)
    if mode == "echo" and shell_command:
        raise click.UsageError("use either --echo or --exec")
    chosen = "exec" if shell_command else mode or "stdio"
    status = ListenerStatus(options.scrub)
    with user_errors(options.scrub, lambda: options.entity):
        target = options.resolve()
        listener = status.listener(target)
        run(_serve(listener, status, chosen, shell_command, once))
