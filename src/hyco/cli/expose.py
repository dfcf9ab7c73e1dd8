"""``hyco expose``: publish a local HTTP server (or an ASGI app) at a hybrid connection's URL, like ngrok."""

from __future__ import annotations

import logging
from datetime import datetime

import click

from hyco.cli._errors import logging_options, setup_logging, user_errors
from hyco.cli._loop import run
from hyco.cli._options import PS_NOTE, ClientOptions, client_options
from hyco.cli._status import ListenerStatus
from hyco.client.listener import HybridConnectionListener
from hyco.tools.expose import RequestRecord, expose, load_asgi_app, normalize_target

__all__ = ["command"]

#: azbridge's variable for the connection string; read after HYCO_CONNECTION_STRING.
_AZBRIDGE_ENV = "AZURE_BRIDGE_CONNECTIONSTRING"


def _line(record: RequestRecord) -> None:
    colour = "green" if record.status < 400 else "yellow" if record.status < 500 else "red"
    stamp = datetime.now().strftime("%H:%M:%S")
    status = click.style(str(record.status), fg=colour)
    error = f"  {record.error}" if record.error else ""
    click.echo(f"{stamp}  {record.method:<7} {record.path}  {status}  {record.milliseconds:.0f} ms{error}")


_EPILOG = f"""\b
Examples:
  export HYCO_CONNECTION_STRING='Endpoint=sb://ns.example/;SharedAccessKeyName=...;SharedAccessKey=...'
  hyco expose 8000 --path web
  hyco expose http://localhost:8000/app -a sb://ns.example/web -K listen -k "$KEY"
  hyco expose --asgi main:app -x "$HYCO_CONNECTION_STRING;EntityPath=web"

\b
A request to https://ns.example/web/a/b?q reaches the local server as /a/b?q; redirects to /x come back as
/web/x. Exit status: 0 stopped (SIGTERM), 1 error, 2 usage, 130 interrupted (Ctrl-C).
{PS_NOTE} The connection string may also come from {_AZBRIDGE_ENV}.
"""


@click.command(name="expose", epilog=_EPILOG)
@click.argument("target", required=False)
@client_options()
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
@logging_options
@click.pass_context
def command(
    ctx: click.Context,
    target: str | None,
    asgi_app: str | None,
    app_dir: str,
    local_timeout: float,
    quiet: bool,
    verbose: int,
    log_level: str | None,
) -> None:
    """Publish TARGET (a port, host:port or http://localhost:8000) at the hybrid connection's URL.

    Bodies stream both ways. The listener reconnects by itself; press Ctrl+C to stop. Errors of the app
    (an ASGI route that raises) are logged with their traceback on stderr.
    """
    options = ClientOptions.of(ctx)
    setup_logging(options.scrub, verbose=verbose, level=log_level, default=logging.ERROR)
    if (target is None) == (asgi_app is None):
        raise click.UsageError("give a TARGET (port or URL) or --asgi MODULE:APP, not both")
    status = ListenerStatus(options.scrub)

    def ready(listener: HybridConnectionListener) -> None:
        local = f"ASGI app {asgi_app}" if asgi_app else normalize_target(target or "")
        click.echo(f"Forwarding  {listener.address.http_url()}  ->  {local}", err=True)
        status.opened(listener)

    with user_errors(options.scrub, lambda: options.entity):
        target_relay = options.resolve(fallback_env=(_AZBRIDGE_ENV,))
        app = load_asgi_app(asgi_app, app_dir) if asgi_app else None
        listener = status.listener(target_relay)
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
