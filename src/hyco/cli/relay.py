"""``hyco relay``: run a relay, from a configuration file or the embedded defaults."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hyco.cli._loop import run
from hyco.exceptions import InvalidConfig

if TYPE_CHECKING:
    from hyco.server import config as cfg_module
    from hyco.server.config import RelayConfig

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
  hyco relay --cluster nats://10.0.0.5:4222 --listen 0.0.0.0:9350 --public-url ws://node1.lan:9350
                                              one node of a cluster (docs/cluster.md)

\b
Environment: HYCO_CONFIG, HYCO_LISTEN, HYCO_PUBLIC_URL, HYCO_DATA_DIR, HYCO_LOG_LEVEL
(command-line options win over the environment, the environment over the file).
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
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    envvar="HYCO_LOG_LEVEL",
    show_default=True,
)
def command(
    config_path: Path | None,
    listen: str | None,
    public_url: str | None,
    self_signed: tuple[str, ...],
    cluster_urls: tuple[str, ...],
    node_id: str | None,
    data_dir: Path | None,
    log_level: str,
) -> None:
    """Run a Hybrid Connections relay.

    Listeners (official Azure Relay SDKs, hyco) open control channels to it; senders connect through it.
    Stop it with Ctrl-C (or SIGTERM): it closes control channels with 1001 and lets connections finish.
    """
    from hyco.server import config as cfg

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    explicit_dir = data_dir
    data_dir = data_dir or default_data_dir()
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
        ssl_context, ca_path = _tls(config, server.data_dir or data_dir)
    except InvalidConfig as exc:
        raise click.ClickException(str(exc)) from None
    _run(config, ssl_context, config_path, created_path, ca_path)


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


def _banner(
    relay_url: str, config: RelayConfig, config_path: Path | None, created: Path | None, ca: Path | None
) -> None:
    from hyco.protocol.connection_string import RelayConnectionString

    public = config.server.public_url or relay_url
    endpoint = public.replace("wss://", "sb://", 1).replace("https://", "sb://", 1)
    endpoint = endpoint.replace("http://", "ws://", 1)
    out = click.echo
    out(f"hyco relay ready on {relay_url}")
    if created:
        out(f"  created configuration with a new key: {created}")
    elif config_path:
        out(f"  configuration: {config_path}")
    if ca:
        out(f"  development CA (trust it): {ca}")
        out(f"    Node: NODE_EXTRA_CA_CERTS={ca}    Python: SSL_CERT_FILE={ca} or hyco's ca= option")
    rule = next(
        (
            r
            for r in config.authorization_rules
            if "Listen" in {x.value for x in r.rights} or "Manage" in {x.value for x in r.rights}
        ),
        None,
    )
    if rule is not None:
        conn = RelayConnectionString(
            endpoint=f"{endpoint}/",
            shared_access_key_name=rule.name,
            shared_access_key=rule.primary_key.value,
        )
        out("  connection string (add ;EntityPath=NAME for one hybrid connection):")
        out(f"    {conn}")
        if config.server.create_on_listen:
            out("  try it:")
            out(f"    hyco listen '{conn};EntityPath=echo' --echo &")
            out(f"    echo hello | hyco send '{conn};EntityPath=echo'")
    paths = [hc.path for hc in config.hybrid_connections]
    if paths:
        out(f"  hybrid connections: {', '.join(paths)}")
    if config.server.create_on_listen:
        out("  hybrid connections are created when a listener first opens them")
    out("  health: " + public.replace("ws", "http", 1) + "/$health    stop: Ctrl-C")
    sys.stdout.flush()


def _run(
    config: RelayConfig,
    ssl_context: ssl.SSLContext | None,
    config_path: Path | None,
    created: Path | None,
    ca: Path | None,
) -> None:
    from hyco.server import serve

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            async with serve(config, ssl_context=ssl_context) as relay:
                _banner(relay.url, config, config_path, created, ca)
                await stop.wait()
                click.echo("shutting down: closing control channels and connections ...", err=True)
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror or exc}"
            ) from None

    run(main())
