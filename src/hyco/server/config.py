"""Relay configuration: a TOML file validated into frozen dataclasses (docs/configuration.md).

Unknown keys are errors, so a typo never silently falls back to a default. Secrets are wrapped in
:class:`Secret`, whose ``repr`` is masked, so a config object can be logged. The key names are a contract:
add keys freely, rename none.
"""

from __future__ import annotations

import base64
import enum
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hyco.exceptions import InvalidConfig
from hyco.protocol.sas import MAX_KEY_LENGTH, MAX_KEY_NAME_LENGTH, Right

__all__ = [
    "DEFAULT_LISTEN",
    "AuthorizationRule",
    "ClusterConfig",
    "EntityStatus",
    "HybridConnectionConfig",
    "Limits",
    "RelayConfig",
    "Secret",
    "ServerConfig",
    "TlsConfig",
    "generate_key",
    "load_config",
    "load_or_create_default",
    "parse_config",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9350
DEFAULT_LISTEN = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
DEFAULT_RULE_NAME = "RootManageSharedAccessKey"
DEFAULT_CONFIG_NAME = "relay.toml"


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret string whose ``repr`` and ``str`` never show the value."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class AuthorizationRule:
    """A shared access rule: a name, one or two keys, and the rights it grants (protocol.md 5.4)."""

    name: str
    primary_key: Secret
    rights: frozenset[Right]
    secondary_key: Secret | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """The key texts that may sign tokens for this rule."""
        return tuple(k.value for k in (self.primary_key, self.secondary_key) if k is not None)

    def grants(self, right: Right) -> bool:
        """Whether the rule grants ``right``; Manage implies Listen and Send."""
        return right in self.rights or Right.MANAGE in self.rights


class EntityStatus(enum.StrEnum):
    """A hybrid connection's status, as Azure's resource model spells it."""

    ACTIVE = "Active"
    DISABLED = "Disabled"
    SEND_DISABLED = "SendDisabled"
    RECEIVE_DISABLED = "ReceiveDisabled"

    @property
    def admits_senders(self) -> bool:
        """Whether senders are let through."""
        return self in (EntityStatus.ACTIVE, EntityStatus.RECEIVE_DISABLED)

    @property
    def admits_listeners(self) -> bool:
        """Whether listeners are let in."""
        return self in (EntityStatus.ACTIVE, EntityStatus.SEND_DISABLED)


@dataclass(frozen=True, slots=True)
class HybridConnectionConfig:
    """One hybrid connection (entity).

    Attributes:
        path: the entity path, may contain inner ``/``.
        requires_client_authorization: senders need a Send token (default True).
        authorization_rules: rules that cover only this hybrid connection.
        request_timeout: seconds a listener has to answer a relayed HTTP request (protocol.md 4.4).
        user_metadata: free text kept for the user (shown by the management API).
        status: whether listeners and senders are admitted.
        inspect: record this hybrid connection's relayed HTTP requests for the dashboard's inspector.
    """

    path: str
    requires_client_authorization: bool = True
    authorization_rules: tuple[AuthorizationRule, ...] = ()
    request_timeout: float = 60.0
    user_metadata: str = ""
    status: EntityStatus = EntityStatus.ACTIVE
    inspect: bool = False


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS for the relay's port: certificate and key files, or a self-signed development certificate.

    Attributes:
        certfile: PEM certificate chain.
        keyfile: PEM private key.
        self_signed: host names to mint a development certificate for (instead of certfile/keyfile).
    """

    certfile: Path | None = None
    keyfile: Path | None = None
    self_signed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Where the relay listens and how clients reach it.

    Attributes:
        host: address to bind.
        port: port to bind; 0 picks a free one.
        public_url: base URL clients use to reach this node (rendezvous addresses are built from it); None
            means "the host name the listener used".
        tls: TLS settings, or None for plain ws/http.
        create_on_listen: create a hybrid connection when a listener opens an unknown path.
        data_dir: where generated files (default config, development certificates, the store) live.
        store: where entities and rules created at run time are kept: ``"sqlite"`` (``data_dir/hyco.db``;
            in memory when there is no data directory) or ``"memory"`` (lost on restart).
        metrics_public: serve ``/$metrics`` without a token (default: a Manage token is needed).
        workers: processes serving the port (``hyco relay --workers``); None means one per core where
            workers are possible (docs/configuration.md), else one. The library's :func:`serve` is always one.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    public_url: str | None = None
    tls: TlsConfig | None = None
    create_on_listen: bool = False
    data_dir: Path | None = None
    store: str = "sqlite"
    metrics_public: bool = False
    workers: int | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes, counts and times the relay enforces. Defaults follow protocol.md 6.

    Attributes:
        max_listeners: listeners per hybrid connection (Azure: 25).
        max_hybrid_connections: entities in the namespace, counting auto-created ones.
        accept_timeout: seconds a sender waits for a listener to accept or reject (rendezvous validity).
        token_grace: seconds a control channel may outlive its token's expiry before it is closed (2.6).
        max_message_size: largest WebSocket message relayed through a splice, in bytes.
        max_control_message_size: largest message a listener may send on its control channel, in bytes.
        ping_interval: seconds between the relay's pings on control channels (a dead listener is dropped
            when a pong does not come back within half of it); 0 disables.
        shutdown_timeout: seconds to let splices finish on shutdown before they are cut.
        max_pending: senders waiting for a listener plus relayed HTTP requests in flight, at most; more are
            refused with 503 so a flood of senders cannot exhaust the relay's memory or sockets.
        idle_timeout: seconds a connection may take to send a complete request head, counted from its start
            and from each response on a kept-alive connection; it is closed then (slow or silent clients).
        body_timeout: seconds a relayed HTTP request body may stall between two chunks; the request then
            ends with 408 and its connection is closed.
        max_connections_per_source: connections one client IP address may hold open at once (counted as
            they arrive); more are answered 503 and closed (``hyco.server.sources``).
        max_buffered_bytes: request body bytes the relay may hold in memory at once, summed over relayed HTTP
            requests (each reserves its length if inline, 384 KiB if streamed); more are refused with 503.
        handshake_rate_per_source: WebSocket handshakes plus HTTP requests one client IP address may start
            per second, in bursts of as many; more are answered 429 with ``Retry-After``.
    """

    max_listeners: int = 25
    max_hybrid_connections: int = 10_000
    accept_timeout: float = 30.0
    token_grace: float = 300.0
    max_message_size: int = 16 * 1024 * 1024
    max_control_message_size: int = 1024 * 1024
    ping_interval: float = 60.0
    shutdown_timeout: float = 5.0
    max_pending: int = 10_000
    idle_timeout: float = 20.0
    body_timeout: float = 30.0
    max_connections_per_source: int = 1_000
    handshake_rate_per_source: float = 200.0
    max_buffered_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Scale-out over NATS (docs/cluster.md): the nodes share listener leases and route senders to each other.

    Attributes:
        nats: NATS server URLs (several for a NATS cluster).
        node_id: this node's name in the cluster; None means generated once and kept in the data directory.
        lease_seconds: how long a listener's lease (and a node's presence) lives without a refresh; a dead
            node's listeners stop counting against the listener cap after this. Refreshed every third of it.
        request_timeout: seconds a delivery to another node may take before its outcome counts as unknown.
        replicas: JetStream replicas of the lease bucket (3 on a 3-node NATS cluster).
    """

    nats: tuple[str, ...]
    node_id: str | None = None
    lease_seconds: float = 15.0
    request_timeout: float = 2.0
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Everything the relay needs to run."""

    server: ServerConfig = ServerConfig()
    authorization_rules: tuple[AuthorizationRule, ...] = ()
    hybrid_connections: tuple[HybridConnectionConfig, ...] = ()
    limits: Limits = Limits()
    cluster: ClusterConfig | None = None


