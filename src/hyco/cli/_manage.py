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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import click

from hyco.cli._options import ClientOptions, client_options
from hyco.exceptions import HycoError

__all__ = ["Column", "call", "emit", "manage_options", "output_format"]

F = TypeVar("F", bound=Callable[..., Any])
_OUTPUT = "hyco.manage_output"
_TIMEOUT = 30.0


def output_format(ctx: click.Context) -> str:
    """``table`` (the default) or ``json``, as ``-o`` said."""
    return str(ctx.meta.get(_OUTPUT, "table"))


def manage_options(*, key_flag: bool = True) -> Callable[[F], F]:
    """Add the shared relay, credential and TLS options (``hyco.cli._options``) and ``-o/--output``.

    Args:
        key_flag: offer ``--key`` for the access key (``keys renew`` uses ``--key`` for the key type, as
            ``az``; ``-k`` and ``HYCO_KEY`` still work there).
    """

    def store(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.meta[_OUTPUT] = value

    output = click.option(
        "-o",
        "--output",
        type=click.Choice(["table", "json"]),
        expose_value=False,
        callback=store,
        help="Output format [table].",
    )
    shared = client_options(path=False, key_flag=key_flag)

    def decorate(func: F) -> F:
        return shared(output(func))

    return decorate


async def _call(options: ClientOptions, method: str, path: str, body: Any) -> Any:
    base, audience, provider = options.namespace_target()
    token = (await provider.get_token(audience)).token
    url = f"{base}/$management/{path}"
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT)
    ssl_setting = options.ssl_setting()
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(
            method,
            url,
            json=body,
            headers={"Authorization": token},
            ssl=True if ssl_setting is None else ssl_setting,
            proxy=options.proxy,
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
        return asyncio.run(_call(ClientOptions.of(ctx), method, path, body))
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
    if output_format(ctx) == "json":
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
