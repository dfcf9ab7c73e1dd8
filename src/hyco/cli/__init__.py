"""The ``hyco`` command line: one module per subcommand; each parses arguments and makes one library call."""

from __future__ import annotations

import importlib
import importlib.util

import click

__all__ = ["main"]

#: Subcommand name -> module defining a click command named ``command``. Imported lazily so that
#: ``hyco listen`` does not pay for the relay's imports and vice versa.
SUBCOMMANDS: dict[str, str] = {
    "relay": "hyco.cli.relay",
    "listen": "hyco.cli.listen",
    "send": "hyco.cli.send",
    "token": "hyco.cli.token",
    "forward": "hyco.cli.forward",
    "expose": "hyco.cli.expose",
    # Management (docs/operations.md)
    "hyco": "hyco.cli.hybrid_connection",
    "namespace": "hyco.cli.namespace",
    "status": "hyco.cli.status",
    "connection-string": "hyco.cli.connection_string",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in SUBCOMMANDS if _available(name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS or not _available(cmd_name):
            return None
        module = importlib.import_module(SUBCOMMANDS[cmd_name])
        command: click.Command = module.command
        return command


def _available(name: str) -> bool:
    return importlib.util.find_spec(SUBCOMMANDS[name]) is not None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hyco", prog_name="hyco")
def main() -> None:
    """hyco: an Azure Relay Hybrid Connections relay, SDK and tunnel tools.

    \b
    Start a relay with built-in defaults:   hyco relay
    Run `hyco COMMAND --help` for the options of each command.
    """
