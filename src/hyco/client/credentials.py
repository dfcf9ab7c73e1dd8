"""Where the SDK's security tokens come from (protocol.md 5).

A :class:`TokenProvider` hands out SAS tokens for an *audience* (the resource a token is for). Three sources:

* a shared access key (rule name + key): tokens are signed locally, the way the .NET SDK signs them
  (``sr`` = ``WebUtility.UrlEncode("http://host/path/")``, protocol.md 5.2/5.3), cached, and re-signed before
  they expire;
* a fixed SAS string: handed out as is (it cannot be renewed; when it expires the relay refuses it);
* a callable (sync or async) ``(audience, valid_for) -> str | SecurityToken``: for key rotation or tokens
  minted by another service (protocol.md 8.1, dotnet#119).

Tokens are never logged and never appear in ``repr``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hyco.exceptions import InvalidConnectionString, InvalidInput, InvalidToken
from hyco.protocol.connection_string import RelayConnectionString
from hyco.protocol.sas import create_token, parse_token
from hyco.protocol.uri import normalize_audience

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "SecurityToken",
    "TokenProvider",
    "TokenSource",
    "normalize_audience",
]

#: Lifetime of tokens the SDK signs itself: 60 minutes, as in the .NET, Java and Node SDKs (protocol.md 6).
DEFAULT_TOKEN_TTL = 3600.0
#: Renew at most this long before expiry (and at least 10 % of the lifetime before it).
MAX_RENEW_LEAD = 300.0

TokenSource = Callable[[str, float], "str | SecurityToken | Awaitable[str | SecurityToken]"]


@dataclass(frozen=True, slots=True)
class SecurityToken:
    """A token plus the times that matter for renewing it.

    Attributes:
        token: the full ``SharedAccessSignature sr=...`` text (never shown in ``repr``).
        audience: the audience it was obtained for.
        expires_at: expiry in seconds since the epoch (``se``).
        renew_at: when a holder should obtain a fresh one (before ``expires_at``).
    """

    token: str = field(repr=False)
    audience: str
    expires_at: float
    renew_at: float

    @classmethod
    def from_sas(cls, token: str, audience: str, now: float) -> SecurityToken:
        """Wrap a SAS string, reading its expiry from ``se``.

        Raises:
            InvalidToken: the text is not a SAS token.
        """
        expires_at = float(parse_token(token).expiry)
        return cls(token, audience, expires_at, renew_time(now, expires_at))


def renew_time(now: float, expires_at: float) -> float:
    """When to renew a token valid from ``now`` to ``expires_at``: 10 % of its life early, at most 5 min."""
    lifetime = max(0.0, expires_at - now)
    return expires_at - min(MAX_RENEW_LEAD, lifetime * 0.1)


class TokenProvider:
    """Supplies SAS tokens for the SDK; build one with a ``from_*`` class method.

    Example::

        tp = TokenProvider.from_shared_access_key("RootManageSharedAccessKey", key)
        token = await tp.token_for("sb://relay.example/echo")          # the SAS text
        security_token = await tp.get_token("http://relay.example/echo/")  # with its expiry times
    """

    def __init__(
        self,
        source: TokenSource,
        *,
        renewable: bool = True,
        inline: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._renewable = renewable
        self._inline = inline
        self._clock = clock
        self._cache: dict[tuple[str, float], SecurityToken] = {}
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} renewable={self._renewable}>"

    @classmethod
    def from_shared_access_key(
        cls,
        key_name: str,
        key: str,
        *,
        token_ttl: float = DEFAULT_TOKEN_TTL,
        clock: Callable[[], float] = time.time,
    ) -> TokenProvider:
        """Sign tokens locally with a shared access rule (what ``SharedAccessKeyName/Key`` give you).

        Args:
            key_name: the rule name, e.g. ``RootManageSharedAccessKey``.
            key: the rule's key, used as text (protocol.md 5.2).
            token_ttl: lifetime of each token in seconds (default 60 minutes).
            clock: returns seconds since the epoch (tests pass a fixed clock).

        Raises:
            InvalidToken: the key name or key is empty or longer than 256 characters.
        """
        if not key_name or len(key_name) > 256 or not key or len(key) > 256:
            raise InvalidToken("the key name and the key must each be 1 to 256 characters")
        if token_ttl <= 0:
            raise InvalidInput("token_ttl must be positive")

        def sign(audience: str, valid_for: float) -> SecurityToken:
            now = clock()
            # .NET rounds the expiry to whole seconds (``se`` is an integer).
            expiry = int(now + valid_for)
            token = create_token(audience, key_name, key, expiry)
            return SecurityToken(token, audience, float(expiry), renew_time(now, expiry))

        provider = cls(sign, inline=True, clock=clock)
        provider._default_ttl = token_ttl
        return provider

    @classmethod
    def from_sas(cls, token: str, *, clock: Callable[[], float] = time.time) -> TokenProvider:
        """Hand out one fixed SAS token (``SharedAccessSignature sr=...``). It is never renewed.

        Raises:
            InvalidToken: the text is not a SAS token.
        """
        parse_token(token)  # validate once, at the edge

        def fixed(audience: str, valid_for: float) -> SecurityToken:
            now = clock()
            sas = SecurityToken.from_sas(token, audience, now)
            return SecurityToken(sas.token, audience, sas.expires_at, sas.expires_at)

        return cls(fixed, renewable=False, inline=True, clock=clock)

    @classmethod
    def from_connection_string(
        cls, connection_string: str | RelayConnectionString, *, clock: Callable[[], float] = time.time
    ) -> TokenProvider | None:
        """The token provider a connection string's credentials give, or None when it carries none.

        A ``SharedAccessSignature`` wins over a key; a ``SharedAccessKey`` without a name uses
        ``RootManageSharedAccessKey``.

        Raises:
            InvalidConnectionString: the text is malformed, or it asks for ``Authentication=`` (Managed
                Identity / AAD), which hyco cannot obtain tokens for.
            InvalidToken: the key or SAS it carries is unusable.
        """
        cs = (
            connection_string
            if isinstance(connection_string, RelayConnectionString)
            else RelayConnectionString.parse(connection_string)
        )
        if cs.authentication:
            raise InvalidConnectionString(
                f"Authentication={cs.authentication} is not supported by hyco; use a SharedAccessKey"
            )
        if cs.shared_access_signature:
            return cls.from_sas(cs.shared_access_signature, clock=clock)
        if cs.shared_access_key:
            name = cs.shared_access_key_name or "RootManageSharedAccessKey"
            return cls.from_shared_access_key(name, cs.shared_access_key, clock=clock)
        return None

    @classmethod
    def from_callable(cls, source: TokenSource, *, clock: Callable[[], float] = time.time) -> TokenProvider:
        """Ask ``source(audience, valid_for)`` for each token; it may be sync or async.

        It returns a SAS string (its ``se`` gives the expiry) or a :class:`SecurityToken`. A blocking sync
        callable runs in a worker thread so that it cannot stall the event loop.
        """
        return cls(source, clock=clock)

    _default_ttl: float = DEFAULT_TOKEN_TTL

    @property
    def renewable(self) -> bool:
        """Whether asking again can yield a fresher token (false for a fixed SAS string)."""
        return self._renewable

    async def get_token(self, audience: str, valid_for: float | None = None) -> SecurityToken:
        """A token for ``audience``, from the cache while it is not due for renewal.

        Args:
            audience: the resource URI (use :func:`normalize_audience` or ``RelayAddress.audience``).
            valid_for: wanted lifetime in seconds (default: the provider's token TTL).

        Raises:
            InvalidToken: the source returned something that is not a SAS token.
            Exception: whatever the user's callable raises, unchanged.
        """
        ttl = self._default_ttl if valid_for is None else valid_for
        key = (audience, ttl)
        async with self._lock:
            cached = self._cache.get(key)
            if cached is not None and self._clock() < cached.renew_at:
                return cached
            token = await self._obtain(audience, ttl)
            self._cache[key] = token
            return token

    async def token_for(self, address: str, valid_for: float | None = None) -> str:
        """The SAS token text for a hybrid connection: the one call for a ``ServiceBusAuthorization`` header.

        Example::

            tokens = TokenProvider.from_shared_access_key("RootManageSharedAccessKey", key)
            header = await tokens.token_for("sb://ns.example/echo")   # "SharedAccessSignature sr=..."

        Args:
            address: the hybrid connection in any form the SDK takes (``sb://``, ``wss://``, ``https://``,
                ``ws://``, ``http://``; a ``/$hc/`` prefix, port and query are ignored). The audience is
                built from it as the .NET SDK builds it (:func:`normalize_audience`).
            valid_for: wanted lifetime in seconds (default: the provider's token TTL).

        Raises:
            InvalidInput: ``address`` has no host.
            InvalidToken: the source returned something that is not a SAS token.
        """
        return (await self.get_token(normalize_audience(address), valid_for)).token

    async def _obtain(self, audience: str, ttl: float) -> SecurityToken:
        source = self._source
        if inspect.iscoroutinefunction(source):
            result = await source(audience, ttl)
        elif self._inline:
            # Our own signers are pure and fast: call them inline.
            result = source(audience, ttl)
        else:
            result = await asyncio.to_thread(source, audience, ttl)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, SecurityToken):
            return result
        if not isinstance(result, str):
            raise InvalidToken("the token source must return a SAS string or a SecurityToken")
        return SecurityToken.from_sas(result, audience, self._clock())
