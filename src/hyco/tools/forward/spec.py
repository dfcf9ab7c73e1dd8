"""The ``-L`` and ``-R`` mappings of ``hyco forward``, in azbridge's syntax, as validated frozen values."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from hyco.exceptions import InvalidInput

__all__ = ["LocalForward", "RemoteForward", "Transport", "parse_port"]


class Transport(enum.StrEnum):
    """What a mapping carries: a TCP (or unix socket) byte stream, or UDP datagrams."""

    TCP = "tcp"
    UDP = "udp"


_PORT = re.compile(r"^(\d+)(U|/udp|/tcp)?$", re.IGNORECASE)


def parse_port(text: str, what: str) -> tuple[int, Transport] | None:
    """Read a port with azbridge's optional transport suffix.

    ``5000`` → ``(5000, tcp)``; ``5000U``, ``5000u`` or ``5000/udp`` → ``(5000, udp)``; ``5000/tcp`` → tcp.

    Args:
        text: the port text.
        what: names the option or key in error messages, e.g. ``"-L 5000:db"``.

    Returns:
        The port and transport, or None when ``text`` is not a port at all (a host name, a socket path).

    Raises:
        InvalidInput: a port number out of range, or a suffix other than ``U``, ``/udp`` or ``/tcp``.
    """
    match = _PORT.match(text.strip())
    if not match:
        if "/" in text and text.split("/", 1)[0].isdigit():
            raise InvalidInput(
                f"{what}: {text!r}: only /udp or /tcp may follow a port (azbridge port names for "
                "multiplexing are not supported by hyco)"
            )
        return None
    port = int(match.group(1))
    if not 0 <= port <= 65535:
        raise InvalidInput(f"{what}: port {port} is not from 0 to 65535")
    suffix = (match.group(2) or "").lower()
    return port, Transport.UDP if suffix in ("u", "/udp") else Transport.TCP


def _split_host_port(text: str) -> tuple[str, str] | None:
    """``host:port`` or ``[v6]:port`` → (host, port); no colon → None."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            return None
        return text[1:close], text[close + 2 :]
    host, sep, port = text.rpartition(":")
    if not sep:
        return None
    return host, port


def _check_relay_name(name: str, what: str) -> str:
    name = name.strip().strip("/")
    if not name:
        raise InvalidInput(f"{what}: the relay name (hybrid connection) is empty")
    return name


def _check_endpoint(
    kind: str, relay_name: str, port: int | None, local_socket: str | None, protocol: Transport
) -> None:
    """The rules both mapping kinds share: a port or a unix socket (not both), and no UDP over a socket."""
    if (port is None) == (local_socket is None):
        raise InvalidInput(f"{kind} {relay_name!r}: give either a port or a local_socket")
    if local_socket is not None and protocol is Transport.UDP:
        raise InvalidInput(f"{kind} {relay_name!r}: UDP over a unix socket is not supported")


def _describe(host: str, port: int | None, local_socket: str | None, protocol: Transport) -> str:
    if local_socket is not None:
        return local_socket
    shown = f"[{host}]" if ":" in host else host or "*"
    return f"{shown}:{port}/{protocol.value}"


