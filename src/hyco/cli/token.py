"""``hyco token``: print a SAS token for a hybrid connection (for curl and other plain HTTP senders), or with
``--namespace`` for the whole namespace (Prometheus scrapes of ``/$metrics``, management calls)."""

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
  hyco token --namespace --ttl 31536000    # a year, for a Prometheus scrape of /$metrics

{PS_NOTE}
"""


_NO_KEY = (
    "no key to sign with: pass -k/--key (and -K/--key-name), or a connection string with SharedAccessKey "
    "(-x, HYCO_CONNECTION_STRING or --connection-string-file)"
)


@click.command(name="token", epilog=_EPILOG)
@client_options()
@click.option(
    "--ttl", default=3600, show_default=True, type=click.IntRange(min=1), help="Lifetime in seconds."
)
@click.option(
    "--namespace",
    "whole_namespace",
    is_flag=True,
    help="Sign for the whole namespace (audience http://HOST/), not one hybrid connection: for /$metrics "
    "scrapes and management calls (with a Manage rule's key).",
)
@logging_options
@click.pass_context
def command(ctx: click.Context, ttl: int, whole_namespace: bool, verbose: int, log_level: str | None) -> None:
    """Print a SAS token for a hybrid connection (or, with --namespace, the namespace), signed with the key.

    The audience is built the way the .NET SDK builds it (http://host/path/), which Azure and hyco accept.
    """
    options = ClientOptions.of(ctx)
    setup_logging(options.scrub, verbose=verbose, level=log_level, default=logging.ERROR)
    with user_errors(options.scrub, lambda: options.entity):
        if whole_namespace:
            if options.path:
                raise click.UsageError("give --namespace or --path, not both")
            _, audience, provider = options.namespace_target(whole_namespace=True)
            token = asyncio.run(provider.get_token(audience, float(ttl))).token
        else:
            target = options.resolve()
            if target.token_provider is None:
                raise click.UsageError(_NO_KEY)
            token = asyncio.run(target.token_provider.token_for(str(target.address), float(ttl)))
    click.echo(token)
