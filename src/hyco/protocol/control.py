"""The control channel's rules, written once: the relay's end and the listener's end.

Theory of operation
-------------------

One listener's control channel (protocol.md 2) carries JSON commands in text messages and bodies in binary
messages. Each end is a sans-I/O object: :class:`RelayControlProtocol` on the relay,
:class:`ListenerControlProtocol` in the SDK. An I/O driver (``hyco.server.control``,
``hyco.client.listener``) feeds its object every message that arrives (``receive_text``,
``receive_binary``, ``receive_close``, ``receive_eof``), acts on what ``events_received()`` returns, and
writes what ``messages_to_send()`` returns, in order, on its socket. ``send_*`` and ``close`` only queue
messages. A command and its body are queued together, so a driver that writes the queue in order, one
writer at a time, never lets another message come between them (2.2). Nothing here reads a clock: whatever
depends on time (token expiry, when to renew) takes ``now`` from the caller.

The rules, each enforced in exactly one place:

1. Only ``_transition`` changes the read state, and only along :data:`TRANSITIONS`, a
   ``role -> state -> input -> state`` table in the manner of h11's ``_state.py``. An input the table does
   not list is the peer's fault: the object queues a Close (1008, "protocol violation: ...") and raises
   :class:`~hyco.exceptions.RemoteProtocolError` carrying the same code and reason. The driver writes the
   queue and stops reading.
2. A command with ``body: true`` is followed by exactly one binary message (2.2, 4.2): the BODY state takes
   a binary message and nothing else.
3. Each end reads only what the other end may send: the relay reads ``renewToken`` and ``response``, a
   listener reads ``accept`` and ``request``. Bad JSON and unknown commands are violations (1008); a message
   larger than ``max_message_size`` is one too (1009, message too big). A full request without an ``id``
   cannot be answered, so it is one as well.
4. The relay tolerates a binary message that no command announced: hyco-https sends an empty one after a
   ``body: false`` 204 (protocol.md 10). A listener does not: the relay never sends one, and the official
   Node listeners crash on it.
5. A malformed ``response`` that still names its ``requestId`` fails only that request
   (:class:`InvalidResponse`); the body it announced, if any, is read and dropped, and the channel goes on.
6. ``renewToken`` (2.6): the relay end reports :class:`RenewalRequested`; the driver checks the token (keys
   and rights are the relay's business) and calls ``renew(expiry)`` or ``refuse_renewal(reason)`` (Close
   1008). ``check_expiry(now)`` closes the channel (1008 ``ExpiredToken``) once the token plus the grace
   window has run out: the official SDKs renew exactly at expiry (protocol.md 8, item 10). The listener end
   says when to renew (``renewal_delay(now)``) and queues ``renewToken``.
7. After a violation, a Close from either end, or the end of the connection, the state is CLOSED and stays
   so. Feeding a message to a closed object, or sending on it, is the driver's bug:
   :class:`~hyco.exceptions.LocalProtocolError`. ``close()`` and ``receive_eof()`` may be called any time.

The code knows which end it is only through its role's row in the table and the commands each end sends.
The request rendezvous socket (4.3) is not modelled here: its bodies stream frame by frame, below the
message level this layer works at, and its exchange (one request, then one response naming it) lives with
the HTTP forwarder.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final, NoReturn

from hyco.exceptions import LocalProtocolError, RemoteProtocolError
from hyco.protocol.messages import (
    Accept,
    Command,
    RenewToken,
    Request,
    Response,
    decode,
    encode,
    salvage_response,
)

__all__ = [
    "DEFAULT_MAX_CONTROL_MESSAGE",
    "MESSAGE_TOO_BIG",
    "MIN_RENEW_DELAY",
    "POLICY_VIOLATION",
    "RETRY_RENEW_DELAY",
    "TRANSITIONS",
    "AcceptReceived",
    "BinaryMessage",
    "CloseMessage",
    "ControlEvent",
    "ControlInput",
    "ControlState",
    "InvalidResponse",
    "ListenerControlProtocol",
    "OutgoingMessage",
    "RelayControlProtocol",
    "RenewalRequested",
    "RequestReceived",
    "ResponseReceived",
    "Role",
    "TextMessage",
]

#: Close codes (RFC 6455 7.4.1) this layer answers a broken rule with.
POLICY_VIOLATION: Final = 1008
MESSAGE_TOO_BIG: Final = 1009
#: The largest control message either end reads unless told otherwise. Inline bodies are at most 64 KiB and
#: inline headers 32 KB (protocol.md 4.1), so anything near this is a broken peer, not a big request.
DEFAULT_MAX_CONTROL_MESSAGE: Final = 1024 * 1024
#: A listener never renews more often than this, even for very short-lived tokens.
MIN_RENEW_DELAY: Final = 1.0
#: When the token source failed or returned the same token, ask it again after this long.
RETRY_RENEW_DELAY: Final = 30.0
#: Close reasons must fit a control frame: 125 bytes minus the 2-byte code (RFC 6455 5.5).
_MAX_REASON_BYTES: Final = 123
_EXPIRED: Final = "ExpiredToken: the token expired; renew it with renewToken before it runs out"


# --- what goes out ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextMessage:
    """Send ``text`` as one WebSocket text message."""

    text: str


@dataclass(frozen=True, slots=True)
class BinaryMessage:
    """Send ``data`` as one WebSocket binary message (possibly empty)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseMessage:
    """Send a Close frame with ``code`` and ``reason`` (already cut to fit a control frame)."""

    code: int
    reason: str


