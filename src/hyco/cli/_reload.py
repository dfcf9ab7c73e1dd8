"""``hyco relay`` reloads: the running relay's pid file, SIGHUP, and re-reading the configuration file.

A running relay writes its pid to ``DATA_DIR/relay.pid``; ``hyco relay --reload`` (with the same data
directory or configuration) sends that process SIGHUP; the relay then re-reads its configuration file and
takes its hybrid connections and rules without dropping connections (:meth:`hyco.server.Relay.reload`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hyco.exceptions import InvalidConfig

if TYPE_CHECKING:
    from hyco.server import Relay

__all__ = ["PID_FILE", "pid_file", "reload_config", "signal_reload"]

PID_FILE = "relay.pid"
log = logging.getLogger("hyco.relay")


@contextlib.contextmanager
def pid_file(data_dir: Path) -> Iterator[None]:
    """Write this process's pid to ``data_dir/relay.pid`` for the duration of the block."""
    path = data_dir / PID_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{os.getpid()}\n", encoding="ascii")
    except OSError as exc:
        log.warning("cannot write %s (hyco relay --reload will not find this relay): %s", path, exc)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text(encoding="ascii").strip() == str(os.getpid()):
                path.unlink()


def signal_reload(data_dir: Path) -> int:
    """Send SIGHUP to the relay whose pid is in ``data_dir/relay.pid``; returns its pid.

    Raises:
        click.ClickException: no pid file, or no such process.
    """
    path = data_dir / PID_FILE
    try:
        pid = int(path.read_text(encoding="ascii").strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        raise click.ClickException(
            f"no running relay found through {path} ({exc}); start it with the same --data-dir or --config"
        ) from None
    return pid


def reload_config(relay: Relay, config_path: Path) -> None:
    """Re-read ``config_path`` into ``relay``; an invalid file is logged and the running one kept."""
    from hyco.server.config import load_config

    try:
        relay.reload(load_config(config_path))
    except InvalidConfig as exc:
        log.error("reload refused, the running configuration is kept: %s", exc)
