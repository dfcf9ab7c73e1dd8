"""Relay connection strings (protocol.md 5.5, .NET ``RelayConnectionStringBuilder``).

``Endpoint=sb://host/;EntityPath=hc;SharedAccessKeyName=rule;SharedAccessKey=key`` and its siblings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from hyco.exceptions import InvalidConnectionString

__all__ = ["RelayConnectionString"]

_KEYS = {
    "endpoint": "endpoint",
    "entitypath": "entity_path",
    "sharedaccesskeyname": "shared_access_key_name",
    "sharedaccesskey": "shared_access_key",
    "sharedaccesssignature": "shared_access_signature",
    "operationtimeout": "operation_timeout",
    "authentication": "authentication",
}
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?$")
DEFAULT_OPERATION_TIMEOUT = 60.0
#: What a connection string key looks like (anything else is not echoed in errors: it may be a secret).
_KEY_NAME = re.compile(r"^[A-Za-z][A-Za-z_]{0,39}$")
#: TimeSpan ticks per second.
_TICKS = 10_000_000


def _parse_timespan(text: str) -> float:
    """Parse a .NET TimeSpan (``[d.]hh:mm:ss[.fffffff]``) into seconds."""
    match = _TIMESPAN.match(text.strip())
    if not match:
        raise InvalidConnectionString(
            f"OperationTimeout {text!r} is not a TimeSpan such as 00:01:00 (hh:mm:ss)"
        )
    days, hours, minutes, seconds, fraction = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    # Count in whole ticks (100 ns, as .NET does) and divide once, so parse and format round-trip exactly.
    return (total * _TICKS + int((fraction or "").ljust(7, "0"))) / _TICKS


def _format_timespan(seconds: float) -> str:
    # Round to ticks first: rounding the fraction alone can carry into a whole second ('.10000000').
    whole, fraction = divmod(round(seconds * _TICKS), _TICKS)
    days, rest = divmod(whole, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    if days:
        text = f"{days}.{text}"
    if fraction:
        text += f".{fraction:07d}"
    return text


@dataclass(frozen=True, slots=True)
class RelayConnectionString:
    """A parsed relay connection string. Secrets are masked in ``repr``.

    Attributes:
        endpoint: the namespace URI, e.g. ``sb://relay.example/``.
        entity_path: the hybrid connection path, or None.
        shared_access_key_name: rule name (with ``shared_access_key``).
        shared_access_key: rule key.
        shared_access_signature: a ready-made SAS token (instead of name and key).
        operation_timeout: seconds, default 60.
        authentication: ``Managed Identity`` when set; hyco cannot use it.
    """

    endpoint: str
    entity_path: str | None = None
    shared_access_key_name: str | None = None
    shared_access_key: str | None = field(default=None, repr=False)
    shared_access_signature: str | None = field(default=None, repr=False)
    operation_timeout: float = DEFAULT_OPERATION_TIMEOUT
    authentication: str | None = None

    def __post_init__(self) -> None:
        if not self.endpoint:
            raise InvalidConnectionString("the connection string has no Endpoint")
        if "://" not in self.endpoint:
            raise InvalidConnectionString(
                f"Endpoint {self.endpoint!r} is not a URI such as sb://relay.example/"
            )
        if self.shared_access_signature and (self.shared_access_key_name or self.shared_access_key):
            raise InvalidConnectionString(
                "SharedAccessSignature cannot be combined with SharedAccessKeyName/SharedAccessKey"
            )
        if bool(self.shared_access_key_name) != bool(self.shared_access_key):
            raise InvalidConnectionString("SharedAccessKeyName and SharedAccessKey must be given together")
        if self.operation_timeout <= 0:
            raise InvalidConnectionString("OperationTimeout must be positive")

    @classmethod
    def parse(cls, text: str) -> RelayConnectionString:
        """Parse ``key=value;...``: keys are case-insensitive, split at the first ``=``, empty parts ignored.

        Raises:
            InvalidConnectionString: an unknown or repeated key, a part without ``=``, a bad OperationTimeout,
                or an invalid combination. The message never contains a key or a signature.
        """
        values: dict[str, str] = {}
        for number, part in enumerate(text.split(";"), start=1):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            name = key.strip().lower()
            if not sep:
                # By number, not by text: the part may be a mistyped key ("SharedAccessKey:...").
                raise InvalidConnectionString(
                    f"part {number} of the connection string has no '=' (each part is Name=value)"
                )
            if name not in _KEYS:
                # Name the key only when it looks like one: "SharedAccessKey:secret=" must not be shown.
                shown = repr(key.strip()) if _KEY_NAME.match(key.strip()) else f"in part {number}"
                raise InvalidConnectionString(
                    f"unknown connection string key {shown}; expected one of Endpoint, "
                    "EntityPath, SharedAccessKeyName, SharedAccessKey, SharedAccessSignature, "
                    "OperationTimeout, Authentication"
                )
            if _KEYS[name] in values:
                raise InvalidConnectionString(f"{key.strip()} appears twice in the connection string")
            values[_KEYS[name]] = value.strip()
        timeout = values.pop("operation_timeout", None)
        return cls(
            endpoint=values.pop("endpoint", ""),
            operation_timeout=_parse_timespan(timeout) if timeout else DEFAULT_OPERATION_TIMEOUT,
            **{k: v or None for k, v in values.items()},
        )

    def with_entity_path(self, path: str | None) -> RelayConnectionString:
        """A copy naming another hybrid connection (or none)."""
        return replace(self, entity_path=path)

    def __str__(self) -> str:
        parts = [f"Endpoint={self.endpoint}"]
        if self.entity_path:
            parts.append(f"EntityPath={self.entity_path}")
        if self.shared_access_key_name:
            parts.append(f"SharedAccessKeyName={self.shared_access_key_name}")
        if self.shared_access_key:
            parts.append(f"SharedAccessKey={self.shared_access_key}")
        if self.shared_access_signature:
            parts.append(f"SharedAccessSignature={self.shared_access_signature}")
        if self.operation_timeout != DEFAULT_OPERATION_TIMEOUT:
            parts.append(f"OperationTimeout={_format_timespan(self.operation_timeout)}")
        if self.authentication:
            parts.append(f"Authentication={self.authentication}")
        return ";".join(parts)
