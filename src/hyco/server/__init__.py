"""The hyco relay (``hyco relay``): control channels, rendezvous, splice. (extra: server)."""

from hyco.server.app import Relay, serve
from hyco.server.config import (
    AuthorizationRule,
    HybridConnectionConfig,
    Limits,
    RelayConfig,
    Secret,
    ServerConfig,
    TlsConfig,
    load_config,
    load_or_create_default,
    parse_config,
)

__all__ = [
    "AuthorizationRule",
    "HybridConnectionConfig",
    "Limits",
    "Relay",
    "RelayConfig",
    "Secret",
    "ServerConfig",
    "TlsConfig",
    "load_config",
    "load_or_create_default",
    "parse_config",
    "serve",
]