# --- parsing ---------------------------------------------------------------------------------------


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise InvalidConfig(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _get(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (
        isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InvalidConfig(f"{where}.{key} must be a {name}, not {value!r}")
    return value


def _positive_int(value: int | None, where: str) -> int | None:
    if value is not None and value < 1:
        raise InvalidConfig(f"{where} must be 1 or more, not {value}")
    return value


def parse_host_port(text: str, where: str = "server.listen") -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6).

    Raises:
        InvalidConfig: no port, or a port outside 0-65535.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InvalidConfig(f"{where} must be host:port, such as {DEFAULT_LISTEN}; got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port_text)  # noqa: S104 - ':port' means all interfaces


def _parse_rule(table: Any, where: str) -> AuthorizationRule:
    if not isinstance(table, dict):
        raise InvalidConfig(f"{where} must be a table")
    _check_keys(table, {"name", "primary_key", "secondary_key", "rights"}, where)
    name = _get(table, "name", str, where)
    primary = _get(table, "primary_key", str, where)
    secondary = _get(table, "secondary_key", str, where)
    if not name or len(name) > MAX_KEY_NAME_LENGTH:
        raise InvalidConfig(f"{where}.name must be 1 to {MAX_KEY_NAME_LENGTH} characters")
    for label, key in (("primary_key", primary), ("secondary_key", secondary)):
        if key is not None and not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise InvalidConfig(f"{where}.{label} must be 1 to {MAX_KEY_LENGTH} characters")
    if primary is None:
        raise InvalidConfig(f"{where} (rule {name!r}) needs a primary_key")
    rights_list = _get(table, "rights", list, where) or []
    rights: set[Right] = set()
    for item in rights_list:
        try:
            rights.add(Right(str(item).capitalize()))
        except ValueError:
            raise InvalidConfig(f"{where}.rights: {item!r} is not one of Listen, Send, Manage") from None
    if not rights:
        raise InvalidConfig(f"{where} (rule {name!r}) grants no rights; list Listen, Send or Manage")
    return AuthorizationRule(
        name=name,
        primary_key=Secret(primary),
        secondary_key=Secret(secondary) if secondary is not None else None,
        rights=frozenset(rights),
    )


def _parse_rules(items: Any, where: str) -> tuple[AuthorizationRule, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise InvalidConfig(f"{where} must be an array of tables ([[{where}]])")
    rules = tuple(_parse_rule(item, f"{where}[{i}]") for i, item in enumerate(items))
    names = [r.name.lower() for r in rules]
    if len(set(names)) != len(names):
        raise InvalidConfig(f"{where}: two rules share a name (names are case-insensitive)")
    return rules


def validate_entity_path(path: str, where: str = "path") -> str:
    """Check a hybrid connection path: segments of letters, digits, ``.``, ``-``, ``_``; at most 260 chars.

    Returns:
        The path without leading or trailing ``/``.

    Raises:
        InvalidConfig: an empty segment, a bad character, or too long.
    """
    clean = path.strip("/")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
    if (
        not clean
        or len(clean) > 260
        or any(not seg or not set(seg) <= allowed or seg.startswith("$") for seg in clean.split("/"))
    ):
        raise InvalidConfig(
            f"{where} {path!r} is not a valid hybrid connection path: use segments of letters, digits, "
            "'.', '-' and '_' separated by '/', at most 260 characters"
        )
    return clean


def _parse_hc(table: Any, where: str) -> HybridConnectionConfig:
    if not isinstance(table, dict):
        raise InvalidConfig(f"{where} must be a table")
    _check_keys(
        table,
        {
            "path",
            "requires_client_authorization",
            "authorization_rules",
            "request_timeout",
            "user_metadata",
            "status",
            "inspect",
        },
        where,
    )
    path = _get(table, "path", str, where)
    if path is None:
        raise InvalidConfig(f"{where} needs a path")
    requires = _get(table, "requires_client_authorization", bool, where)
    timeout = _get(table, "request_timeout", (int, float), where)
    if timeout is not None and timeout <= 0:
        raise InvalidConfig(f"{where}.request_timeout must be positive seconds")
    status = _get(table, "status", str, where) or EntityStatus.ACTIVE.value
    try:
        entity_status = EntityStatus(status)
    except ValueError:
        allowed = ", ".join(s.value for s in EntityStatus)
        raise InvalidConfig(f"{where}.status must be one of {allowed}; got {status!r}") from None
    return HybridConnectionConfig(
        path=validate_entity_path(path, f"{where}.path"),
        requires_client_authorization=True if requires is None else requires,
        authorization_rules=_parse_rules(table.get("authorization_rules"), f"{where}.authorization_rules"),
        request_timeout=60.0 if timeout is None else float(timeout),
        user_metadata=_get(table, "user_metadata", str, where) or "",
        status=entity_status,
        inspect=bool(_get(table, "inspect", bool, where)),
    )


def _parse_tls(table: Any, base: Path) -> TlsConfig:
    where = "server.tls"
    if not isinstance(table, dict):
        raise InvalidConfig(f"{where} must be a table")
    _check_keys(table, {"certfile", "keyfile", "self_signed"}, where)
    certfile = _get(table, "certfile", str, where)
    keyfile = _get(table, "keyfile", str, where)
    hosts = _get(table, "self_signed", list, where) or []
    if hosts and (certfile or keyfile):
        raise InvalidConfig(f"{where}: use either certfile/keyfile or self_signed, not both")
    if not hosts and not (certfile and keyfile):
        raise InvalidConfig(f'{where} needs certfile and keyfile (or self_signed = ["localhost"])')
    return TlsConfig(
        certfile=base / certfile if certfile else None,
        keyfile=base / keyfile if keyfile else None,
        self_signed=tuple(str(h) for h in hosts),
    )


def check_public_url(url: str) -> str:
    """Validate a public URL (scheme and host, no path); returns it without a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise InvalidConfig(
            f"server.public_url must be ws://, wss://, http:// or https://HOST[:PORT]; got {url!r}"
        )
    if parts.path.strip("/") or parts.query:
        raise InvalidConfig("server.public_url must not have a path or query")
    return url.rstrip("/")


_LIMIT_KEYS = {f for f in Limits.__dataclass_fields__}


def _parse_limits(table: Any) -> Limits:
    if table is None:
        return Limits()
    if not isinstance(table, dict):
        raise InvalidConfig("limits must be a table")
    _check_keys(table, _LIMIT_KEYS, "limits")
    values: dict[str, Any] = {}
    for key in table:
        default = getattr(Limits(), key)
        kind: tuple[type, ...] = (int,) if isinstance(default, int) else (int, float)
        checked = _get(table, key, kind, "limits")
        if checked < 0 or (checked == 0 and key != "ping_interval"):
            raise InvalidConfig(f"limits.{key} must be positive")
        values[key] = checked
    return Limits(**values)


_NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_node_id(node_id: str, where: str = "cluster.node_id") -> str:
    """Validate a cluster node id: 1-64 letters, digits, ``-`` or ``_`` (it is part of NATS subjects)."""
    if not _NODE_ID.fullmatch(node_id):
        raise InvalidConfig(f"{where} must be 1 to 64 letters, digits, '-' or '_'; got {node_id!r}")
    return node_id


def check_nats_urls(urls: list[str] | tuple[str, ...], where: str = "cluster.nats") -> tuple[str, ...]:
    """Validate NATS server URLs (``nats://HOST:PORT``, ``tls://`` too); at least one."""
    if not urls:
        raise InvalidConfig(f"{where} needs at least one NATS server URL, such as nats://127.0.0.1:4222")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise InvalidConfig(f"{where}: {url!r} is not a NATS URL (nats://HOST:PORT or tls://HOST:PORT)")
    return tuple(urls)


def _parse_cluster(table: Any) -> ClusterConfig | None:
    where = "cluster"
    if table is None:
        return None
    if not isinstance(table, dict):
        raise InvalidConfig(f"{where} must be a table")
    _check_keys(table, {"nats", "node_id", "lease_seconds", "request_timeout", "replicas"}, where)
    nats = _get(table, "nats", (str, list), where)
    urls = [nats] if isinstance(nats, str) else list(nats or [])
    if not all(isinstance(u, str) for u in urls):
        raise InvalidConfig(f"{where}.nats must be a URL or a list of URLs")
    node_id = _get(table, "node_id", str, where)
    numbers: dict[str, float] = {}
    for key in ("lease_seconds", "request_timeout"):
        value = _get(table, key, (int, float), where)
        if value is not None and value <= 0:
            raise InvalidConfig(f"{where}.{key} must be positive seconds")
        if value is not None:
            numbers[key] = float(value)
    replicas = _get(table, "replicas", int, where)
    if replicas is not None and not 1 <= replicas <= 5:
        raise InvalidConfig(f"{where}.replicas must be 1 to 5")
    return ClusterConfig(
        nats=check_nats_urls(urls),
        node_id=check_node_id(node_id) if node_id is not None else None,
        replicas=replicas or 1,
        **numbers,
    )


def parse_config(data: Mapping[str, Any], base: Path = Path()) -> RelayConfig:
    """Validate a decoded TOML document into a :class:`RelayConfig`.

    Args:
        data: the document.
        base: directory that relative file names are resolved against.

    Raises:
        InvalidConfig: with the offending key named.
    """
    _check_keys(data, {"server", "authorization_rules", "hybrid_connections", "limits", "cluster"}, "config")
    server_table = data.get("server", {})
    if not isinstance(server_table, dict):
        raise InvalidConfig("server must be a table")
    _check_keys(
        server_table,
        {"listen", "public_url", "tls", "create_on_listen", "data_dir", "store", "metrics_public", "workers"},
        "server",
    )
    listen = _get(server_table, "listen", str, "server")
    host, port = parse_host_port(DEFAULT_LISTEN if listen is None else listen)
    public_url = _get(server_table, "public_url", str, "server")
    tls_table = server_table.get("tls")
    data_dir = _get(server_table, "data_dir", str, "server")
    store = _get(server_table, "store", str, "server") or "sqlite"
    if store not in ("sqlite", "memory"):
        raise InvalidConfig(f'server.store must be "sqlite" or "memory"; got {store!r}')
    server = ServerConfig(
        host=host,
        port=port,
        public_url=check_public_url(public_url) if public_url is not None else None,
        tls=_parse_tls(tls_table, base) if tls_table is not None else None,
        create_on_listen=bool(_get(server_table, "create_on_listen", bool, "server")),
        data_dir=base / data_dir if data_dir is not None else base,
        store=store,
        metrics_public=bool(_get(server_table, "metrics_public", bool, "server")),
        workers=_positive_int(_get(server_table, "workers", int, "server"), "server.workers"),
    )
    hcs_raw = data.get("hybrid_connections") or []
    if not isinstance(hcs_raw, list):
        raise InvalidConfig("hybrid_connections must be an array of tables ([[hybrid_connections]])")
    hcs = tuple(_parse_hc(t, f"hybrid_connections[{i}]") for i, t in enumerate(hcs_raw))
    paths = [hc.path.lower() for hc in hcs]
    if len(set(paths)) != len(paths):
        raise InvalidConfig("hybrid_connections: two entries share a path (paths are case-insensitive)")
    return RelayConfig(
        server=server,
        authorization_rules=_parse_rules(data.get("authorization_rules"), "authorization_rules"),
        hybrid_connections=hcs,
        limits=_parse_limits(data.get("limits")),
        cluster=_parse_cluster(data.get("cluster")),
    )


def load_config(path: Path) -> RelayConfig:
    """Read and validate a TOML configuration file.

    Raises:
        InvalidConfig: the file is missing, is not TOML, or fails validation.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidConfig(f"configuration file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfig(f"cannot read {str(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig(f"{str(path)!r} is not valid TOML: {exc}") from None
    try:
        return parse_config(data, base=path.parent)
    except InvalidConfig as exc:
        raise InvalidConfig(f"{path}: {exc}") from None


def generate_key() -> str:
    """A new random key in Azure's format: 32 random bytes, base64 (44 characters)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


_DEFAULT_TEMPLATE = """\
# hyco relay configuration, generated on first start. Edit freely; see docs/configuration.md.
[server]
listen = "{listen}"
# Hybrid connections are created when a listener first opens them.
create_on_listen = true

[[authorization_rules]]
name = "{rule}"
primary_key = "{key}"
rights = ["Manage", "Listen", "Send"]
"""


def load_or_create_default(data_dir: Path) -> tuple[RelayConfig, Path, bool]:
    """The embedded default: ``data_dir/relay.toml``, written with a fresh key on first use.

    Returns:
        The configuration, the file's path, and whether it was just created.

    Raises:
        InvalidConfig: the data directory cannot be written or the existing file is invalid.
    """
    path = data_dir / DEFAULT_CONFIG_NAME
    created = False
    if not path.exists():
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            text = _DEFAULT_TEMPLATE.format(listen=DEFAULT_LISTEN, rule=DEFAULT_RULE_NAME, key=generate_key())
            # The file holds a key: readable by its owner only.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise InvalidConfig(f"cannot write the default configuration to {str(path)!r}: {exc}") from None
    return load_config(path), path, created
