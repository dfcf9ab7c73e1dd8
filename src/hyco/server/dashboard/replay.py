"""Replaying a recorded request: sent again through this relay, exactly as captured but for its credentials,
which are replaced by a fresh token the relay signs itself with a rule that may Send."""

from __future__ import annotations

import time

import aiohttp

from hyco.protocol.sas import Right, create_token
from hyco.server.config import AuthorizationRule
from hyco.server.dashboard.inspector import REDACTED, Capture

__all__ = ["replay"]

#: Hop-by-hop headers aiohttp sets itself for the new request.
_SKIP = {"host", "content-length", "transfer-encoding", "connection", "via"}


async def replay(
    capture: Capture, base_url: str, host: str, rules: tuple[AuthorizationRule, ...], timeout: float
) -> int:
    """Send ``capture``'s request again to ``base_url`` (this relay); returns the status it got.

    Args:
        capture: a finished capture whose request body was kept whole.
        base_url: the relay's own HTTP base URL.
        host: the host name the token's audience names.
        rules: rules that may sign the token (the first that grants Send is used).
        timeout: seconds for the whole exchange.
    """
    headers = [(k, v) for k, v in capture.request_headers if k.lower() not in _SKIP and v != REDACTED]
    signer = next((r for r in rules if r.grants(Right.SEND)), None)
    if signer is not None:
        audience = f"http://{host}/{capture.entity}/"
        token = create_token(audience, signer.name, signer.keys[0], int(time.time()) + 300)
        headers.append(("ServiceBusAuthorization", token))
    uri = capture.uri.replace("sb-hc-token=%5Bredacted%5D", "").replace("sb-hc-token=[redacted]", "")
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.request(
            capture.method,
            base_url + uri.rstrip("?&"),
            headers=headers,
            data=bytes(capture.request_body.head) or None,
            allow_redirects=False,
        ) as response,
    ):
        await response.read()
        return response.status
