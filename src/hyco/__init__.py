"""hyco: a self-hostable Azure Relay Hybrid Connections relay, its Python SDK, and tunnel tools."""

from hyco.exceptions import (
    AuthorizationFailed,
    ConnectionLost,
    ConnectionRejected,
    EndpointNotFound,
    Forbidden,
    HycoError,
    InvalidConfig,
    InvalidConnectionString,
    InvalidInput,
    InvalidToken,
    InvalidURI,
    LocalProtocolError,
    ProtocolError,
    QuotaExceeded,
    RelayError,
    RelayTimeout,
    RemoteProtocolError,
    ServerBusy,
)
from hyco.protocol import RelayConnectionString

__version__ = "0.1.0"

__all__ = [
    "AuthorizationFailed",
    "ConnectionLost",
    "ConnectionRejected",
    "EndpointNotFound",
    "Forbidden",
    "HycoError",
    "InvalidConfig",
    "InvalidConnectionString",
    "InvalidInput",
    "InvalidToken",
    "InvalidURI",
    "LocalProtocolError",
    "ProtocolError",
    "QuotaExceeded",
    "RelayConnectionString",
    "RelayError",
    "RelayTimeout",
    "RemoteProtocolError",
    "ServerBusy",
]
