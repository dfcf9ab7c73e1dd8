"""An in-memory control channel: the listener's and the relay's sans-I/O ends joined back to back.

For tests of the channel's rules with no sockets and no event loop, as h11's ``ConnectionPair``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hyco.exceptions import RemoteProtocolError
from hyco.protocol.control import (
    BinaryMessage,
    CloseMessage,
    ControlEvent,
    ListenerControlProtocol,
    OutgoingMessage,
    RelayControlProtocol,
    TextMessage,
)

__all__ = ["ControlChannelPair"]


_End = RelayControlProtocol | ListenerControlProtocol


def _deliver(message: OutgoingMessage, to: _End) -> None:
    if isinstance(message, TextMessage):
        to.receive_text(message.text)
    elif isinstance(message, BinaryMessage):
        to.receive_binary(message.data)
    else:
        to.receive_close(message.code, message.reason)


@dataclass
class ControlChannelPair:
    """Both ends of one control channel, and a :meth:`pump` that carries messages between them.

    Attributes:
        relay: the relay's end.
        listener: the SDK's end.
        relay_events, listener_events: every event each end reported, oldest first.
        wire: every message carried, as ``(sender role, message)``.
    """

    relay: RelayControlProtocol
    listener: ListenerControlProtocol
    relay_events: list[ControlEvent] = field(default_factory=list)
    listener_events: list[ControlEvent] = field(default_factory=list)
    wire: list[tuple[str, OutgoingMessage]] = field(default_factory=list)

    @classmethod
    def open(
        cls, *, token_expiry: float, token_grace: float, renew_at: float | None = None
    ) -> ControlChannelPair:
        """A fresh pair, as right after the listener's handshake."""
        return cls(
            RelayControlProtocol(token_expiry=token_expiry, token_grace=token_grace),
            ListenerControlProtocol(renew_at=renew_at),
        )

    def inject(self, sender: str, message: OutgoingMessage) -> None:
        """Deliver ``message`` at once as if ``sender`` (``"relay"`` or ``"listener"``) wrote it raw.

        For tests of how one end takes a broken peer: the ends' own ``send_*`` methods only produce legal
        messages.

        Raises:
            RemoteProtocolError: the other end refused it (its Close waits for the next :meth:`pump`).
        """
        self.wire.append((sender, message))
        try:
            _deliver(message, self.relay if sender == "listener" else self.listener)
        finally:
            self.relay_events += self.relay.events_received()
            self.listener_events += self.listener.events_received()

    def pump(self) -> list[tuple[str, OutgoingMessage]]:
        """Carry queued messages both ways until neither end has any; collect the events.

        Returns:
            The messages carried by this call, as ``(sender role, message)``.

        Raises:
            RemoteProtocolError: an end refused a message (its Close is still carried to the other end).
        """
        carried: list[tuple[str, OutgoingMessage]] = []
        refused: RemoteProtocolError | None = None
        while True:
            batch = [("listener", m) for m in self.listener.messages_to_send()]
            batch += [("relay", m) for m in self.relay.messages_to_send()]
            if not batch:
                break
            for sender, message in batch:
                carried.append((sender, message))
                self.wire.append((sender, message))
                to: _End = self.relay if sender == "listener" else self.listener
                if to.closed and not isinstance(message, CloseMessage):
                    continue  # a closed end reads nothing more, as a socket after its Close
                try:
                    _deliver(message, to)
                except RemoteProtocolError as exc:
                    refused = refused or exc
                self.relay_events += self.relay.events_received()
                self.listener_events += self.listener.events_received()
        if refused is not None:
            raise refused
        return carried
