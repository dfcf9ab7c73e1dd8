"""``hyco token``: print a SAS token for a hybrid connection (for curl and other plain HTTP senders)."""

from __future__ import annotations

import asyncio
import logging

import click

from hyco.cli._errors import logging_options, setup_logging, user_errors
from hyco.cli._options import PS_NOTE, ClientOptions, client_options

__all__ = ["command"]

_EPILOG = f"""\b
Examples:
  export HYCO_CONNECTION_STRING='Endpoint=ws://127.0.0.1:9350/;SharedAccessKeyName=...;SharedAccessKey=...'
  hyco token --path echo
  curl -H "ServiceBusAuthorization: $(hyco token --path echo)" http://127.0.0.1:9350/echo/hello
  hyco token -a sb://ns.example/web -K send -k "$KEY" --ttl 600

{PS_NOTE}
"""


@click.command(name="token", epilog=_EPILOG)
@client_options()
@click.option(
    "--ttl", default=3600, show_default=True, type=click.IntRange(min=1), help="Lifetime in seconds."
)
@logging_options
@click.pass_context
def command(ctx: click.Context, ttl: int, verbose: int, log_level: str | None) -> None:
    """Print a SAS token for a hybrid connection, signed with the key.

    The audience is built the way the .NET SDK builds it (http://host/path/), which Azure and hyco accept.
    """
    options = ClientOptions.of(ctx)
    setup_logging(options.scrub, verbose=verbose, level=log_level, default=logging.ERROR)
    with user_errors(options.scrub, lambda: options.entity):
        target = options.resolve()
        if target.token_provider is None:
            raise click.UsageError(
                "no key to sign with: pass -k/--key (and -K/--key-name), or a connection string with "
                "SharedAccessKey (-x, HYCO_CONNECTION_STRING or --connection-string-file)"
            )
        token = asyncio.run(target.token_provider.token_for(str(target.address), float(ttl)))
    click.echo(token)
