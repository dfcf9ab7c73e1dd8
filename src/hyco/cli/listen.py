"""``hyco listen``: accept relayed connections; echo them, pipe them to stdio, or run a command."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import click

from hyco.cli._loop import run
from hyco.cli.send import pipe_stream
from hyco.cli.token import credential_options, make_token_provider, ssl_setting, tls_options
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
    listener: HybridConnectionListener, mode: str, shell_command: str | None, once: bool
) -> None:
    tasks: set[asyncio.Task[None]] = set()
    async with listener:
        _status(f"listening on {listener.address} ({listener.state.value})")
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


@click.command(name="listen")
@credential_options
@tls_options
@click.option("--echo", "mode", flag_value="echo", help="Echo every connection back to its sender.")
@click.option("--exec", "shell_command", metavar="COMMAND", help="Run COMMAND per connection, piped to it.")
@click.option("--once", is_flag=True, help="Stop after the first connection ends.")
@click.option("--proxy", help="HTTP proxy URL, e.g. http://proxy:3128 (CONNECT for TLS).")
def command(
    address: str,
    path: str | None,
    key_name: str,
    key: str | None,
    sas: str | None,
    ca_file: str | None,
    insecure: bool,
    mode: str | None,
    shell_command: str | None,
    once: bool,
    proxy: str | None,
) -> None:
    """Listen on ADDRESS and serve each relayed connection.

    \b
    default      pipe the first connection to stdout/stdin, then exit
    --echo       echo every connection (concurrently) until interrupted
    --exec CMD   run CMD for every connection with its stdin/stdout piped to the sender

    The listener reconnects by itself if the relay goes away; status lines go to stderr.
    """
    if mode == "echo" and shell_command:
        raise click.UsageError("use either --echo or --exec")
    chosen = "exec" if shell_command else mode or "stdio"

    def report(listener: HybridConnectionListener) -> None:
        error = f": {listener.last_error}" if listener.last_error and not listener.is_online else ""
        _status(f"{listener.state.value}{error}")

    try:
        listener = HybridConnectionListener(
            address,
            make_token_provider(key_name, key, sas),
            path=path,
            ssl=ssl_setting(ca_file, insecure),
            proxy=proxy,
            on_online=report,
            on_offline=report,
        )
        run(_serve(listener, chosen, shell_command, once))
    except KeyboardInterrupt:
        _status("interrupted")
    except HycoError as exc:
        raise click.ClickException(str(exc)) from exc
