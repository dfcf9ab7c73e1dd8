"""``hyco token``: print a SAS token (and the credential options that ``listen`` and ``send`` share)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import click

from hyco.client.credentials import TokenProvider, normalize_audience
from hyco.client.sender import resolve_address
from hyco.exceptions import HycoError

__all__ = ["command", "credential_options", "make_token_provider", "tls_options"]

F = TypeVar("F", bound=Callable[..., Any])


def credential_options(func: F) -> F:
    """Add ``ADDRESS``, ``--path``, ``--key-name``, ``--key`` and ``--sas`` to a command."""
    options = [
        click.argument("address", envvar="HYCO_ADDRESS"),
        click.option("--path", help="Hybrid connection path, when ADDRESS names only the namespace."),
        click.option(
            "--key-name",
            default="RootManageSharedAccessKey",
            show_default=True,
            envvar="HYCO_KEY_NAME",
            help="Shared access rule name.",
        ),
        click.option("--key", envvar="HYCO_KEY", help="Shared access key (or env HYCO_KEY)."),
        click.option(
            "--sas", envvar="HYCO_SAS", help="A ready SAS token instead of a key (or env HYCO_SAS)."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def tls_options(func: F) -> F:
    """Add ``--ca-file`` and ``--insecure``."""
    func = click.option(
        "--insecure", is_flag=True, help="Do not verify the relay's TLS certificate (testing only)."
    )(func)
    func = click.option(
        "--ca-file", type=click.Path(exists=True, dir_okay=False), help="PEM file of extra trusted CAs."
    )(func)
    return func


def ssl_setting(ca_file: str | None, insecure: bool) -> ssl.SSLContext | bool | None:
    """The ``ssl=`` argument for the SDK from the TLS options."""
    if insecure:
        return False
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def make_token_provider(key_name: str, key: str | None, sas: str | None) -> TokenProvider | None:
    """A token provider from the credential options, or None (connection string or no auth)."""
    if sas and key:
        raise click.UsageError("give either --key or --sas, not both")
    if sas:
        return TokenProvider.from_sas(sas)
    if key:
        return TokenProvider.from_shared_access_key(key_name, key)
    return None


@click.command(name="token")
@credential_options
@click.option(
    "--ttl", default=3600, show_default=True, type=click.IntRange(min=1), help="Lifetime in seconds."
)
def command(
    address: str, path: str | None, key_name: str, key: str | None, sas: str | None, ttl: int
) -> None:
    """Print a SAS token for ADDRESS (sb://host/path or a connection string with a key).

    The audience is built the way the .NET SDK builds it (http://host/path/), which Azure and hyco accept.
    """
    try:
        resolved = resolve_address(address, make_token_provider(key_name, key, sas), path, role="token")
        if resolved.token_provider is None:
            raise click.UsageError("give --key (or a connection string with SharedAccessKey)")
        audience = normalize_audience(f"http://{resolved.address.netloc}/{resolved.address.path}")
        token = asyncio.run(resolved.token_provider.get_token(audience, float(ttl)))
    except HycoError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(token.token)
