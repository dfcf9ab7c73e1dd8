"""Where the relay is and how ``hyco forward`` authorizes: a connection string plus azbridge's overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hyco.client.credentials import TokenProvider
from hyco.exceptions import InvalidConnectionString, InvalidInput
from hyco.protocol.connection_string import RelayConnectionString
from hyco.protocol.uri import parse_address

__all__ = ["RelayCredentials"]

#: The rule name a key without one is for (as azbridge and the connection string rules assume).
_DEFAULT_KEY_NAME = "RootManageSharedAccessKey"


@dataclass(frozen=True, slots=True)
class RelayCredentials:
    """Where the relay is and how to authorize: a namespace endpoint plus a token provider.

    Attributes:
        endpoint: the namespace, e.g. ``sb://contoso.servicebus.windows.net/`` or ``ws://127.0.0.1:9350/``.
        token_provider: tokens for listening and sending (None: the hybrid connection needs no sender auth;
            a remote forwarder always needs one).
        entity_path: the ``EntityPath`` of the connection string; when set, it is the only valid relay name.
        client_options: extra keyword arguments for :class:`HybridConnectionClient` and
            :class:`HybridConnectionListener` (``ssl=``, ``ca_file=``, ``proxy=``).
    """

    endpoint: str
    token_provider: TokenProvider | None = None
    entity_path: str | None = None
    client_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str | None,
        *,
        endpoint: str | None = None,
        key_name: str | None = None,
        key: str | None = None,
        sas: str | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> RelayCredentials:
        """Combine a connection string with azbridge's overrides (``-E``, ``-K``, ``-k``, ``-s``).

        Each override replaces the connection string's value; a SAS wins over a key, and a key without a
        rule name is for ``RootManageSharedAccessKey``.

        Raises:
            InvalidConnectionString: the connection string is malformed, asks for ``Authentication=``, or
                there is no endpoint at all.
            InvalidURI: the endpoint is not a relay URI.
            InvalidToken: the key or SAS is unusable.
        """
        cs = RelayConnectionString.parse(connection_string) if connection_string else None
        endpoint = endpoint or (cs.endpoint if cs else None)
        if not endpoint:
            raise InvalidConnectionString(
                "no relay endpoint: pass -x CONNECTION_STRING (or set AZURE_BRIDGE_CONNECTIONSTRING) "
                "or -E URI"
            )
        parse_address(endpoint, "probe")  # validate the endpoint once, here (raises InvalidURI)
        sas = sas or (cs.shared_access_signature if cs else None)
        key = None if sas else key or (cs.shared_access_key if cs else None)
        key_name = key_name or (cs.shared_access_key_name if cs else None)
        effective = RelayConnectionString(
            endpoint,
            shared_access_key_name=(key_name or _DEFAULT_KEY_NAME) if key else None,
            shared_access_key=key,
            shared_access_signature=sas,
            authentication=cs.authentication if cs else None,
        )
        provider = TokenProvider.from_connection_string(effective)
        return cls(endpoint, provider, cs.entity_path if cs else None, dict(client_options or {}))

    def address_of(self, relay_name: str) -> tuple[str, str]:
        """The ``(address, path)`` pair for the SDK's ``address``/``path`` arguments.

        Raises:
            InvalidInput: the connection string names another hybrid connection (``EntityPath``).
        """
        if self.entity_path and self.entity_path.strip("/") != relay_name:
            raise InvalidInput(
                f"the connection string is for hybrid connection {self.entity_path!r}; it cannot be used "
                f"for {relay_name!r}"
            )
        return self.endpoint, relay_name
