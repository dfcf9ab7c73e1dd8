"""``hyco connection-string [NAME]``: print a connection string of the relay, for the namespace or for
hybrid connection NAME, from a rule's keys (needs a Manage key)."""

from __future__ import annotations

from urllib.parse import quote

import click

from hyco.cli._manage import call, manage_options, output_format
from hyco.cli._options import ClientOptions

__all__ = ["command"]


@click.command(name="connection-string")
@manage_options()
@click.argument("name", required=False)
@click.option(
    "--rule",
    metavar="RULE",
    help="The rule whose key to use: NAME's own rule of that name, else the namespace's [the -K/-x rule].",
)
@click.option("--secondary", is_flag=True, help="Use the secondary key.")
@click.pass_context
def command(ctx: click.Context, name: str | None, rule: str | None, secondary: bool) -> None:
    """Print the connection string for hybrid connection NAME (or the namespace) to hand to a client.

    \b
    Example:
      hyco connection-string orders --rule sender
    """
    from hyco.protocol.connection_string import RelayConnectionString

    options = ClientOptions.of(ctx)
    if rule is None:
        text = options.connection_string_text()
        cs = RelayConnectionString.parse(text) if text else None
        rule = options.key_name or (cs.shared_access_key_name if cs else None) or "RootManageSharedAccessKey"
    field = "secondaryConnectionString" if secondary else "primaryConnectionString"
    keys = None
    if name:
        path = f"hybridConnections/{quote(name, safe='/')}/authorizationRules/{quote(rule, safe='')}/listKeys"
        rules = call(ctx, "GET", f"hybridConnections/{quote(name, safe='/')}/authorizationRules")
        if any(r["name"].lower() == rule.lower() for r in rules["value"]):
            keys = call(ctx, "POST", path)
    if keys is None:
        keys = call(ctx, "POST", f"authorizationRules/{quote(rule, safe='')}/listKeys")
    text = keys[field]
    if not text:
        raise click.ClickException(f"the rule {rule!r} has no secondary key")
    if name and "EntityPath=" not in text:
        text = str(RelayConnectionString.parse(text).with_entity_path(name))
    if output_format(ctx) == "json":
        import json

        click.echo(json.dumps({"connectionString": text}))
    else:
        click.echo(text)
