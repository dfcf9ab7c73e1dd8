"""``hyco send``: connect to a hybrid connection and pipe stdin/stdout through it."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import BinaryIO

import click

from hyco.cli._errors import logging_options, setup_logging, user_errors
from hyco.cli._loop import run
from hyco.cli._options import PS_NOTE, ClientOptions, client_options
from hyco.client.sender import HybridConnectionClient
from hyco.client.stream import HybridConnectionStream
from hyco.exceptions import ConnectionRejected, EndpointNotFound
from hyco.tools.pipe import pipe_files

__all__ = ["command", "pipe_stream"]

#: Exit status when the listener rejects the connection.
EXIT_REJECTED = 3


async def pipe_stream(stream: HybridConnectionStream, source: BinaryIO, sink: BinaryIO) -> None:
    """Copy ``source`` → stream and stream → ``sink`` until both directions end (:func:`pipe_files`).

    Raises:
        HycoError, OSError: the relayed stream or a file failed.
    """
    result = await pipe_files(source, sink, stream)
    if result.error is not None:
        raise result.error


_EPILOG = f"""\b
Examples:
  export HYCO_CONNECTION_STRING='Endpoint=ws://127.0.0.1:9350/;SharedAccessKeyName=...;SharedAccessKey=...;EntityPath=echo'
  echo hello | hyco send
  hyco listen --echo & echo hello | hyco send --wait    # --wait: until the listener is online
  hyco send -a sb://ns.example/echo -K send -k "$KEY" -H 'X-App: v1' < request > reply

\b
Exit status: 0 done, 1 error, 2 usage, 3 rejected by the listener, 130 interrupted (Ctrl-C).
{PS_NOTE}
"""


@click.command(name="send", epilog=_EPILOG)
@client_options()
@click.option("-H", "--header", "headers", multiple=True, metavar="NAME:VALUE", help="Extra upgrade header.")
@click.option("--subprotocol", "subprotocols", multiple=True, help="Offer a WebSocket sub-protocol.")
@click.option("--connect-timeout", type=float, default=None, help="Seconds to wait for a listener [70].")
@click.option(
    "--wait",
    is_flag=True,
    help="While the relay answers 404 (no listener yet, or a hybrid connection its listener has yet to "
    "create), keep trying (up to --connect-timeout).",
)
@logging_options
@click.pass_context
def command(
    ctx: click.Context,
    headers: tuple[str, ...],
    subprotocols: tuple[str, ...],
    connect_timeout: float | None,
    wait: bool,
    verbose: int,
    log_level: str | None,
) -> None:
    """Connect to a hybrid connection; pipe stdin to the listener and its answer to stdout."""
    options = ClientOptions.of(ctx)
    setup_logging(options.scrub, verbose=verbose, level=log_level, default=logging.ERROR)
    extra: dict[str, str] = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise click.UsageError(f"--header {header!r} is not NAME:VALUE")
        extra[name.strip()] = value.strip()
    with user_errors(options.scrub, lambda: options.entity):
        target = options.resolve()
        client = HybridConnectionClient(
            str(target.address),
            target.token_provider,
            ssl=target.ssl,
            connect_timeout=connect_timeout if connect_timeout is not None else target.operation_timeout,
            proxy=target.proxy,
        )
        try:
            run(_send(client, extra, subprotocols, wait))
        except ConnectionRejected as exc:
            click.echo(
                options.scrub(
                    f"Error: the listener rejected the connection: {exc.http_status} {exc.description}"
                ),
                err=True,
            )
            sys.exit(EXIT_REJECTED)


async def _send(
    client: HybridConnectionClient, headers: dict[str, str], subprotocols: tuple[str, ...], wait: bool
) -> None:
    stream = await (
        _connect_when_listening(client, headers, subprotocols)
        if wait
        else client.connect(headers, subprotocols)
    )
    async with stream:
        await pipe_stream(stream, sys.stdin.buffer, sys.stdout.buffer)


#: Pauses between attempts while waiting for a listener (--wait): quick at first, then 1 s.
_WAIT_DELAYS = (0.1, 0.2, 0.5, 1.0)


async def _connect_when_listening(
    client: HybridConnectionClient, headers: dict[str, str], subprotocols: tuple[str, ...]
) -> HybridConnectionStream:
    """Connect, retrying while the relay answers 404, for up to the connect timeout.

    The relay answers "no listeners connected" at once (as Azure does), and a relay that creates hybrid
    connections on first listen does not know the name before that: a listener started a moment ago
    (``hyco listen ... &``) may not be online yet.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + client.connect_timeout
    attempt = 0
    while True:
        try:
            return await client.connect(headers, subprotocols)
        except EndpointNotFound:
            delay = _WAIT_DELAYS[min(attempt, len(_WAIT_DELAYS) - 1)]
            if loop.time() + delay > deadline:
                raise
        attempt += 1
        await asyncio.sleep(delay)
