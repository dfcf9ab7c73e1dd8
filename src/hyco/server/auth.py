"""Token checks for the relay (protocol.md 5.3, 5.4): which rule signed it, for what, until when.

The relay asks one question: may this token do ``right`` on this hybrid connection? The answer is the parsed
token or an :class:`AuthorizationFailed` (401) / :class:`Forbidden` (403) whose description says what to fix.
Signatures are compared in constant time; tokens and keys never appear in an error or a log line.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from hyco.exceptions import AuthorizationFailed, Forbidden, InvalidToken
from hyco.protocol.sas import Right, SasToken, audience_covers, parse_token, verify_signature
from hyco.server.config import AuthorizationRule

__all__ = ["SignatureCache", "authorize"]


class SignatureCache:
    """Remembers tokens whose signature was already verified, so a sender that reuses its token (every
    HTTP client does) costs one dictionary lookup instead of a parse and an HMAC per request.

    Only the signature check is cached: expiry, audience and rights are checked on every use. Bounded: the
    table is cleared when it reaches ``max_entries``.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: dict[tuple[str, str], tuple[SasToken, AuthorizationRule]] = {}
        self._max = max_entries

    def get(self, token_text: str, entity_path: str) -> tuple[SasToken, AuthorizationRule] | None:
        """The parsed token and the rule that signed it, if verified before for this entity."""
        return self._entries.get((token_text, entity_path))

    def clear(self) -> None:
        """Forget every verified token (keys or rules changed)."""
        self._entries.clear()

    def put(self, token_text: str, entity_path: str, token: SasToken, rule: AuthorizationRule) -> None:
        """Remember a verified token."""
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[(token_text, entity_path)] = (token, rule)


def _is_within(path: str, entity_path: str) -> bool:
    inner, outer = path.strip("/").lower(), entity_path.strip("/").lower()
    return inner == outer or inner.startswith(outer + "/")


def _find_rule(rules: Iterable[AuthorizationRule], name: str) -> AuthorizationRule | None:
    lowered = name.lower()
    return next((rule for rule in rules if rule.name.lower() == lowered), None)


def authorize(
    token_text: str | None,
    *,
    right: Right,
    entity_path: str,
    entity_rules: Iterable[AuthorizationRule],
    namespace_rules: Iterable[AuthorizationRule],
    hosts: set[str],
    now: float,
    grace: float = 0.0,
    cache: SignatureCache | None = None,
    requested_path: str | None = None,
) -> SasToken:
    """Check that ``token_text`` grants ``right`` on ``requested_path`` of ``entity_path``.

    Entity rules are tried before namespace rules, by key name (case-insensitive); either key of the rule may
    have signed the token. The token's audience must cover the requested path (protocol.md 5.3): a token for
    a path below the one requested is refused.

    Args:
        token_text: the SAS token as received, or None when the request carried none.
        right: the right needed (Listen for listeners, Send for senders).
        entity_path: the hybrid connection's path.
        entity_rules: rules of that hybrid connection.
        namespace_rules: namespace-wide rules.
        hosts: host names under which this relay is reached (the audience's host must be one of them).
        now: current time, seconds since the epoch.
        grace: seconds a token stays acceptable past its expiry.
        cache: verified signatures to reuse (the cache must not outlive a change of keys).
        requested_path: the path the client asked for: ``entity_path`` (the default) for a listener,
            ``entity_path`` plus the sender's suffix for a connect or an HTTP request.

    Returns:
        The parsed token.

    Raises:
        AuthorizationFailed: missing, malformed, unknown key name, bad signature, expired, wrong audience.
        Forbidden: the rule lacks ``right``.
        ValueError: ``requested_path`` is not ``entity_path`` or below it (a bug in the caller).
    """
    requested = entity_path if requested_path is None else requested_path
    if not _is_within(requested, entity_path):
        raise ValueError(f"the requested path {requested!r} is not inside the entity {entity_path!r}")
    if not token_text:
        raise AuthorizationFailed(
            "RelaySecurityTokenRequired: no token was sent; put a SAS token in the ServiceBusAuthorization "
            "header or the sb-hc-token query parameter."
        )
    cached = cache.get(token_text, entity_path) if cache is not None else None
    if cached is not None:
        token, rule = cached
    else:
        token, rule = _verify(token_text, entity_path, entity_rules, namespace_rules)
        if cache is not None:
            cache.put(token_text, entity_path, token, rule)
    if token.expired(now, grace):
        expired_at = datetime.fromtimestamp(token.expiry, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise AuthorizationFailed(f"ExpiredToken: The token is expired. Expiration time: '{expired_at}'.")
    if not audience_covers(token, hosts, requested):
        raise AuthorizationFailed(
            "InvalidAudience: The authorization header contains a token with a wrong audience "
            f"(it must be for this relay's host and '{entity_path}' or the namespace)."
        )
    if not rule.grants(right):
        raise Forbidden(f"Authorization failed for specified action: {right.value}.")
    return token


def _verify(
    token_text: str,
    entity_path: str,
    entity_rules: Iterable[AuthorizationRule],
    namespace_rules: Iterable[AuthorizationRule],
) -> tuple[SasToken, AuthorizationRule]:
    try:
        token = parse_token(token_text)
    except InvalidToken as exc:
        raise AuthorizationFailed(f"MalformedToken: {exc}.") from None
    rule = _find_rule(entity_rules, token.key_name) or _find_rule(namespace_rules, token.key_name)
    if rule is None:
        raise AuthorizationFailed(
            f"UnknownKeyName: no authorization rule named {token.key_name[:64]!r} covers '{entity_path}'."
        )
    if not any(verify_signature(token, key) for key in rule.keys):
        raise AuthorizationFailed("InvalidSignature: The token has an invalid signature.")
    return token, rule
