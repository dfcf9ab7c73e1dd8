"""``hyco send``: connect to a hybrid connection and pipe stdin/stdout through it."""

from __future__ import annotations

import sys
from typing import BinaryIO

import click

from hyco.cli._loop import run
from hyco.cli.token import credential_options, make_token_provider, ssl_setting, tls_options
from hyco.client.sender import HybridConnectionClient
from hyco.client.stream import HybridConnectionStream
from hyco.exceptions import ConnectionRejected, HycoError
from hyco.tools.pipe import pipe_files

__all__ = ["command", "pipe_stream"]


async def pipe_stream(stream: HybridConnectionStream, source: BinaryIO, sink: BinaryIO) -> None:
    """Copy ``source`` → stream and stream → ``sink`` until both directions end (:func:`pipe_files`).

    Raises:
        HycoError, OSError: the relayed stream or a file failed.
    """
    result = await pipe_files(source, sink, stream)
    if result.error is not None:
        raise result.error


@click.command(name="send")
@credential_options
@tls_options
@click.option("-H", "--header", "headers", multiple=True, metavar="NAME:VALUE", help="Extra upgrade header.")
@click.option("--subprotocol", "subprotocols", multiple=True, help="Offer a WebSocket sub-protocol.")
@click.option("--connect-timeout", type=float, default=None, help="Seconds to wait for a listener (70).")
@click.option("--proxy", help="HTTP proxy URL, e.g. http://proxy:3128 (CONNECT for TLS).")
def command(
    address: str,
    path: str | None,
    key_name: str,
    key: str | None,
    sas: str | None,
    ca_file: str | None,
    insecure: bool,
    headers: tuple[str, ...],
    subprotocols: tuple[str, ...],
    connect_timeout: float | None,
    proxy: str | None,
) -> None:
    """Connect to ADDRESS and pipe stdin to the listener and its answer to stdout.

    ADDRESS is sb://host[:port]/path (TLS), ws://host:port/path (plain), or a connection string.
    Exit status: 0 done, 1 error, 2 usage, 3 rejected by the listener.
    """
    extra: dict[str, str] = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise click.UsageError(f"--header {header!r} is not NAME:VALUE")
        extra[name.strip()] = value.strip()
    try:
        client = HybridConnectionClient(
            address,
            make_token_provider(key_name, key, sas),
            path=path,
            ssl=ssl_setting(ca_file, insecure),
            connect_timeout=connect_timeout,
            proxy=proxy,
        )
        run(_send(client, extra, subprotocols))
    except ConnectionRejected as exc:
        click.echo(
            f"Error: the listener rejected the connection: {exc.http_status} {exc.description}", err=True
        )
        sys.exit(3)
    except HycoError as exc:
        raise click.ClickException(str(exc)) from exc


async def _send(
    client: HybridConnectionClient, headers: dict[str, str], subprotocols: tuple[str, ...]
) -> None:
    stream = await client.connect(headers, subprotocols)
    async with stream:
        await pipe_stream(stream, sys.stdin.buffer, sys.stdout.buffer)