OutgoingMessage = TextMessage | BinaryMessage | CloseMessage


# --- what comes in ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenewalRequested:
    """Relay end: the listener sent ``renewToken``; check the token, then ``renew`` or ``refuse_renewal``."""

    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """Relay end: the listener answered a request; ``body`` is None when the response has none."""

    response: Response
    body: bytes | None


@dataclass(frozen=True, slots=True)
class InvalidResponse:
    """Relay end: the listener's response to ``request_id`` is malformed; fail that request only (rule 5).

    If no request has that id, the driver should close the channel (``close(POLICY_VIOLATION, reason)``).
    """

    request_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class AcceptReceived:
    """Listener end: a WebSocket sender waits; dial ``accept.address`` (protocol.md 2.3)."""

    accept: Accept


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """Listener end: an HTTP request; ``body`` is its inline body, or None (no body, or a stub, 2.4)."""

    request: Request
    body: bytes | None


ControlEvent = RenewalRequested | ResponseReceived | InvalidResponse | AcceptReceived | RequestReceived


# --- the state table ----------------------------------------------------------------------------------


class Role(enum.Enum):
    """Which end of the control channel an object plays."""

    RELAY = "relay"
    LISTENER = "listener"


class ControlState(enum.Enum):
    """Where an end is in reading the channel."""

    IDLE = "waiting for a command"
    BODY = "waiting for the body announced by body:true"
    SKIP_BODY = "waiting for the body of a malformed response"
    CLOSED = "closed"


class ControlInput(enum.Enum):
    """What arrived, as the table sees it."""

    ACCEPT = "accept"
    REQUEST = "request"
    REQUEST_WITH_BODY = "request with body:true"
    RESPONSE = "response"
    RESPONSE_WITH_BODY = "response with body:true"
    INVALID_RESPONSE = "malformed response"
    INVALID_RESPONSE_WITH_BODY = "malformed response with body:true"
    RENEW_TOKEN = "renewToken"  # noqa: S105 - a command name, not a password
    BINARY = "binary message"
    CLOSE = "Close frame"
    EOF = "end of the connection"


