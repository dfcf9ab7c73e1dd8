"""The sans-I/O Hybrid Connections protocol layer: standard library only, no I/O, no clock.

See ``docs/protocol-layer.md`` for how the relay and the SDK drive it.
"""

from hyco.protocol.backoff import RECONNECT_DELAYS, reconnect_delays
from hyco.protocol.connection_string import RelayConnectionString
from hyco.protocol.control import (
    AcceptReceived,
    BinaryMessage,
    CloseMessage,
    ControlEvent,
    ControlState,
    InvalidResponse,
    ListenerControlProtocol,
    OutgoingMessage,
    RelayControlProtocol,
    RenewalRequested,
    RequestReceived,
    ResponseReceived,
    TextMessage,
)
from hyco.protocol.messages import (
    Accept,
    Command,
    RemoteEndpoint,
    RenewToken,
    Request,
    Response,
    decode,
    encode,
)
from hyco.protocol.sas import (
    Right,
    SasToken,
    audience_covers,
    create_token,
    parse_token,
    verify_signature,
)
from hyco.protocol.uri import (
    HC_PREFIX,
    Action,
    RelayAddress,
    WebSocketTarget,
    build_rendezvous_address,
    parse_address,
    parse_websocket_target,
    query_params,
    strip_sb_hc_params,
)

__all__ = [
    "HC_PREFIX",
    "RECONNECT_DELAYS",
    "Accept",
    "AcceptReceived",
    "Action",
    "BinaryMessage",
    "CloseMessage",
    "Command",
    "ControlEvent",
    "ControlState",
    "InvalidResponse",
    "ListenerControlProtocol",
    "OutgoingMessage",
    "RelayAddress",
    "RelayConnectionString",
    "RelayControlProtocol",
    "RemoteEndpoint",
    "RenewToken",
    "RenewalRequested",
    "Request",
    "RequestReceived",
    "Response",
    "ResponseReceived",
    "Right",
    "SasToken",
    "TextMessage",
    "WebSocketTarget",
    "audience_covers",
    "build_rendezvous_address",
    "create_token",
    "decode",
    "encode",
    "parse_address",
    "parse_token",
    "parse_websocket_target",
    "query_params",
    "reconnect_delays",
    "strip_sb_hc_params",
    "verify_signature",
]
