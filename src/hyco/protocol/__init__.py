"""The sans-I/O Hybrid Connections protocol layer: standard library only, no I/O, no clock.

See ``docs/protocol-layer.md`` for how the relay and the SDK drive it.
"""

from hyco.protocol.backoff import RECONNECT_DELAYS, reconnect_delays
from hyco.protocol.connection_string import RelayConnectionString
from hyco.protocol.messages import (
    MAX_INLINE_BODY,
    MAX_INLINE_HEADERS,
    MAX_STATUS_DESCRIPTION,
    Accept,
    Command,
    RemoteEndpoint,
    RenewToken,
    Request,
    Response,
    decode,
    encode,
    has_control_characters,
    status_description,
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
    normalize_audience,
    parse_address,
    parse_websocket_target,
    query_params,
    strip_sb_hc_params,
)

__all__ = [
    "HC_PREFIX",
    "MAX_INLINE_BODY",
    "MAX_INLINE_HEADERS",
    "MAX_STATUS_DESCRIPTION",
    "RECONNECT_DELAYS",
    "Accept",
    "Action",
    "Command",
    "RelayAddress",
    "RelayConnectionString",
    "RemoteEndpoint",
    "RenewToken",
    "Request",
    "Response",
    "Right",
    "SasToken",
    "WebSocketTarget",
    "audience_covers",
    "build_rendezvous_address",
    "create_token",
    "decode",
    "encode",
    "has_control_characters",
    "normalize_audience",
    "parse_address",
    "parse_token",
    "parse_websocket_target",
    "query_params",
    "reconnect_delays",
    "status_description",
    "strip_sb_hc_params",
    "verify_signature",
]