_S, _I = ControlState, ControlInput
#: ``TRANSITIONS[role][state][input]`` is the next state; a missing entry is a protocol violation (rule 1).
TRANSITIONS: Final[dict[Role, dict[ControlState, dict[ControlInput, ControlState]]]] = {
    Role.RELAY: {
        _S.IDLE: {
            _I.RENEW_TOKEN: _S.IDLE,
            _I.RESPONSE: _S.IDLE,
            _I.RESPONSE_WITH_BODY: _S.BODY,
            _I.INVALID_RESPONSE: _S.IDLE,
            _I.INVALID_RESPONSE_WITH_BODY: _S.SKIP_BODY,
            _I.BINARY: _S.IDLE,  # rule 4: hyco-https's stray empty binary after a 204
            _I.CLOSE: _S.CLOSED,
            _I.EOF: _S.CLOSED,
        },
        _S.BODY: {_I.BINARY: _S.IDLE, _I.CLOSE: _S.CLOSED, _I.EOF: _S.CLOSED},
        _S.SKIP_BODY: {_I.BINARY: _S.IDLE, _I.CLOSE: _S.CLOSED, _I.EOF: _S.CLOSED},
        _S.CLOSED: {},
    },
    Role.LISTENER: {
        _S.IDLE: {
            _I.ACCEPT: _S.IDLE,
            _I.REQUEST: _S.IDLE,
            _I.REQUEST_WITH_BODY: _S.BODY,
            _I.CLOSE: _S.CLOSED,
            _I.EOF: _S.CLOSED,
        },
        _S.BODY: {_I.BINARY: _S.IDLE, _I.CLOSE: _S.CLOSED, _I.EOF: _S.CLOSED},
        _S.CLOSED: {},
    },
}
#: Inputs not named in "expected ...": endings are always allowed, and nobody wants a malformed message.
_UNNAMED = {_I.CLOSE, _I.EOF, _I.INVALID_RESPONSE, _I.INVALID_RESPONSE_WITH_BODY}


def _fit(reason: str) -> str:
    """``reason`` cut to fit a Close frame, on a character boundary."""
    data = reason.encode()[:_MAX_REASON_BYTES]
    return data.decode(errors="ignore")


def _input_for(command: Command) -> ControlInput:
    """The table's name for a decoded command."""
    if isinstance(command, Accept):
        return ControlInput.ACCEPT
    if isinstance(command, Request):
        # A stub carries no body even if it says so (.NET and Java read "body absent" as a stub, 2.4).
        return (
            ControlInput.REQUEST_WITH_BODY if not command.is_stub and command.body else ControlInput.REQUEST
        )
    if isinstance(command, Response):
        return ControlInput.RESPONSE_WITH_BODY if command.body else ControlInput.RESPONSE
    return ControlInput.RENEW_TOKEN


