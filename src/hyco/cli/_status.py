"""Status lines for commands that hold a listener (``listen``, ``expose``): one line per change, on stderr."""

from __future__ import annotations

import click

from hyco.cli._errors import Scrubber
from hyco.cli._options import ResolvedTarget
from hyco.client.listener import HybridConnectionListener

__all__ = ["ListenerStatus"]


class ListenerStatus:
    """Prints ``online: ...`` / ``offline: ...; reconnecting`` once per change of the listener's state.

    Nothing is printed before :meth:`opened`: a failed ``open()`` raises, and the command reports that error
    once (not a second time as a state change).

    Args:
        scrub: keeps secrets out of the lines.
    """

    def __init__(self, scrub: Scrubber) -> None:
        self._scrub = scrub
        self._open = False
        self._last = ""

    def listener(self, target: ResolvedTarget) -> HybridConnectionListener:
        """A listener for ``target`` whose state changes this object reports."""
        return HybridConnectionListener(
            str(target.address),
            target.token_provider,
            ssl=target.ssl,
            proxy=target.proxy,
            on_online=self.changed,
            on_offline=self.changed,
        )

    def opened(self, listener: HybridConnectionListener) -> None:
        """The listener's ``open()`` returned: report where it stands from now on."""
        self._open = True
        self._report(listener)

    def changed(self, listener: HybridConnectionListener) -> None:
        """``on_online`` / ``on_offline`` callback."""
        if self._open:
            self._report(listener)

    def _report(self, listener: HybridConnectionListener) -> None:
        if listener.is_online:
            line = f"online: listening on {listener.address}"
        else:
            line = f"offline: {listener.last_error}; reconnecting"
        if (
            line != self._last
        ):  # each failed reconnect attempt ends offline again, usually for the same reason
            self._last = line
            click.echo(self._scrub(line), err=True)
