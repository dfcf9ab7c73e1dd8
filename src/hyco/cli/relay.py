"""``hyco relay``: run a relay, from a configuration file or the embedded defaults."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shlex
import shutil
import signal
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hyco.cli._errors import Scrubber, logging_options, setup_logging
from hyco.cli._loop import run
from hyco.exceptions import InvalidConfig

if TYPE_CHECKING:
    from hyco.server import config as cfg_module
    from hyco.server.config import AuthorizationRule, RelayConfig

__all__ = ["command"]


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/hyco``, else ``~/.local/share/hyco``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hyco"


EPILOG = """\b
Examples:
  hyco relay                                  embedded defaults on ws://127.0.0.1:9350
  hyco relay --listen 0.0.0.0:9350 --public-url ws://relay.lan:9350
  hyco relay --self-signed localhost          TLS (wss://) with a development certificate
  hyco relay --config relay.toml              everything from a file (docs/configuration.md)
  export HYCO_CONNECTION_STRING="$(hyco relay --print-connection-string);EntityPath=echo"
  hyco relay --reload                         make the running relay re-read its file (or send it SIGHUP)
  hyco relay --workers 4                      four processes behind one port (default: one per core)
  hyco relay --cluster nats://10.0.0.5:4222 --listen 0.0.0.0:9350 --public-url ws://node1.lan:9350
                                              one node of a cluster (docs/cluster.md)

\b
Environment: HYCO_CONFIG, HYCO_LISTEN, HYCO_PUBLIC_URL, HYCO_DATA_DIR, HYCO_WORKERS, HYCO_LOG_LEVEL
(command-line options win over the environment, the environment over the file).
Exit status: 0 stopped by SIGTERM, 1 error (config, port in use), 2 usage, 130 Ctrl-C.
"""


@click.command(name="relay", epilog=EPILOG)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="HYCO_CONFIG",
    help="TOML configuration file. Without it, DATA_DIR/relay.toml is created on first start and reused.",
)
@click.option("--listen", metavar="HOST:PORT", envvar="HYCO_LISTEN", help="Address to bind [127.0.0.1:9350].")
@click.option(
    "--public-url",
    metavar="URL",
    envvar="HYCO_PUBLIC_URL",
    help="How clients reach this relay (ws://, wss://); used in rendezvous addresses.",
)
@click.option(
    "--self-signed",
    "self_signed",
    metavar="HOST",
    multiple=True,
    help="Serve TLS with a development certificate for HOST (repeatable); localhost and 127.0.0.1 are "
    "always included. The CA to trust is written to DATA_DIR/tls/ca.pem.",
)
@click.option(
    "--cluster",
    "cluster_urls",
    metavar="NATS_URL",
    multiple=True,
    help="Join a cluster of relay nodes through this NATS server (repeatable, or comma-separated, for a NATS "
    "cluster); every node needs its own reachable --public-url. See docs/cluster.md.",
)
@click.option(
    "--node-id",
    metavar="ID",
    help="This node's id in the cluster [generated once, kept in DATA_DIR/node-id].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="HYCO_DATA_DIR",
    help="Where the default configuration and development certificates live [~/.local/share/hyco].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    envvar="HYCO_WORKERS",
    help="Processes serving the port; a sender on one meets a listener on another [one per core; 1 with "
    "TLS, --cluster or the memory store]. 1 is a single process. See docs/configuration.md.",
)
@click.option(
    "--print-connection-string",
    "print_only",
    is_flag=True,
    help="Print the connection string clients use (as the banner does) and exit without starting; creates "
    "DATA_DIR/relay.toml like a first start when it is missing.",
)
@click.option(
    "--reload",
    "reload_running",
    is_flag=True,
    help="Tell the relay running with this data directory (or --config) to re-read its configuration file "
    "(as SIGHUP does); connections stay up.",
)
@logging_options
def command(
    config_path: Path | None,
    listen: str | None,
    public_url: str | None,
    self_signed: tuple[str, ...],
    cluster_urls: tuple[str, ...],
    node_id: str | None,
    data_dir: Path | None,
    workers: int | None,
    print_only: bool,
    reload_running: bool,
    verbose: int,
    log_level: str | None,
) -> None:
    """Run a Hybrid Connections relay.

    Listeners (official Azure Relay SDKs, hyco) open control channels to it; senders connect through it.
    Stop it with Ctrl-C (or SIGTERM): it closes control channels with 1001 and lets connections finish.
    """
    from hyco.server import config as cfg

    scrub = Scrubber()
    setup_logging(scrub, verbose=verbose, level=log_level)
    explicit_dir = data_dir
    data_dir = data_dir or default_data_dir()
    if reload_running:
        from hyco.cli._reload import signal_reload

        run_dir = data_dir if explicit_dir or config_path is None else _config_data_dir(config_path, data_dir)
        click.echo(f"asked the relay (pid {signal_reload(run_dir)}) to reload its configuration")
        return
    try:
        created_path: Path | None = None
        if config_path is not None:
            config = cfg.load_config(config_path)
        else:
            config, path, created = cfg.load_or_create_default(data_dir)
            config_path = path
            created_path = path if created else None
        server = config.server
        if listen:
            host, port = cfg.parse_host_port(listen, "--listen")
            server = dataclasses.replace(server, host=host, port=port)
        if public_url:
            server = dataclasses.replace(server, public_url=cfg.check_public_url(public_url))
        if explicit_dir is not None:
            server = dataclasses.replace(server, data_dir=explicit_dir)
        if self_signed:
            server = dataclasses.replace(server, tls=cfg.TlsConfig(self_signed=self_signed))
        config = dataclasses.replace(config, server=server, cluster=_cluster(config, cluster_urls, node_id))
        scrub.secrets.extend(_keys(config))
        if print_only:
            click.echo(_connection_string(_public(config, None), config))
            return
        ssl_context, ca_path = _tls(config, server.data_dir or data_dir)
        from hyco.cli._workers import worker_count

        count = worker_count(workers or config.server.workers, config)
    except InvalidConfig as exc:
        raise click.ClickException(scrub(str(exc))) from None
    if not _rules(config):
        click.echo(
            "warning: the configuration has no authorization rules: no listener can authenticate, so nothing "
            "can be relayed. Add an [[authorization_rules]] entry (docs/configuration.md).",
            err=True,
        )
    if count > 1:
        from hyco.cli._workers import run_workers

        run_workers(
            config,
            count,
            config_path,
            config.server.data_dir or data_dir,
            lambda url: _banner(url, config, config_path, created_path, ca_path, count),
        )
        return
    _run(config, ssl_context, config_path, created_path, ca_path)


def _keys(config: RelayConfig) -> list[str]:
    """Every key in the configuration (only the banner may show one)."""
    return [
        key.value
        for rule in _rules(config)
        for key in (rule.primary_key, rule.secondary_key)
        if key is not None
    ]


def _rules(config: RelayConfig) -> list[AuthorizationRule]:
    """Namespace rules and every hybrid connection's rules."""
    return [
        *config.authorization_rules,
        *(r for hc in config.hybrid_connections for r in hc.authorization_rules),
    ]


def _config_data_dir(config_path: Path, fallback: Path) -> Path:
    from hyco.server import config as cfg

    try:
        return cfg.load_config(config_path).server.data_dir or fallback
    except InvalidConfig as exc:
        raise click.ClickException(str(exc)) from None


def _cluster(
    config: RelayConfig, urls: tuple[str, ...], node_id: str | None
) -> cfg_module.ClusterConfig | None:
    """``[cluster]`` with --cluster and --node-id applied (the flags win over the file)."""
    from hyco.server import config as cfg

    cluster = config.cluster
    if urls:
        split = tuple(u.strip() for text in urls for u in text.split(",") if u.strip())
        nats = cfg.check_nats_urls(split, "--cluster")
        cluster = dataclasses.replace(cluster, nats=nats) if cluster else cfg.ClusterConfig(nats=nats)
    if node_id is not None:
        if cluster is None:
            raise InvalidConfig("--node-id needs --cluster (or a [cluster] table in the configuration)")
        cluster = dataclasses.replace(cluster, node_id=cfg.check_node_id(node_id, "--node-id"))
    return cluster


def _tls(config: RelayConfig, data_dir: Path) -> tuple[ssl.SSLContext | None, Path | None]:
    from hyco.server.tls import server_ssl_context

    if config.server.tls is None:
        return None, None
    context, minted = server_ssl_context(config.server.tls, data_dir)
    return context, minted.ca if minted else None


def _public(config: RelayConfig, relay_url: str | None) -> str:
    """How clients reach the relay: ``public_url``, else the bound URL (else, before binding, the configured
    address)."""
    if config.server.public_url:
        return config.server.public_url
    if relay_url:
        return relay_url
    scheme = "wss" if config.server.tls else "ws"
    return f"{scheme}://{config.server.host}:{config.server.port}"


def _connection_string(public: str, config: RelayConfig) -> str:
    """The connection string of the first rule that may listen (sb:// for TLS, ws:// for plain).

    Raises:
        InvalidConfig: no namespace rule has the Listen right.
    """
    from hyco.protocol.connection_string import RelayConnectionString
    from hyco.protocol.sas import Right

    endpoint = public.replace("wss://", "sb://", 1).replace("https://", "sb://", 1)
    endpoint = endpoint.replace("http://", "ws://", 1)
    rule = next(
        (r for r in config.authorization_rules if r.rights & {Right.LISTEN, Right.MANAGE}),
        None,
    )
    if rule is None:
        raise InvalidConfig("no namespace authorization rule has the Listen or Manage right")
    return str(
        RelayConnectionString(
            endpoint=f"{endpoint.rstrip('/')}/",
            shared_access_key_name=rule.name,
            shared_access_key=rule.primary_key.value,
        )
    )


def invocation() -> str:
    """How the user can run this same hyco again from a shell: ``hyco`` when that is on PATH and is this
    program, else the full path of the script that started us, else ``python -m hyco``."""
    argv0 = Path(sys.argv[0])
    if argv0.name in ("hyco", "hyco.exe"):
        found = shutil.which("hyco")
        if found and Path(found).resolve() == argv0.resolve():
            return "hyco"
        if argv0.exists():
            return shlex.quote(str(argv0.resolve()))
    return f"{shlex.quote(sys.executable)} -m hyco"


def _banner(
    relay_url: str,
    config: RelayConfig,
    config_path: Path | None,
    created: Path | None,
    ca: Path | None,
    workers: int = 1,
) -> None:
    public = _public(config, relay_url)
    out = click.echo
    out(f"hyco relay ready on {relay_url}")
    if created:
        out(f"  created configuration with a new key: {created}")
    elif config_path:
        out(f"  configuration: {config_path}")
    trust = ""
    if ca:
        trust = f" --ca-file {shlex.quote(str(ca))}"
        out(f"  development CA (trust it): {ca}")
        out(f"    hyco: --ca-file {ca}    Python SDK: ca_file='{ca}'    Node: NODE_EXTRA_CA_CERTS={ca}")
    try:
        conn = _connection_string(public, config)
    except InvalidConfig:
        conn = None
    if conn is not None:
        out("  connection string (add ;EntityPath=NAME for one hybrid connection):")
        out(f"    {conn}")
        if config.server.create_on_listen:
            hyco = invocation()
            out("  try it (in another terminal; prints hello):")
            out(f"    export HYCO_CONNECTION_STRING='{conn};EntityPath=echo'")
            out(f"    {hyco} listen --echo{trust} &")
            out(f"    echo hello | {hyco} send --wait{trust}")
    paths = [hc.path for hc in config.hybrid_connections]
    if paths:
        out(f"  hybrid connections: {', '.join(paths)}")
    if config.server.create_on_listen:
        out("  hybrid connections are created when a listener first opens them")
    if workers > 1:
        out(f"  workers: {workers} processes behind one port")
    out("  health: " + public.replace("ws", "http", 1) + "/$health    stop: Ctrl-C")
    sys.stdout.flush()


def _run(
    config: RelayConfig,
    ssl_context: ssl.SSLContext | None,
    config_path: Path | None,
    created: Path | None,
    ca: Path | None,
) -> None:
    from hyco.cli._reload import pid_file, reload_config
    from hyco.server import serve

    async def main() -> None:
        try:
            async with serve(config, ssl_context=ssl_context) as relay:
                if config_path is not None:
                    path = config_path
                    with contextlib.suppress(NotImplementedError, AttributeError):  # no SIGHUP on Windows
                        asyncio.get_running_loop().add_signal_handler(
                            signal.SIGHUP, lambda: reload_config(relay, path)
                        )
                _banner(relay.url, config, config_path, created, ca)
                with pid_file(config.server.data_dir or default_data_dir()):
                    try:
                        await asyncio.Event().wait()  # until a signal cancels this (cli._loop)
                    except asyncio.CancelledError:
                        click.echo("shutting down: closing control channels and connections ...", err=True)
                        raise
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror or exc}"
            ) from None

    run(main())
