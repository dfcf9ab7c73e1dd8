"""What ``hyco forward`` logs and how it names things: one line per finished connection, setup errors."""

from __future__ import annotations

import errno
import logging
from typing import Any

from hyco.exceptions import HycoError

logger = logging.getLogger("hyco.tools.forward")


class ForwardError(HycoError):
    """A forwarding could not be set up (port in use, bad socket path, ...). The message says what to do."""


def peer_name(peer: Any) -> str:
    """``host:port`` (``[v6]:port``) for a socket address, or ``unix`` for an unnamed unix peer."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(peer) if peer else "unix"


def log_end(prefix: str, who: str, to_relay: int, from_relay: int, seconds: float, how: str) -> None:
    """Log one finished connection or session: who, bytes each way, duration, how it ended."""
    logger.info(
        "%s %s closed: %d B to relay, %d B from relay, %.3f s, %s",
        prefix,
        who,
        to_relay,
        from_relay,
        seconds,
        how,
    )


def os_reason(exc: OSError) -> str:
    """What a failed ``bind``/``listen`` means for the user, and what to do about it."""
    if exc.errno in (errno.EADDRINUSE, 98, 48, 10048):  # Linux, macOS, Windows
        return "the address is already in use (another program listens there; pick another port)"
    if exc.errno in (errno.EADDRNOTAVAIL, 99, 49, 10049):
        return "the address is not one of this machine's addresses"
    if exc.errno in (errno.EACCES, 13, 10013):
        return "permission denied (ports below 1024 need privileges)"
    return exc.strerror or str(exc)