class _ControlProtocol:
    """What both ends share: the queues, the table walk, decoding, size limits, closing."""

    role: Role

    def __init__(self, *, max_message_size: int) -> None:
        self._state = ControlState.IDLE
        self._max_message_size = max_message_size
        self._events: list[ControlEvent] = []
        self._outgoing: list[OutgoingMessage] = []
        self._close_sent = False
        self._pending: Request | Response | None = None  # the command whose body is the next binary message

    @property
    def state(self) -> ControlState:
        """The current :class:`ControlState`."""
        return self._state

    @property
    def closed(self) -> bool:
        """Whether the channel is closed: nothing more may be fed or sent."""
        return self._state is ControlState.CLOSED

    @property
    def close_sent(self) -> bool:
        """Whether this end queued a Close (the driver then waits briefly for the peer's Close)."""
        return self._close_sent

    def events_received(self) -> list[ControlEvent]:
        """Take the events the received messages produced, oldest first. Act on each, in order."""
        events, self._events = self._events, []
        return events

    def messages_to_send(self) -> list[OutgoingMessage]:
        """Take the messages to write, oldest first. Write them all, in order, before any later batch."""
        messages, self._outgoing = self._outgoing, []
        return messages

    def receive_text(self, text: str | bytes) -> None:
        """Feed one text message (str, or its UTF-8 bytes); then take events and messages to send.

        Raises:
            RemoteProtocolError: the message breaks a rule; a Close is queued and the channel is closed.
            LocalProtocolError: the channel was already closed.
        """
        self._check_size(len(text.encode()) if isinstance(text, str) else len(text))
        try:
            command = decode(text)
        except RemoteProtocolError as exc:
            named = salvage_response(text)
            kind = (
                ControlInput.INVALID_RESPONSE_WITH_BODY
                if named and named[1]
                else ControlInput.INVALID_RESPONSE
            )
            if named is None or kind not in TRANSITIONS[self.role][self._state]:
                self._fail(exc.reason)
            assert named is not None
            self._transition(kind)
            self._events.append(InvalidResponse(named[0], exc.reason))
            return
        kind = _input_for(command)
        self._transition(kind)
        if isinstance(command, Request) and command.id is None and not command.is_stub:
            self._fail("a request without an id cannot be answered")
        if kind in (ControlInput.REQUEST_WITH_BODY, ControlInput.RESPONSE_WITH_BODY):
            assert isinstance(command, Request | Response)
            self._pending = command
        elif isinstance(command, Accept):
            self._events.append(AcceptReceived(command))
        elif isinstance(command, Request):
            self._events.append(RequestReceived(command, None))
        elif isinstance(command, Response):
            self._events.append(ResponseReceived(command, None))
        else:
            self._events.append(RenewalRequested(command.token))

    def receive_binary(self, data: bytes) -> None:
        """Feed one binary message; then take events and messages to send.

        Raises:
            RemoteProtocolError: the message breaks a rule; a Close is queued and the channel is closed.
            LocalProtocolError: the channel was already closed.
        """
        self._check_size(len(data))
        previous = self._state
        self._transition(ControlInput.BINARY)
        if previous is ControlState.BODY:
            pending, self._pending = self._pending, None
            if isinstance(pending, Request):
                self._events.append(RequestReceived(pending, data))
            else:
                assert pending is not None
                self._events.append(ResponseReceived(pending, data))

    def receive_close(self, code: int, reason: str = "") -> None:
        """Feed the peer's Close frame; queues the answering Close unless this end sent one first.

        Raises:
            LocalProtocolError: the channel had already ended without a Close from this end.
        """
        if self.closed and self._close_sent:
            return  # the peer's answer to our Close: the closing handshake is complete
        self._transition(ControlInput.CLOSE)
        # RFC 6455 5.5.1: echo the code; codes that must not be sent (1005, 1006, 1015) become 1000.
        self._queue_close(code if 1000 <= code <= 4999 and code not in (1005, 1006, 1015) else 1000, "")

    def receive_eof(self) -> None:
        """Feed the end of the connection (it broke, or the driver stopped waiting). Allowed at any time."""
        if not self.closed:
            self._transition(ControlInput.EOF)

    def close(self, code: int, reason: str) -> None:
        """Queue a Close with ``code`` and ``reason``, ending the channel; no-op if it already ended."""
        if self.closed:
            return
        self._state = ControlState.CLOSED
        self._queue_close(code, reason)

    # --- internals ---------------------------------------------------------------------------------------

    def _queue_close(self, code: int, reason: str) -> None:
        self._close_sent = True
        self._outgoing.append(CloseMessage(code, _fit(reason)))

    def _check_size(self, size: int) -> None:
        if self.closed:
            raise LocalProtocolError("a message was fed to a closed control channel")
        if size > self._max_message_size:
            self._fail(
                f"a {size}-byte control message exceeds the {self._max_message_size}-byte limit",
                MESSAGE_TOO_BIG,
            )

    def _transition(self, what: ControlInput) -> None:
        """Move along :data:`TRANSITIONS` (rule 1), or fail the channel."""
        if self.closed:
            raise LocalProtocolError("a message was fed to a closed control channel")
        allowed = TRANSITIONS[self.role][self._state]
        if what not in allowed:
            expected = " or ".join(sorted({i.value.split(" with ")[0] for i in allowed if i not in _UNNAMED}))
            self._fail(f"unexpected {what.value} while {self._state.value} (expected {expected})")
        self._state = allowed[what]

    def _fail(self, reason: str, code: int = POLICY_VIOLATION) -> NoReturn:
        self.close(code, f"protocol violation: {reason}")
        raise RemoteProtocolError(reason, close_code=code)

    def _check_sendable(self) -> None:
        if self.closed:
            raise LocalProtocolError("the control channel is closed")


