"""What the management commands share (``hyco hyco``, ``hyco namespace``, ``hyco status``,
``hyco connection-string``): the relay and Manage credential options, one call to ``/$management/...``, and
output as a table (default) or JSON (``-o json``), as ``az`` prints.

The relay and credentials come as for the other client commands: ``-x/--connection-string`` (env
``HYCO_CONNECTION_STRING``), ``-a/--address`` (env ``HYCO_ADDRESS``), ``-K/--key-name``, ``-k/--key``,
``-s/--sas`` (env ``HYCO_KEY_NAME``, ``HYCO_KEY``, ``HYCO_SAS``), ``--ca-file``, ``--insecure``. The key must
belong to a rule with Manage rights. Keys and tokens never appear in an error message.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import click

from hyco.client.credentials import TokenProvider
from hyco.exceptions import HycoError
from hyco.protocol.connection_string import RelayConnectionString

__all__ = ["Column", "ManageOptions", "call", "emit", "manage_options"]

F = TypeVar("F", bound=Callable[..., Any])
_META = "hyco.manage_options"
_DEFAULT_KEY_NAME = "RootManageSharedAccessKey"
_TIMEOUT = 30.0


@dataclass
class ManageOptions:
    """The options as given; :meth:`target` makes the relay's base URL and a token provider of them."""

    connection_string: str | None = None
    address: str | None = None
    key_name: str | None = None
    key: str | None = None
    sas: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    output: str = "table"

    @classmethod
    def of(cls, ctx: click.Context) -> ManageOptions:
        """The options of the running command."""
        options: ManageOptions = ctx.find_root().meta.setdefault(_META, ManageOptions())
        return options

    def target(self) -> tuple[str, str, TokenProvider]:
        """The relay's HTTP base URL, the token audience (the namespace, or the connection string's entity)
        and the token provider.

        Raises:
            click.UsageError: no relay or no credential given.
        """
        cs = RelayConnectionString.parse(self.connection_string) if self.connection_string else None
        where = self.address or (cs.endpoint if cs else None)
        if not where:
            raise click.UsageError(
                "which relay? give -x CONNECTION_STRING (or set HYCO_CONNECTION_STRING) or -a sb://HOST"
            )
        parts = urlsplit(where.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("sb", "wss", "https", "ws", "http") or not parts.hostname:
            raise click.UsageError(
                f"{where!r} is not a relay address: use sb://HOST[:PORT] or ws://HOST:PORT"
            )
        base = f"{'https' if scheme in ('sb', 'wss', 'https') else 'http'}://{parts.netloc}"
        scope = cs.entity_path if cs is not None and cs.entity_path and not self.address else ""
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        audience = f"http://{host}/{scope}"
        if self.key and self.sas:
            raise click.UsageError("give either -k/--key or -s/--sas, not both")
        provider: TokenProvider | None = None
        if self.sas:
            provider = TokenProvider.from_sas(self.sas)
        elif self.key:
            name = self.key_name or (cs.shared_access_key_name if cs else None) or _DEFAULT_KEY_NAME
            provider = TokenProvider.from_shared_access_key(name, self.key)
        elif cs is not None and (cs.shared_access_key or cs.shared_access_signature):
            provider = TokenProvider.from_connection_string(cs)
        if provider is None:
            raise click.UsageError("give a Manage credential: -k KEY (or HYCO_KEY), -s SAS, or -x with a key")
        return base, audience, provider

    def ssl_setting(self) -> ssl.SSLContext | bool:
        """aiohttp's ``ssl=`` for the options."""
        if self.insecure:
            click.echo("warning: --insecure: the relay's TLS certificate is not checked", err=True)
            return False
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True


def _option(*names: str, field: str, **settings: Any) -> Callable[[F], F]:
    def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            setattr(ManageOptions.of(ctx), field, value)

    return click.option(*names, field, expose_value=False, callback=store, **settings)


def manage_options(*, key_flag: bool = True) -> Callable[[F], F]:
    """Add the relay, credential, TLS and output options to a command.

    Args:
        key_flag: offer ``--key`` for the access key (``keys renew`` uses ``--key`` for the key type, as
            ``az``; ``-k`` and ``HYCO_KEY`` still work there).
    """
    options = [
        _option(
            "-x",
            "--connection-string",
            field="connection_string",
            metavar="CONNSTR",
            envvar="HYCO_CONNECTION_STRING",
            help="Relay connection string with a Manage key [env HYCO_CONNECTION_STRING].",
        ),
        _option(
            "-a",
            "--address",
            field="address",
            metavar="URI",
            envvar="HYCO_ADDRESS",
            help="Relay address, sb://HOST[:PORT] (TLS) or ws://HOST:PORT [env HYCO_ADDRESS].",
        ),
        _option(
            "-K",
            "--key-name",
            field="key_name",
            metavar="NAME",
            envvar="HYCO_KEY_NAME",
            help=f"Shared access rule name [{_DEFAULT_KEY_NAME}; env HYCO_KEY_NAME].",
        ),
        _option(
            "-k",
            *(("--key",) if key_flag else ("--access-key",)),
            field="key",
            metavar="KEY",
            envvar="HYCO_KEY",
            help="Shared access key of a rule with Manage rights [env HYCO_KEY].",
        ),
        _option("-s", "--sas", field="sas", metavar="TOKEN", envvar="HYCO_SAS", help="A ready SAS token."),
        _option(
            "--ca-file", field="ca_file", type=click.Path(exists=True, dir_okay=False), help="CAs to trust."
        ),
        _option(
            "--insecure", field="insecure", is_flag=True, default=None, help="Skip TLS checks (testing)."
        ),
        _option(
            "-o",
            "--output",
            field="output",
            type=click.Choice(["table", "json"]),
            help="Output format [table].",
        ),
    ]

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


async def _call(options: ManageOptions, method: str, path: str, body: Any) -> Any:
    base, audience, provider = options.target()
    token = (await provider.get_token(audience)).token
    url = f"{base}/$management/{path}"
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(
            method, url, json=body, headers={"Authorization": token}, ssl=options.ssl_setting()
        ) as response,
    ):
        text = await response.text()
        data = json.loads(text) if text and response.content_type == "application/json" else None
        if response.status >= 400:
            error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            message = error.get("message") or f"{response.status} {response.reason}"
            raise click.ClickException(f"{error.get('code', response.status)}: {message}")
        return data


def call(ctx: click.Context, method: str, path: str, body: Any = None) -> Any:
    """Make one management call; returns its JSON body (None when empty).

    Raises:
        click.ClickException: the relay refused (its ARM error message) or could not be reached.
    """
    try:
        return asyncio.run(_call(ManageOptions.of(ctx), method, path, body))
    except HycoError as exc:
        raise click.ClickException(str(exc)) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise click.ClickException(f"cannot reach the relay: {exc or type(exc).__name__}") from None


@dataclass(frozen=True)
class Column:
    """One table column: its header and how to get the cell from an item."""

    header: str
    get: Callable[[dict[str, Any]], Any]


def emit(ctx: click.Context, data: Any, columns: Sequence[Column]) -> None:
    """Print ``data`` (an item, or ``{"value": [...]}``) as JSON or as a table of ``columns``."""
    if ManageOptions.of(ctx).output == "json":
        click.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    items = data["value"] if isinstance(data, dict) and "value" in data else [data]
    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(column.header)
    for item in items:
        table.add_row(*("" if (cell := c.get(item)) is None else str(cell) for c in columns))
    Console(soft_wrap=True).print(table)
