"""``hyco hyco``: hybrid connections and their authorization rules, with ``az relay hyco``'s verbs, flags."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from hyco.cli._manage import Column, call, emit, manage_options
from hyco.cli._rules import rule_group

__all__ = ["command"]

STATUSES = ("Active", "Disabled", "SendDisabled", "ReceiveDisabled")
COLUMNS = (
    Column("Name", lambda h: h["name"]),
    Column("Status", lambda h: h["properties"].get("status")),
    Column("Listeners", lambda h: h["properties"].get("listenerCount")),
    Column("ClientAuth", lambda h: h["properties"].get("requiresClientAuthorization")),
    Column("UpdatedAt", lambda h: h["properties"].get("updatedAt", "")[:19].replace("T", " ")),
    Column("UserMetadata", lambda h: h["properties"].get("userMetadata")),
    Column("Inspect", lambda h: h["properties"].get("inspect")),
)


@click.group(name="hyco")
def command() -> None:
    """Hybrid connections on a hyco relay (as `az relay hyco`); needs a Manage key.

    \b
    Example:
      export HYCO_CONNECTION_STRING='Endpoint=ws://127.0.0.1:9350/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=...'
      hyco hyco create -n orders
      hyco hyco authorization-rule create --hybrid-connection-name orders -n sender --rights Send
      hyco hyco authorization-rule keys list --hybrid-connection-name orders -n sender
    """


def _path(name: str) -> str:
    return f"hybridConnections/{quote(name, safe='/')}"


def _properties(
    requires: str | None, metadata: str | None, status: str | None, inspect: str | None
) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if requires is not None:
        props["requiresClientAuthorization"] = requires == "true"
    if metadata is not None:
        props["userMetadata"] = metadata
    if status is not None:
        props["status"] = status
    if inspect is not None:
        props["inspect"] = inspect == "true"
    return props


def _put(ctx: click.Context, name: str, properties: dict[str, Any], *, must_exist: bool) -> None:
    if must_exist:
        call(ctx, "GET", _path(name))  # az update fails on one that does not exist
    emit(ctx, call(ctx, "PUT", _path(name), {"properties": properties}), COLUMNS)


def _put_options(func: Any) -> Any:
    func = click.option(
        "--inspect",
        type=click.Choice(["true", "false"]),
        help="Record its relayed HTTP requests for the dashboard's inspector (hyco's own) [false].",
    )(func)
    func = click.option("--status", type=click.Choice(STATUSES), help="Admit listeners and senders or not.")(
        func
    )
    func = click.option("--user-metadata", metavar="TEXT", help="Text kept with the hybrid connection.")(func)
    func = click.option(
        "-r",
        "--requires-client-authorization",
        "requires",
        type=click.Choice(["true", "false"]),
        help="Senders need a Send token [true].",
    )(func)
    return click.option("-n", "--name", required=True, help="The hybrid connection's name (path).")(func)


@command.command(name="create")
@manage_options()
@_put_options
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    requires: str | None,
    user_metadata: str | None,
    status: str | None,
    inspect: str | None,
) -> None:
    """Create a hybrid connection (kept across restarts)."""
    _put(ctx, name, _properties(requires, user_metadata, status, inspect), must_exist=False)


@command.command(name="update")
@manage_options()
@_put_options
@click.pass_context
def update(
    ctx: click.Context,
    name: str,
    requires: str | None,
    user_metadata: str | None,
    status: str | None,
    inspect: str | None,
) -> None:
    """Change a hybrid connection's settings (what is not given stays)."""
    _put(ctx, name, _properties(requires, user_metadata, status, inspect), must_exist=True)


@command.command(name="show")
@manage_options()
@click.option("-n", "--name", required=True, help="The hybrid connection's name (path).")
@click.pass_context
def show(ctx: click.Context, name: str) -> None:
    """Show a hybrid connection, with its live listener count."""
    emit(ctx, call(ctx, "GET", _path(name)), COLUMNS)


@command.command(name="list")
@manage_options()
@click.pass_context
def list_(ctx: click.Context) -> None:
    """List the hybrid connections."""
    emit(ctx, call(ctx, "GET", "hybridConnections"), COLUMNS)


@command.command(name="delete")
@manage_options()
@click.option("-n", "--name", required=True, help="The hybrid connection's name (path).")
@click.pass_context
def delete(ctx: click.Context, name: str) -> None:
    """Delete a hybrid connection and its rules; its listeners are disconnected (1001)."""
    call(ctx, "DELETE", _path(name))


command.add_command(rule_group(entity_scoped=True))