class RelayControlProtocol(_ControlProtocol):
    """The relay's end of one listener's control channel.

    Args:
        token_expiry: when the token the channel was opened with expires (seconds since the epoch).
        token_grace: seconds past expiry before the channel is closed (2.6; the SDKs renew at expiry).
        max_message_size: the largest message the listener may send, in bytes.
    """

    role = Role.RELAY

    def __init__(
        self,
        *,
        token_expiry: float,
        token_grace: float,
        max_message_size: int = DEFAULT_MAX_CONTROL_MESSAGE,
    ) -> None:
        super().__init__(max_message_size=max_message_size)
        self._expiry = token_expiry
        self._grace = token_grace

    @property
    def token_expiry(self) -> float:
        """When the channel's current token expires (seconds since the epoch)."""
        return self._expiry

    @property
    def expiry_deadline(self) -> float:
        """When the channel closes unless renewed (expiry plus grace); call :meth:`check_expiry` then."""
        return self._expiry + self._grace

    def check_expiry(self, now: float) -> bool:
        """Close the channel (1008 ``ExpiredToken``) if ``now`` has reached :attr:`expiry_deadline`.

        Returns:
            True if this call closed the channel: write :meth:`messages_to_send`.
        """
        if self.closed or now < self.expiry_deadline:
            return False
        self.close(POLICY_VIOLATION, _EXPIRED)
        return True

    def renew(self, expiry: float) -> None:
        """The token of a :class:`RenewalRequested` checked out; ``expiry`` is its expiry."""
        self._expiry = expiry

    def refuse_renewal(self, reason: str) -> None:
        """The token of a :class:`RenewalRequested` was refused: close with 1008 and ``reason`` (2.6)."""
        self.close(POLICY_VIOLATION, reason)

    def send_command(self, command: Command, body: bytes | None = None) -> None:
        """Queue ``command`` and, for a request with ``body: true``, its body as the very next message (2.2).

        Raises:
            LocalProtocolError: the channel is closed, the command is not one a relay sends, or ``body`` does
                not match the command's ``body`` flag.
        """
        self._check_sendable()
        if not isinstance(command, Accept | Request):
            raise LocalProtocolError(f"a relay does not send {type(command).__name__} commands")
        announced = isinstance(command, Request) and _input_for(command) is ControlInput.REQUEST_WITH_BODY
        if announced is not (body is not None):
            raise LocalProtocolError("a body goes with, and only with, a full request that says body:true")
        self._outgoing.append(TextMessage(encode(command)))
        if body is not None:
            self._outgoing.append(BinaryMessage(body))


class ListenerControlProtocol(_ControlProtocol):
    """The SDK's end of a listener's control channel.

    Args:
        renew_at: when to send the first ``renewToken`` (seconds since the epoch), or None when the token
            cannot be renewed.
        max_message_size: the largest message the relay may send, in bytes.
    """

    role = Role.LISTENER

    def __init__(
        self, *, renew_at: float | None, max_message_size: int = DEFAULT_MAX_CONTROL_MESSAGE
    ) -> None:
        super().__init__(max_message_size=max_message_size)
        self._renew_at = renew_at
        self._renew_floor = MIN_RENEW_DELAY

    def renewal_delay(self, now: float) -> float | None:
        """Seconds from ``now`` until the next renewal is due (never less than the current floor), or None."""
        if self._renew_at is None:
            return None
        return max(self._renew_floor, self._renew_at - now)

    def postpone_renewal(self, renew_at: float | None = None) -> None:
        """The token source failed or gave back the same token: try again in :data:`RETRY_RENEW_DELAY` s."""
        if renew_at is not None:
            self._renew_at = renew_at
        self._renew_floor = RETRY_RENEW_DELAY

    def send_renew_token(self, token: str, renew_at: float) -> None:
        """Queue ``renewToken`` with a fresh token (2.6); the next renewal is due at ``renew_at``.

        Raises:
            LocalProtocolError: the channel is closed.
        """
        self._check_sendable()
        self._outgoing.append(TextMessage(encode(RenewToken(token))))
        self._renew_at = renew_at
        self._renew_floor = MIN_RENEW_DELAY

    def send_response(self, response: Response, body: bytes | None) -> None:
        """Queue a ``response`` and, if it says ``body: true``, its body as the very next message (2.2, 4.2).

        Raises:
            LocalProtocolError: the channel is closed, or ``body`` does not match ``response.body``.
        """
        self._check_sendable()
        if response.body is not (body is not None):
            raise LocalProtocolError("a response with body:true needs a body (b'' if empty), and only then")
        self._outgoing.append(TextMessage(encode(response)))
        if body is not None:
            self._outgoing.append(BinaryMessage(body))