@dataclass(frozen=True, slots=True)
class LocalForward:
    """One ``-L`` mapping: a local TCP port, UDP port or unix socket bound to a hybrid connection.

    Attributes:
        relay_name: the hybrid connection to open streams to.
        bind_address: local address to listen on (TCP/UDP); ``""`` means every interface.
        port: local port (0 picks a free one; see :attr:`LocalForwarder.addresses`).
        local_socket: unix socket path to listen on instead of a port.
        protocol: what the mapping carries (:class:`Transport`).

    Raises:
        InvalidInput: neither or both of ``port`` and ``local_socket``, or UDP over a unix socket.
    """

    relay_name: str
    bind_address: str = "127.0.0.1"
    port: int | None = None
    local_socket: str | None = None
    protocol: Transport = Transport.TCP

    def __post_init__(self) -> None:
        _check_endpoint("LocalForward", self.relay_name, self.port, self.local_socket, self.protocol)

    @classmethod
    def parse(cls, text: str, *, default_bind_address: str = "127.0.0.1") -> LocalForward:
        """Parse azbridge's ``-L`` forms.

        ``port:relay``, ``bind_address:port:relay``, ``[v6addr]:port:relay``, ``socket_path:relay``; the port
        may end in ``/udp`` (or azbridge's ``U``, as in ``5353U``) for UDP.

        Raises:
            InvalidInput: the text is none of these forms; the message says which part is wrong.
        """
        what = f"-L {text}"
        local, sep, relay = text.rpartition(":")
        if not sep or not local:
            raise InvalidInput(f"{what}: expected [bind_address:]port:relay_name or socket_path:relay_name")
        relay = _check_relay_name(relay, what)
        port = parse_port(local, what)
        if port is not None:
            return cls(relay, default_bind_address, port[0], None, port[1])
        hostport = _split_host_port(local)
        if hostport is not None:
            port = parse_port(hostport[1], what)
            if port is not None:
                host = hostport[0]
                bind = "" if host in ("", "*") else host
                return cls(relay, bind, port[0], None, port[1])
            if not ("/" in local or local.startswith(".")):
                raise InvalidInput(f"{what}: {hostport[1]!r} is not a port number")
        if ":" in local and "/" not in local:
            raise InvalidInput(f"{what}: expected [bind_address:]port:relay_name or socket_path:relay_name")
        return cls(relay, local_socket=local)

    def describe(self) -> str:
        """``127.0.0.1:5000/tcp``, ``/run/x.sock``: the local end, for logs."""
        return _describe(self.bind_address, self.port, self.local_socket, self.protocol)


@dataclass(frozen=True, slots=True)
class RemoteForward:
    """One ``-R`` mapping: a hybrid connection bound to a target host and port, or unix socket.

    Attributes:
        relay_name: the hybrid connection to listen on.
        host: the target host (default: this machine).
        port: the target port.
        local_socket: a unix socket path to connect to instead.
        protocol: what the mapping carries (:class:`Transport`).

    Raises:
        InvalidInput: neither or both of ``port`` and ``local_socket``, UDP over a unix socket, or port 0.
    """

    relay_name: str
    host: str = "localhost"
    port: int | None = None
    local_socket: str | None = None
    protocol: Transport = Transport.TCP

    def __post_init__(self) -> None:
        _check_endpoint("RemoteForward", self.relay_name, self.port, self.local_socket, self.protocol)
        if self.port == 0:
            raise InvalidInput(f"RemoteForward {self.relay_name!r}: the target port cannot be 0")

    @classmethod
    def parse(cls, text: str) -> RemoteForward:
        """Parse azbridge's ``-R`` forms.

        ``relay:port``, ``relay:host:port``, ``relay:[v6addr]:port``, ``relay:socket_path``; the port may end
        in ``/udp`` (or ``U``) for UDP.

        Raises:
            InvalidInput: the text is none of these forms.
        """
        what = f"-R {text}"
        relay, sep, target = text.partition(":")
        if not sep or not target:
            raise InvalidInput(f"{what}: expected relay_name:[host:]port or relay_name:socket_path")
        relay = _check_relay_name(relay, what)
        port = parse_port(target, what)
        if port is not None:
            return cls(relay, "localhost", port[0], None, port[1])
        hostport = _split_host_port(target)
        if hostport is not None and hostport[0]:
            port = parse_port(hostport[1], what)
            if port is not None:
                return cls(relay, hostport[0], port[0], None, port[1])
            if "/" not in target:
                raise InvalidInput(f"{what}: {hostport[1]!r} is not a port number")
        return cls(relay, local_socket=target)

    def describe(self) -> str:
        """``db.internal:5432/tcp``, ``/run/x.sock``: the target, for logs."""
        return _describe(self.host, self.port, self.local_socket, self.protocol)
