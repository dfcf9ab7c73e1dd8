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

__all__ = ["authorize"]


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
) -> SasToken:
    """Check that ``token_text`` grants ``right`` on ``entity_path``.

    Entity rules are tried before namespace rules, by key name (case-insensitive); either key of the rule may
    have signed the token.

    Args:
        token_text: the SAS token as received, or None when the request carried none.
        right: the right needed (Listen for listeners, Send for senders).
        entity_path: the hybrid connection's path.
        entity_rules: rules of that hybrid connection.
        namespace_rules: namespace-wide rules.
        hosts: host names under which this relay is reached (the audience's host must be one of them).
        now: current time, seconds since the epoch.
        grace: seconds a token stays acceptable past its expiry.

    Returns:
        The parsed token.

    Raises:
        AuthorizationFailed: missing, malformed, unknown key name, bad signature, expired, wrong audience.
        Forbidden: the rule lacks ``right``.
    """
    if not token_text:
        raise AuthorizationFailed(
            "RelaySecurityTokenRequired: no token was sent; put a SAS token in the ServiceBusAuthorization "
            "header or the sb-hc-token query parameter."
        )
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
    if token.expired(now, grace):
        expired_at = datetime.fromtimestamp(token.expiry, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise AuthorizationFailed(f"ExpiredToken: The token is expired. Expiration time: '{expired_at}'.")
    if not audience_covers(token, hosts, entity_path):
        raise AuthorizationFailed(
            "InvalidAudience: The authorization header contains a token with a wrong audience "
            f"(it must be for this relay's host and '{entity_path}' or the namespace)."
        )
    if not rule.grants(right):
        raise Forbidden(f"Authorization failed for specified action: {right.value}.")
    return token
