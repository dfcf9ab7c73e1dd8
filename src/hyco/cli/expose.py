"""``hyco expose``: publish a local HTTP server (or an ASGI app) at a hybrid connection's URL, like ngrok."""

from __future__ import annotations

import os
from datetime import datetime

import click

from hyco.cli._loop import run
from hyco.cli.token import make_token_provider, ssl_setting, tls_options
from hyco.client.listener import HybridConnectionListener
from hyco.exceptions import HycoError
from hyco.tools.expose import RequestRecord, expose, load_asgi_app, normalize_target

__all__ = ["command"]

#: azbridge's variable for the same thing; accepted as a fallback.
_AZBRIDGE_ENV = "AZURE_BRIDGE_CONNECTIONSTRING"


def _status(message: str) -> None:
    click.echo(message, err=True)


def _line(record: RequestRecord) -> None:
    colour = "green" if record.status < 400 else "yellow" if record.status < 500 else "red"
    stamp = datetime.now().strftime("%H:%M:%S")
    status = click.style(str(record.status), fg=colour)
    error = f"  {record.error}" if record.error else ""
    click.echo(f"{stamp}  {record.method:<7} {record.path}  {status}  {record.milliseconds:.0f} ms{error}")


@click.command(name="expose")
@click.argument("target", required=False)
@click.option(
    "-x",
    "--connection-string",
    envvar="HYCO_CONNECTION_STRING",
    help=f"Relay connection string with EntityPath (or env HYCO_CONNECTION_STRING / {_AZBRIDGE_ENV}).",
)
@click.option(
    "-a", "--address", envvar="HYCO_ADDRESS", help="Hybrid connection address, e.g. sb://ns.example/myhc."
)
@click.option("--path", help="Hybrid connection path, when the address names only the namespace.")
@click.option(
    "--key-name",
    default="RootManageSharedAccessKey",
    show_default=True,
    envvar="HYCO_KEY_NAME",
    help="Shared access rule name.",
)
@click.option("--key", envvar="HYCO_KEY", help="Shared access key (or env HYCO_KEY).")
@click.option("--sas", envvar="HYCO_SAS", help="A ready SAS token instead of a key (or env HYCO_SAS).")
@tls_options
@click.option("--proxy", help="HTTP proxy URL for reaching the relay, e.g. http://proxy:3128.")
@click.option("--asgi", "asgi_app", metavar="MODULE:APP", help="Serve this ASGI app in-process instead.")
@click.option("--app-dir", default=".", show_default=True, help="Directory to import the --asgi module from.")
@click.option(
    "--timeout",
    "local_timeout",
    default=55.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds to wait for the local server's response headers (then 504).",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not print a line per request.")
def command(
    target: str | None,
    connection_string: str | None,
    address: str | None,
    path: str | None,
    key_name: str,
    key: str | None,
    sas: str | None,
    ca_file: str | None,
    insecure: bool,
    proxy: str | None,
    asgi_app: str | None,
    app_dir: str,
    local_timeout: float,
    quiet: bool,
) -> None:
    """Publish TARGET (a port, host:port or http://localhost:8000) at the hybrid connection's URL.

    \b
    hyco expose 8000 -x "Endpoint=sb://ns.example/;EntityPath=web;SharedAccessKeyName=...;SharedAccessKey=..."
    hyco expose http://localhost:8000 -a sb://ns.example/web --key-name listen --key ...
    hyco expose --asgi main:app -x "$HYCO_CONNECTION_STRING"

    A request to https://ns.example/web/a/b?q reaches the local server as /a/b?q. Bodies stream both ways.
    The listener reconnects by itself; press Ctrl+C to stop.
    """
    if (target is None) == (asgi_app is None):
        raise click.UsageError("give a TARGET (port or URL) or --asgi MODULE:APP, not both")
    connection_string = connection_string or os.environ.get(_AZBRIDGE_ENV) or None
    if connection_string and address:
        raise click.UsageError("give either --connection-string or --address, not both")
    where = connection_string or address
    if not where:
        raise click.UsageError(
            f"give --connection-string (or env HYCO_CONNECTION_STRING / {_AZBRIDGE_ENV}) or --address"
        )

    def report_state(listener: HybridConnectionListener) -> None:
        if listener.is_online:
            _status("online")
        else:
            _status(f"{listener.state.value}: {listener.last_error} (reconnecting)")

    def ready(listener: HybridConnectionListener) -> None:
        local = f"ASGI app {asgi_app}" if asgi_app else normalize_target(target or "")
        _status(f"Forwarding  {listener.address.http_url()}  ->  {local}")

    try:
        app = load_asgi_app(asgi_app, app_dir) if asgi_app else None
        listener = HybridConnectionListener(
            where,
            make_token_provider(key_name, key, sas),
            path=path,
            ssl=ssl_setting(ca_file, insecure),
            proxy=proxy,
            on_online=report_state,
            on_offline=report_state,
        )
        run(
            expose(
                listener,
                target=target,
                app=app,
                report=None if quiet else _line,
                ready=ready,
                local_timeout=local_timeout,
            )
        )
    except KeyboardInterrupt:
        _status("interrupted")
    except HycoError as exc:
        raise click.ClickException(str(exc)) from exc
