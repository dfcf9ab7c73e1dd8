"""hyco.protocol.control: the control channel's rules, driven with no sockets and no clock."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco.exceptions import LocalProtocolError, RemoteProtocolError
from hyco.protocol.control import (
    MESSAGE_TOO_BIG,
    MIN_RENEW_DELAY,
    POLICY_VIOLATION,
    RETRY_RENEW_DELAY,
    TRANSITIONS,
    AcceptReceived,
    BinaryMessage,
    CloseMessage,
    ControlInput,
    ControlState,
    InvalidResponse,
    ListenerControlProtocol,
    RelayControlProtocol,
    RenewalRequested,
    RequestReceived,
    ResponseReceived,
    Role,
    TextMessage,
)
from hyco.protocol.messages import Accept, RenewToken, Request, Response, encode
from hyco.testing import ControlChannelPair

ACCEPT = Accept("wss://r/$hc/p?sb-hc-action=accept&sb-hc-id=1", "1", {"Sec-WebSocket-Key": "k"})
FULL = Request("wss://r/$hc/p?sb-hc-action=request&sb-hc-id=2", "2", "/p", "POST", None, {"A": "b"}, True)
NO_BODY = Request("wss://r/$hc/p?sb-hc-action=request&sb-hc-id=3", "3", "/p", "GET", None, {}, False)
STUB = Request("wss://r/$hc/p?sb-hc-action=request&sb-hc-id=4", "4")
OK = Response("2", 200, "OK", None, body=True)
OK_NO_BODY = Response("3", 204, "No Content", None, body=False)
TOKEN = "SharedAccessSignature sr=a&sig=SECRET&se=1&skn=k"


def relay_end(**kwargs: float) -> RelayControlProtocol:
    return RelayControlProtocol(
        token_expiry=kwargs.get("expiry", 1000.0), token_grace=kwargs.get("grace", 300.0)
    )


def violation(end: RelayControlProtocol | ListenerControlProtocol, feed: object, code: int = 1008) -> str:
    """Feed something that breaks a rule; check the error, the queued Close and the closed state."""
    with pytest.raises(RemoteProtocolError) as info:
        feed()  # type: ignore[operator]
    assert info.value.close_code == code
    assert end.closed and end.state is ControlState.CLOSED and end.close_sent
    (close,) = end.messages_to_send()
    assert close == CloseMessage(
        code, f"protocol violation: {info.value.reason}".encode()[:123].decode(errors="ignore")
    )
    return info.value.reason


# --- the listener's end -------------------------------------------------------------------------------------


def test_listener_reads_accept_requests_and_bodies() -> None:
    end = ListenerControlProtocol(renew_at=None)
    end.receive_text(encode(ACCEPT))
    end.receive_text(encode(FULL))
    assert end.state is ControlState.BODY
    end.receive_binary(b"payload")
    end.receive_text(encode(NO_BODY).encode())  # bytes work as well as str
    end.receive_text(encode(STUB))
    assert end.events_received() == [
        AcceptReceived(ACCEPT),
        RequestReceived(FULL, b"payload"),
        RequestReceived(NO_BODY, None),
        RequestReceived(STUB, None),
    ]
    assert end.events_received() == []
    assert end.state is ControlState.IDLE and end.messages_to_send() == []


def test_a_stub_that_says_body_true_has_no_body() -> None:
    # .NET and Java read a missing method/body as a stub (2.4): nothing follows it.
    end = ListenerControlProtocol(renew_at=None)
    end.receive_text(encode(Request("wss://r/x", "5", body=True)))
    assert end.state is ControlState.IDLE
    assert end.events_received() == [RequestReceived(Request("wss://r/x", "5", body=True), None)]


@pytest.mark.parametrize(
    ("feed", "expected"),
    [
        ("not json", "not valid JSON"),
        ('{"bogus":{}}', "unknown control command 'bogus'"),
        ('{"accept":{"address":"x"}}', "accept.id is missing"),
        (
            encode(RenewToken(TOKEN)),
            "unexpected renewToken while waiting for a command (expected accept or request)",
        ),
        (encode(OK_NO_BODY), "unexpected response while waiting for a command"),
        ('{"response":{"requestId":"2","statusCode":"nope","body":true}}', "statusCode must be an integer"),
        (b"stray", "unexpected binary message while waiting for a command"),
        (json.dumps({"request": {"address": "wss://r/x", "method": "GET", "body": False}}), "without an id"),
    ],
)
def test_listener_refuses_what_a_relay_may_not_send(feed: str | bytes, expected: str) -> None:
    end = ListenerControlProtocol(renew_at=None)
    if isinstance(feed, bytes):
        reason = violation(end, lambda: end.receive_binary(feed))
    else:
        reason = violation(end, lambda: end.receive_text(feed))
    assert expected in reason
    assert TOKEN not in reason and "SECRET" not in reason


def test_a_body_true_request_must_be_followed_by_its_body() -> None:
    end = ListenerControlProtocol(renew_at=None)
    end.receive_text(encode(FULL))
    reason = violation(end, lambda: end.receive_text(encode(ACCEPT)))
    assert (
        reason
        == "unexpected accept while waiting for the body announced by body:true (expected binary message)"
    )
    assert end.events_received() == []  # the request without its body is never reported


def test_oversize_messages_close_with_1009() -> None:
    end = ListenerControlProtocol(renew_at=None, max_message_size=10)
    assert "11-byte control message exceeds the 10-byte limit" in violation(
        end, lambda: end.receive_binary(b"x" * 11), MESSAGE_TOO_BIG
    )
    end = ListenerControlProtocol(renew_at=None, max_message_size=10)
    violation(end, lambda: end.receive_text("é" * 6), MESSAGE_TOO_BIG)  # counted in UTF-8 bytes


def test_long_reasons_are_cut_to_fit_a_close_frame_on_a_character_boundary() -> None:
    end = ListenerControlProtocol(renew_at=None)
    end.close(1000, "é" * 100)
    (close,) = end.messages_to_send()
    assert isinstance(close, CloseMessage) and close.reason == "é" * 61


def test_listener_sends_responses_and_renewals() -> None:
    end = ListenerControlProtocol(renew_at=100.0)
    end.send_response(OK, b"")
    end.send_response(OK_NO_BODY, None)
    end.send_renew_token(TOKEN, renew_at=200.0)
    assert end.messages_to_send() == [
        TextMessage(encode(OK)),
        BinaryMessage(b""),
        TextMessage(encode(OK_NO_BODY)),
        TextMessage(encode(RenewToken(TOKEN))),
    ]
    with pytest.raises(LocalProtocolError):
        end.send_response(OK, None)
    with pytest.raises(LocalProtocolError):
        end.send_response(OK_NO_BODY, b"x")


def test_renewal_schedule() -> None:
    assert ListenerControlProtocol(renew_at=None).renewal_delay(50.0) is None
    end = ListenerControlProtocol(renew_at=100.0)
    assert end.renewal_delay(40.0) == 60.0
    assert end.renewal_delay(150.0) == MIN_RENEW_DELAY  # overdue: soon, but never in a tight loop
    end.postpone_renewal()  # the token source failed
    assert end.renewal_delay(150.0) == RETRY_RENEW_DELAY
    end.postpone_renewal(renew_at=400.0)  # it gave back the same token, good until 400
    assert end.renewal_delay(150.0) == 250.0
    end.send_renew_token(TOKEN, renew_at=100.0)
    assert end.renewal_delay(150.0) == MIN_RENEW_DELAY


# --- the relay's end ----------------------------------------------------------------------------------------


def test_relay_reads_responses_renewals_and_a_stray_binary() -> None:
    end = relay_end()
    end.receive_text(encode(OK))
    end.receive_binary(b"body")
    end.receive_text(encode(OK_NO_BODY))
    end.receive_binary(b"")  # hyco-https after a 204 (protocol.md 10): tolerated, reported nowhere
    end.receive_text(encode(RenewToken(TOKEN)))
    events = end.events_received()
    assert events == [
        ResponseReceived(OK, b"body"),
        ResponseReceived(OK_NO_BODY, None),
        RenewalRequested(TOKEN),
    ]
    assert TOKEN not in repr(events)
    assert end.state is ControlState.IDLE and not end.closed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            encode(ACCEPT),
            "unexpected accept while waiting for a command "
            "(expected binary message or renewToken or response)",
        ),
        (encode(FULL), "unexpected request with body:true"),
        (encode(STUB), "unexpected request while"),
        ("[1]", "exactly one command key"),
        ('{"response":{"statusCode":200}}', "response.requestId is missing"),
        ('{"response":{"requestId":7,"statusCode":200}}', "response.requestId is missing"),
    ],
)
def test_relay_refuses_what_a_listener_may_not_send(text: str, expected: str) -> None:
    end = relay_end()
    assert expected in violation(end, lambda: end.receive_text(text))


def test_a_malformed_response_fails_only_its_request() -> None:
    end = relay_end()
    end.receive_text('{"response":{"requestId":"r1","statusCode":"abc","body":false}}')
    end.receive_text('{"response":{"requestId":"r2","statusCode":2000,"body":true}}')
    assert end.state is ControlState.SKIP_BODY
    end.receive_binary(b"dropped")
    end.receive_text(encode(OK_NO_BODY))
    events = end.events_received()
    assert [type(e) for e in events] == [InvalidResponse, InvalidResponse, ResponseReceived]
    assert events[0] == InvalidResponse("r1", "response.statusCode must be an integer from 100 to 999")
    assert isinstance(events[1], InvalidResponse) and events[1].request_id == "r2"
    assert not end.closed and end.messages_to_send() == []


def test_a_malformed_response_is_still_out_of_turn_while_a_body_is_due() -> None:
    end = relay_end()
    end.receive_text(encode(OK))
    reason = violation(end, lambda: end.receive_text('{"response":{"requestId":"r1","statusCode":"x"}}'))
    assert "statusCode" in reason  # the decoding error says more than "out of turn"


def test_expiry_and_renewal() -> None:
    end = relay_end(expiry=1000.0, grace=300.0)
    assert end.token_expiry == 1000.0 and end.expiry_deadline == 1300.0
    assert not end.check_expiry(1299.9)
    end.renew(2000.0)
    assert not end.check_expiry(1300.0)
    assert end.check_expiry(2300.0)
    (close,) = end.messages_to_send()
    assert isinstance(close, CloseMessage) and close.code == POLICY_VIOLATION
    assert close.reason.startswith("ExpiredToken")
    assert not end.check_expiry(9999.0)  # already closed: nothing more to do
    assert end.messages_to_send() == []


def test_a_refused_renewal_closes_1008() -> None:
    end = relay_end()
    end.receive_text(encode(RenewToken(TOKEN)))
    end.refuse_renewal("InvalidSignature: the token's signature is wrong")
    assert end.closed
    assert end.messages_to_send() == [CloseMessage(1008, "InvalidSignature: the token's signature is wrong")]


def test_relay_sends_commands_and_bodies_together() -> None:
    end = relay_end()
    end.send_command(ACCEPT)
    end.send_command(FULL, b"b")
    end.send_command(STUB)
    assert end.messages_to_send() == [
        TextMessage(encode(ACCEPT)),
        TextMessage(encode(FULL)),
        BinaryMessage(b"b"),
        TextMessage(encode(STUB)),
    ]
    for command, body in [(FULL, None), (NO_BODY, b"x"), (ACCEPT, b"x"), (OK, None)]:
        with pytest.raises(LocalProtocolError):
            end.send_command(command, body)  # type: ignore[arg-type]


# --- closing ------------------------------------------------------------------------------------------------


def test_the_peer_closes_first_and_gets_its_code_back() -> None:
    end = relay_end()
    end.receive_close(1001, "going away")
    assert end.closed and end.messages_to_send() == [CloseMessage(1001, "")]
    end = relay_end()
    end.receive_close(1005)  # "no code" cannot be sent back
    assert end.messages_to_send() == [CloseMessage(1000, "")]


def test_our_close_then_the_peers_answer() -> None:
    end = ListenerControlProtocol(renew_at=None)
    end.close(1000, "Normal Closure")
    end.close(1001, "again")  # idempotent
    assert end.messages_to_send() == [CloseMessage(1000, "Normal Closure")]
    end.receive_close(1000)  # the answer: the handshake is complete
    assert end.messages_to_send() == []


def test_a_closed_end_reads_and_sends_nothing() -> None:
    end = relay_end()
    end.receive_eof()
    end.receive_eof()  # always allowed
    assert end.closed and not end.close_sent and end.messages_to_send() == []
    for use in (
        lambda: end.receive_text(encode(OK)),
        lambda: end.receive_binary(b""),
        lambda: end.receive_close(1000),
        lambda: end.send_command(ACCEPT),
    ):
        with pytest.raises(LocalProtocolError):
            use()
    listener = ListenerControlProtocol(renew_at=None)
    listener.receive_eof()
    for use in (lambda: listener.send_renew_token(TOKEN, 1.0), lambda: listener.send_response(OK, b"")):
        with pytest.raises(LocalProtocolError):
            use()


def test_the_connection_may_end_while_a_body_is_due() -> None:
    for end in (relay_end(), ListenerControlProtocol(renew_at=None)):
        end.receive_text(encode(OK if isinstance(end, RelayControlProtocol) else FULL))
        end.receive_eof()
        assert end.closed and end.events_received() == []


def test_every_state_of_each_role_ends_on_close_and_eof() -> None:
    for role, table in TRANSITIONS.items():
        for state, row in table.items():
            if state is not ControlState.CLOSED:
                assert row[ControlInput.CLOSE] is row[ControlInput.EOF] is ControlState.CLOSED, (role, state)
    assert ControlState.SKIP_BODY not in TRANSITIONS[Role.LISTENER]


# --- both ends together -------------------------------------------------------------------------------------


def test_pair_inline_request_response_and_renewal() -> None:
    pair = ControlChannelPair.open(token_expiry=1000.0, token_grace=300.0, renew_at=900.0)
    pair.relay.send_command(FULL, b"question")
    pair.pump()
    assert pair.listener_events == [RequestReceived(FULL, b"question")]
    assert pair.listener.renewal_delay(900.0) == MIN_RENEW_DELAY
    pair.listener.send_response(OK, b"answer")
    pair.listener.send_renew_token(TOKEN, renew_at=4000.0)
    pair.pump()
    assert pair.relay_events == [ResponseReceived(OK, b"answer"), RenewalRequested(TOKEN)]
    pair.relay.renew(5000.0)
    assert not pair.relay.check_expiry(1300.0)


def test_pair_a_violation_closes_both_ends() -> None:
    pair = ControlChannelPair.open(token_expiry=1000.0, token_grace=300.0)
    pair.relay.send_command(ACCEPT)  # queued, crosses on the wire with the broken listener's messages
    pair.inject("listener", TextMessage(encode(OK)))
    with pytest.raises(RemoteProtocolError) as info:
        pair.inject("listener", TextMessage(encode(OK_NO_BODY)))  # a text where the body is due
    assert "expected binary message" in info.value.reason
    pair.pump()
    assert pair.relay.closed and pair.listener.closed
    assert pair.wire[-1] == ("listener", CloseMessage(1008, ""))  # the listener answered the relay's Close
    assert pair.listener_events == [AcceptReceived(ACCEPT)]


def test_pair_pump_carries_the_close_of_an_end_that_refused() -> None:
    pair = ControlChannelPair.open(token_expiry=1000.0, token_grace=300.0)
    pair.inject("relay", TextMessage(encode(FULL)))
    pair.relay.send_command(ACCEPT)  # out of turn: the listener waits for the body
    with pytest.raises(RemoteProtocolError):
        pair.pump()
    (sender, refusal), answer = pair.wire[-2:]
    assert sender == "listener" and isinstance(refusal, CloseMessage) and refusal.code == 1008
    assert answer == ("relay", CloseMessage(1008, ""))
    assert pair.relay.closed and pair.listener.closed


def test_pair_expiry_reaches_the_listener_as_a_close() -> None:
    pair = ControlChannelPair.open(token_expiry=1000.0, token_grace=0.0)
    assert pair.relay.check_expiry(1000.0)
    carried = pair.pump()
    assert [sender for sender, _ in carried] == ["relay", "listener"]
    assert pair.listener.closed and pair.relay.closed


# --- properties ---------------------------------------------------------------------------------------------

_messages = st.lists(
    st.one_of(
        st.binary(max_size=8).map(lambda b: ("binary", b)),
        st.sampled_from(
            [encode(ACCEPT), encode(FULL), encode(NO_BODY), encode(STUB), encode(OK), "{", "[]"]
        ).map(lambda t: ("text", t)),
    ),
    max_size=12,
)


@given(_messages)
def test_any_sequence_either_works_or_closes_with_a_reason(messages: list[tuple[str, object]]) -> None:
    """Whatever a relay sends, the listener end reports events or refuses with a Close, nothing else."""
    end = ListenerControlProtocol(renew_at=None)
    for kind, data in messages:
        try:
            if kind == "text":
                end.receive_text(data)  # type: ignore[arg-type]
            else:
                end.receive_binary(data)  # type: ignore[arg-type]
        except RemoteProtocolError as exc:
            assert end.closed
            (close,) = end.messages_to_send()
            assert close == CloseMessage(exc.close_code, f"protocol violation: {exc.reason}"[:123])
            break
        assert end.state in (ControlState.IDLE, ControlState.BODY)
        assert end.messages_to_send() == []


@given(
    st.lists(st.tuples(st.sampled_from([FULL, NO_BODY, STUB, ACCEPT]), st.binary(max_size=8)), max_size=10)
)
def test_what_the_relay_sends_the_listener_reads_back(commands: list[tuple[Accept | Request, bytes]]) -> None:
    pair = ControlChannelPair.open(token_expiry=1.0, token_grace=1.0)
    expected = []
    for command, body in commands:
        with_body = command is FULL
        pair.relay.send_command(command, body if with_body else None)
        expected.append(
            AcceptReceived(command)
            if isinstance(command, Accept)
            else RequestReceived(command, body if with_body else None)
        )
    pair.pump()
    assert pair.listener_events == expected
