"""``hyco namespace authorization-rule ...``: namespace-wide rules (as ``az relay namespace``)."""

from __future__ import annotations

import click

from hyco.cli._rules import rule_group

__all__ = ["command"]


@click.group(name="namespace")
def command() -> None:
    """The relay's namespace (as `az relay namespace`); needs a Manage key."""


command.add_command(rule_group(entity_scoped=False))
