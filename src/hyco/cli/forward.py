"""``hyco forward``: azbridge-compatible port forwarding (``-L``, ``-R``, ``-x``, config file)."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any

import click

from hyco.cli._errors import logging_options, setup_logging, user_errors
from hyco.cli._loop import run
from hyco.cli._options import PS_NOTE, ClientOptions, client_options
from hyco.exceptions import InvalidInput
from hyco.tools.forward import (
    DEFAULT_TARGET_CONNECT_TIMEOUT,
    DEFAULT_UDP_IDLE_TIMEOUT,
    Forwarder,
    LocalForward,
    RelayCredentials,
    RemoteForward,
    Transport,
    parse_port,
)

__all__ = ["command", "load_config"]

#: Environment variables for the connection string, first match wins (hyco's own, then azbridge's).
CONNECTION_STRING_ENV = ("HYCO_CONNECTION_STRING", "AZURE_BRIDGE_CONNECTIONSTRING")

# azbridge configuration keys (CONFIG.md), compared without case or underscores.
_TOP_KEYS = {
    "azurerelayconnectionstring": "connection_string",
    "connectionstring": "connection_string",
    "azurerelayendpoint": "endpoint",
    "endpoint": "endpoint",
    "azurerelaysharedaccesskeyname": "key_name",
    "keyname": "key_name",
    "azurerelaysharedaccesskey": "key",
    "key": "key",
    "azurerelaysharedaccesssignature": "sas",
    "sas": "sas",
    "localforward": "local",
    "remoteforward": "remote",
    "gatewayports": "gateway_ports",
    "bindaddress": "bind_address",
    "connecttimeout": "connect_timeout",
    "udpidletimeout": "udp_idle_timeout",
    "loglevel": "log_level",
}
#: azbridge keys hyco accepts and ignores (they change nothing hyco does).
_IGNORED_KEYS = {"addressfamily", "clearallforwardings", "exitonforwardfailure", "logfilename"}
_LOCAL_KEYS: dict[str, str | None] = {
    "relayname": "relay_name",
    "bindaddress": "bind_address",
    "port": "port",
    "bindport": "port",
    "localsocket": "local_socket",
    "bindlocalsocket": "local_socket",
    "protocol": "protocol",
    "hostname": None,  # azbridge --addhosts only
}
_REMOTE_KEYS: dict[str, str | None] = {
    "relayname": "relay_name",
    "host": "host",
    "hostport": "port",
    "port": "port",
    "localsocket": "local_socket",
    "protocol": "protocol",
}


def _norm(key: object) -> str:
    return str(key).replace("_", "").replace("-", "").lower()


def _read_file(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{path}: not valid TOML: {exc}") from exc
    try:
        yaml: Any = importlib.import_module("yaml")
    except ImportError:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            raise InvalidInput(
                f"{path}: YAML configuration needs PyYAML (pip install pyyaml); or write it as TOML "
                "(a .toml file with the same keys)"
            ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: the top level must be a mapping of keys to values")
    return data


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("yes", "true", "1"):
        return True
    if str(value).lower() in ("no", "false", "0", ""):
        return False
    raise InvalidInput(f"{key}: expected yes or no, not {value!r}")


def _entries(value: Any, key: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidInput(f"{key}: expected a list of mappings")
    return value


def _mapping(entry: dict[str, Any], keys: dict[str, str | None], section: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw, value in entry.items():
        norm = _norm(raw)
        if norm not in keys:
            raise InvalidInput(f"{section}: unknown key {raw!r} (known: {', '.join(sorted(set(keys)))})")
        target = keys[norm]
        if target is not None and value is not None:
            out[target] = value
    if "relay_name" not in out:
        raise InvalidInput(f"{section}: relay_name is required")
    return out


def _protocol_and_port(out: dict[str, Any], section: str) -> None:
    """Set ``out``'s transport from its ``protocol`` key and the port's azbridge suffix (``5000U``)."""
    protocol = Transport(str(out.pop("protocol", "tcp")).lower())
    port = out.get("port")
    if isinstance(port, str):
        parsed = parse_port(port, section)
        if parsed is None:
            raise InvalidInput(f"{section}: port {port!r} is not a number")
        port, transport = parsed
        if transport is Transport.UDP:
            protocol = transport
    if port is not None:
        out["port"] = int(port)
    out["protocol"] = protocol


def load_config(path: Path) -> dict[str, Any]:
    """Read a ``hyco forward`` configuration file (TOML, or azbridge's YAML when PyYAML is installed).

    Keys are azbridge's (``AzureRelayConnectionString``, ``LocalForward``, ``RemoteForward``, ...) or their
    snake_case forms; case and underscores do not matter.

    Returns:
        ``connection_string``, ``endpoint``, ``key_name``, ``key``, ``sas``, ``gateway_ports``,
        ``bind_address``, ``connect_timeout``, ``udp_idle_timeout``, ``log_level`` (when set), and ``local`` /
        ``remote`` as lists of :class:`LocalForward` / :class:`RemoteForward`.

    Raises:
        InvalidInput: the file cannot be parsed or has an unknown key; the message names it.
    """
    data = _read_file(path)
    settings: dict[str, Any] = {"local": [], "remote": []}
    raw_local: list[dict[str, Any]] = []
    for raw, value in data.items():
        norm = _norm(raw)
        if norm in _IGNORED_KEYS:
            continue
        if norm not in _TOP_KEYS:
            raise InvalidInput(f"{path}: unknown key {raw!r}")
        key = _TOP_KEYS[norm]
        if key == "local":
            raw_local = [_mapping(e, _LOCAL_KEYS, f"{path}: LocalForward") for e in _entries(value, raw)]
        elif key == "remote":
            for entry in _entries(value, raw):
                out = _mapping(entry, _REMOTE_KEYS, f"{path}: RemoteForward")
                _protocol_and_port(out, f"{path}: RemoteForward")
                settings["remote"].append(RemoteForward(**out))
        elif key == "gateway_ports":
            settings[key] = _bool(value, raw)
        elif value is not None and value != "":
            settings[key] = value
    default_bind = "" if settings.get("gateway_ports") else "127.0.0.1"
    for out in raw_local:
        _protocol_and_port(out, f"{path}: LocalForward")
        if "local_socket" not in out:
            out.setdefault("bind_address", default_bind)
        settings["local"].append(LocalForward(**out))
    return settings


async def _run(forwarder: Forwarder) -> None:
    await forwarder.start()
    try:
        await forwarder.wait_closed()
    finally:
        await forwarder.close()


_EPILOG = (
    """\b
Examples:
  # next to the service (remote side): relay "ssh" -> localhost:22
  hyco forward -R ssh:22 -x "Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=...;SharedAccessKey=..."
\b
  # next to the client (local side): localhost:2222 -> relay "ssh"
  export AZURE_BRIDGE_CONNECTIONSTRING="Endpoint=sb://NS.servicebus.windows.net/;..."
  hyco forward -L 2222:ssh          # then: ssh -p 2222 localhost
\b
  # PostgreSQL through a unix socket on both sides
  hyco forward -R db:/var/run/postgresql/.s.PGSQL.5432
  hyco forward -L /tmp/pg/.s.PGSQL.5432:db
\b
  # UDP (DNS): /udp (or azbridge's U suffix) on the port
  hyco forward -R dns:10.0.0.2:53/udp
  hyco forward -L 127.0.0.1:5353/udp:dns
\b
  # many mappings from a file (TOML, or azbridge's YAML with PyYAML installed)
  hyco forward --config bridge.toml
\b
Exit status: 0 stopped by SIGTERM, 1 error (bad credentials, port in use, ...), 2 usage, 130 Ctrl-C.
"""
    + PS_NOTE
)


@click.command(name="forward", epilog=_EPILOG)
@click.option(
    "-L",
    "--local-forward",
    "local",
    multiple=True,
    metavar="[ADDR:]PORT[/udp]:RELAY | SOCKET:RELAY",
    help="Listen locally and forward each connection to hybrid connection RELAY. Repeatable.",
)
@click.option(
    "-R",
    "--remote-forward",
    "remote",
    multiple=True,
    metavar="RELAY:[HOST:]PORT[/udp] | RELAY:SOCKET",
    help="Listen on hybrid connection RELAY and connect each stream to HOST:PORT or SOCKET. Repeatable.",
)
@client_options(azbridge=True, path=False)
@click.option(
    "-f",
    "-F",
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Configuration file: TOML, or azbridge YAML (LocalForward, RemoteForward, ...).",
)
@click.option(
    "-g", "--gateway-ports", is_flag=True, help="Bind -L ports on all interfaces, not just loopback."
)
@click.option("-b", "--bind-address", metavar="ADDR", help="Source address for -R connections to targets.")
@click.option(
    "--connect-timeout",
    type=float,
    default=None,
    help=f"Seconds -R waits for its target ({DEFAULT_TARGET_CONNECT_TIMEOUT:g}); -L for the remote side.",
)
@click.option(
    "--udp-idle-timeout",
    type=float,
    default=None,
    help=f"Seconds of silence that end a UDP session ({DEFAULT_UDP_IDLE_TIMEOUT:g}).",
)
@logging_options
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.pass_context
def command(
    ctx: click.Context,
    local: tuple[str, ...],
    remote: tuple[str, ...],
    config_file: Path | None,
    gateway_ports: bool,
    bind_address: str | None,
    connect_timeout: float | None,
    udp_idle_timeout: float | None,
    verbose: int,
    log_level: str | None,
    quiet: bool,
) -> None:
    """Forward TCP ports, UDP ports and unix sockets through a relay, the way azbridge does.

    Run one `hyco forward -R` next to the service and one `hyco forward -L` next to the client; both use the
    same hybrid connection (RELAY) on the same relay namespace. Settings come from flags, then the
    environment, then the config file. Each connection is logged (bytes each way, duration, how it ended).
    """
    options = ClientOptions.of(ctx)
    with user_errors(options.scrub):
        settings = load_config(config_file) if config_file else {"local": [], "remote": []}
        options.scrub.secrets.extend(
            str(settings[k]) for k in ("connection_string", "key", "sas") if settings.get(k)
        )
        setup_logging(
            options.scrub,
            verbose=verbose,
            level="error" if quiet else log_level or settings.get("log_level"),
        )
        gateway = gateway_ports or bool(settings.get("gateway_ports"))
        try:
            locals_ = [
                *settings["local"],
                *(LocalForward.parse(t, default_bind_address="" if gateway else "127.0.0.1") for t in local),
            ]
            remotes = [*settings["remote"], *(RemoteForward.parse(t) for t in remote)]
        except InvalidInput as exc:
            raise click.UsageError(str(exc)) from exc
        if not locals_ and not remotes:
            raise click.UsageError("nothing to forward: give -L and/or -R (or a --config file with mappings)")
        client_settings: dict[str, Any] = {"ssl": options.ssl_setting()}
        if options.proxy:
            client_settings["proxy"] = options.proxy
        timeout = connect_timeout if connect_timeout is not None else settings.get("connect_timeout")
        idle = udp_idle_timeout if udp_idle_timeout is not None else settings.get("udp_idle_timeout")
        credentials = RelayCredentials.from_connection_string(
            options.connection_string_text(CONNECTION_STRING_ENV[1:]) or settings.get("connection_string"),
            endpoint=options.address or settings.get("endpoint"),
            key_name=options.key_name or settings.get("key_name"),
            key=options.key or settings.get("key"),
            sas=options.sas or settings.get("sas"),
            client_options=client_settings,
        )
        if remotes and credentials.token_provider is None:
            raise click.UsageError(
                "-R needs credentials with the Listen right: a connection string with SharedAccessKey, "
                "or -K/-k, or -s"
            )
        forwarder = Forwarder(
            locals_,
            remotes,
            credentials,
            connect_timeout=float(timeout) if timeout is not None else None,
            target_connect_timeout=float(timeout) if timeout is not None else DEFAULT_TARGET_CONNECT_TIMEOUT,
            udp_idle_timeout=float(idle) if idle is not None else DEFAULT_UDP_IDLE_TIMEOUT,
            bind_address=bind_address or settings.get("bind_address"),
        )
        run(_run(forwarder))
