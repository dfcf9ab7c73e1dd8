"""``authorization-rule`` commands (create, update, show, list, delete, ``keys list|renew``) for both
scopes: ``hyco hyco authorization-rule --hybrid-connection-name HC ...`` and ``hyco namespace
authorization-rule ...``, with ``az relay``'s flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import click

from hyco.cli._manage import Column, call, emit, manage_options

__all__ = ["RIGHTS", "rule_group"]

RIGHTS = ("Listen", "Send", "Manage")
RULE_COLUMNS = (
    Column("Name", lambda r: r["name"]),
    Column("Rights", lambda r: ", ".join(r["properties"]["rights"])),
)
KEY_COLUMNS = (
    Column("KeyName", lambda k: k["keyName"]),
    Column("PrimaryConnectionString", lambda k: k["primaryConnectionString"]),
    Column("SecondaryConnectionString", lambda k: k["secondaryConnectionString"]),
)


def _rights(given: tuple[str, ...], extra: tuple[str, ...]) -> list[str]:
    # az takes `--rights Listen Send`; click options take one value each, so the values after the first
    # arrive as extra arguments.
    chosen: list[str] = []
    for value in (*given, *extra):
        match = next((r for r in RIGHTS if r.lower() == value.lower()), None)
        if match is None:
            raise click.UsageError(f"--rights: {value!r} is not one of {', '.join(RIGHTS)}")
        if match not in chosen:
            chosen.append(match)
    if not chosen:
        raise click.UsageError(f"--rights needs one or more of {', '.join(RIGHTS)}")
    return chosen


def rule_group(entity_scoped: bool) -> click.Group:
    """The ``authorization-rule`` group for hybrid connections (``entity_scoped``) or the namespace."""

    def base(hc: str | None) -> str:
        return (
            f"hybridConnections/{quote(hc or '', safe='/')}/authorizationRules"
            if entity_scoped
            else "authorizationRules"
        )

    def scoped(func: Callable[..., Any]) -> Callable[..., Any]:
        if entity_scoped:
            func = click.option(
                "--hybrid-connection-name", "hc", required=True, metavar="HC", help="The hybrid connection."
            )(func)
        else:
            func = click.option("--hc", "hc", hidden=True, default=None)(func)
        return func

    name_option = click.option("-n", "--name", required=True, metavar="RULE", help="The rule's name.")
    rights_options = [
        click.option(
            "--rights",
            multiple=True,
            metavar="RIGHT",
            help="Listen, Send and/or Manage, space-separated as in az (--rights Listen Send).",
        ),
        click.argument("more_rights", nargs=-1, metavar=""),
    ]

    @click.group(name="authorization-rule")
    def group() -> None:
        """Authorization rules (shared access keys with rights)."""

    def put_command(verb: str, doc: str) -> None:
        @click.pass_context
        def run(
            ctx: click.Context,
            hc: str | None,
            name: str,
            rights: tuple[str, ...],
            more_rights: tuple[str, ...],
        ) -> None:
            chosen = _rights(rights, more_rights)
            path = f"{base(hc)}/{quote(name, safe='')}"
            if verb == "update":
                call(ctx, "GET", path)  # az update fails on a rule that does not exist
            emit(ctx, call(ctx, "PUT", path, {"properties": {"rights": chosen}}), RULE_COLUMNS)

        run.__doc__ = doc
        decorators: list[Callable[[Any], Any]] = [
            *reversed(rights_options),
            name_option,
            scoped,
            manage_options(),
        ]
        decorated: Any = run
        for decorator in decorators:
            decorated = decorator(decorated)
        group.command(name=verb)(decorated)

    put_command("create", "Create an authorization rule (new random keys).")
    put_command("update", "Change a rule's rights (its keys stay).")

    @group.command(name="show")
    @manage_options()
    @scoped
    @name_option
    @click.pass_context
    def show(ctx: click.Context, hc: str | None, name: str) -> None:
        """Show a rule."""
        emit(ctx, call(ctx, "GET", f"{base(hc)}/{quote(name, safe='')}"), RULE_COLUMNS)

    @group.command(name="list")
    @manage_options()
    @scoped
    @click.pass_context
    def list_(ctx: click.Context, hc: str | None) -> None:
        """List the rules."""
        emit(ctx, call(ctx, "GET", base(hc)), RULE_COLUMNS)

    @group.command(name="delete")
    @manage_options()
    @scoped
    @name_option
    @click.pass_context
    def delete(ctx: click.Context, hc: str | None, name: str) -> None:
        """Delete a rule (tokens signed with its keys are refused from then on)."""
        call(ctx, "DELETE", f"{base(hc)}/{quote(name, safe='')}")

    @group.group(name="keys")
    def keys() -> None:
        """A rule's keys and connection strings."""

    @keys.command(name="list")
    @manage_options()
    @scoped
    @name_option
    @click.pass_context
    def keys_list(ctx: click.Context, hc: str | None, name: str) -> None:
        """Show the keys and connection strings of a rule."""
        emit(ctx, call(ctx, "POST", f"{base(hc)}/{quote(name, safe='')}/listKeys"), KEY_COLUMNS)

    @keys.command(name="renew")
    @manage_options(key_flag=False)
    @scoped
    @name_option
    @click.option(
        "--key",
        "key_type",
        required=True,
        type=click.Choice(["PrimaryKey", "SecondaryKey"]),
        help="Which key.",
    )
    @click.option("--key-value", help="The new key (32 bytes, base64); a random one without it.")
    @click.pass_context
    def keys_renew(
        ctx: click.Context, hc: str | None, name: str, key_type: str, key_value: str | None
    ) -> None:
        """Replace a key; tokens signed with the old one are refused at once. (The access key is -k here.)"""
        body: dict[str, Any] = {"keyType": key_type}
        if key_value is not None:
            body["key"] = key_value
        emit(ctx, call(ctx, "POST", f"{base(hc)}/{quote(name, safe='')}/regenerateKeys", body), KEY_COLUMNS)

    return group
