"""``hyco status``: a live table of hybrid connections, listeners and traffic (needs a Manage key)."""

from __future__ import annotations

import time
from typing import Any

import click

from hyco.cli._manage import call, manage_options, output_format

__all__ = ["command"]


def _snapshot(ctx: click.Context) -> dict[str, Any]:
    """One reading: ``/$management/status`` (per-entity live counts)."""
    data: dict[str, Any] = call(ctx, "GET", "status")
    return data


def _table(data: dict[str, Any]) -> Any:
    from rich.table import Table

    totals = data["totals"]
    title = (
        f"{totals['listeners']} listeners, {totals['active_connections']} connections, "
        f"{totals['http_requests_in_flight']} HTTP requests in flight"
    )
    table = Table(title=title, box=None, header_style="bold")
    for header in (
        "Hybrid connection",
        "Status",
        "Listeners",
        "Connections",
        "Bytes in",
        "Bytes out",
        "HTTP",
    ):
        table.add_column(header, justify="left" if header in ("Hybrid connection", "Status") else "right")
    for item in data["hybridConnections"]:
        table.add_row(
            item["name"],
            item["status"],
            str(item["listeners"]),
            str(item["activeConnections"]),
            _bytes(item["bytesIn"]),
            _bytes(item["bytesOut"]),
            str(item["httpRequests"]),
        )
    return table


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


@click.command(name="status")
@manage_options()
@click.option("--once", is_flag=True, help="Print one table and exit (the default when not on a terminal).")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.2), help="Seconds.")
@click.pass_context
def command(ctx: click.Context, once: bool, interval: float) -> None:
    """Show hybrid connections, listeners, live connections, bytes and HTTP requests; live until Ctrl-C.

    \b
    Example:
      hyco status -x "$HYCO_CONNECTION_STRING"
      hyco status -o json --once
    """
    import json

    from rich.console import Console
    from rich.live import Live

    if output_format(ctx) == "json":
        click.echo(json.dumps(_snapshot(ctx), indent=2))
        return
    console = Console()
    if once or not console.is_terminal:
        console.print(_table(_snapshot(ctx)))
        return
    with Live(_table(_snapshot(ctx)), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(_table(_snapshot(ctx)), refresh=True)
        except KeyboardInterrupt:
            pass
