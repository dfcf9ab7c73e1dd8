"""Runtime information about a hybrid connection, as the .NET SDK's ``GetRuntimeInformationAsync`` asks for it
(protocol.md "Management runtime information GET"): ``GET https://host/{path}?api-version=2016-07`` with
``X-PROCESS-AT: ServiceBus`` and a token in ``Authorization``; the answer is an Atom entry holding a
``HybridConnectionDescription``. Works against Azure Relay and a hyco relay (which needs a Manage token).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime

import aiohttp

from hyco.client._net import NetOptions
from hyco.client.credentials import TokenProvider
from hyco.exceptions import (
    AuthorizationFailed,
    EndpointNotFound,
    QuotaExceeded,
    RelayError,
    RemoteProtocolError,
    ServerBusy,
)
from hyco.protocol.uri import RelayAddress

__all__ = ["API_VERSION", "HybridConnectionRuntimeInformation", "get_runtime_information"]

#: The management API version the .NET SDK sends.
API_VERSION = "2016-07"
#: The lifetime of the token the .NET SDK signs for this call.
TOKEN_LIFETIME = 600.0
_CONNECT_NS = "{http://schemas.microsoft.com/netservices/2010/10/servicebus/connect}"
_ATOM_NS = "{http://www.w3.org/2005/Atom}"


@dataclass(frozen=True, slots=True)
class HybridConnectionRuntimeInformation:
    """What the relay says about a hybrid connection right now.

    Attributes:
        listener_count: listeners connected (across the relay's nodes).
        requires_client_authorization: senders need a Send token.
        user_metadata: the text kept with the hybrid connection, or None.
        created_at, updated_at: when it was created and last changed, or None when not reported.
    """

    listener_count: int = 0
    requires_client_authorization: bool = True
    user_metadata: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


def _error(status: int, detail: str) -> RelayError:
    # The .NET SDK's mapping (ManagementOperations.CreateExceptionForFailedResponseAsync).
    text = f"runtime information: {status} {detail}"
    if status == 401:
        return AuthorizationFailed(f"{text} (a hyco relay needs a token with Manage rights)")
    if status == 403:
        return QuotaExceeded(text)
    if status in (404, 204):
        return EndpointNotFound(text)
    if status == 503:
        return ServerBusy(text)
    return RelayError(text, http_status=status)


def _detail(body: str, reason: str) -> str:
    try:
        found = ET.fromstring(body).find(".//Detail")  # noqa: S314 - the relay's own small error body
    except ET.ParseError:
        return reason
    return found.text or reason if found is not None else reason


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    # .NET writes 7 fractional digits; Python reads at most 6.
    head, _, rest = text.rstrip("Z").partition(".")
    fraction = rest[:6]
    return datetime.fromisoformat(f"{head}.{fraction}+00:00" if fraction else f"{head}+00:00")


def parse_runtime_information(body: str) -> HybridConnectionRuntimeInformation:
    """Read the Atom entry of a runtime-information answer.

    Raises:
        RemoteProtocolError: the body is not such an entry.
    """
    try:
        root = ET.fromstring(body)  # noqa: S314 - a relay's answer to our own request
    except ET.ParseError as exc:
        raise RemoteProtocolError(f"the runtime information is not XML: {exc}") from None
    description = root.find(f"{_ATOM_NS}content/{_CONNECT_NS}HybridConnectionDescription")
    if description is None:
        raise RemoteProtocolError("the runtime information has no HybridConnectionDescription")

    def text(name: str) -> str | None:
        element = description.find(f"{_CONNECT_NS}{name}")
        return element.text if element is not None else None

    try:
        return HybridConnectionRuntimeInformation(
            listener_count=int(text("ListenerCount") or 0),
            requires_client_authorization=(text("RequiresClientAuthorization") or "true").lower() == "true",
            user_metadata=text("UserMetadata"),
            created_at=_parse_time(text("CreatedAt")),
            updated_at=_parse_time(text("UpdatedAt")),
        )
    except ValueError as exc:
        raise RemoteProtocolError(f"the runtime information has a malformed value: {exc}") from None


async def get_runtime_information(
    address: RelayAddress, token_provider: TokenProvider | None, net: NetOptions, timeout: float
) -> HybridConnectionRuntimeInformation:
    """Ask the relay about ``address``'s hybrid connection.

    Args:
        address: the hybrid connection.
        token_provider: signs the call (Azure and hyco need one with Manage rights).
        net: TLS and proxy settings.
        timeout: seconds for the whole call.

    Raises:
        AuthorizationFailed, QuotaExceeded, EndpointNotFound (unknown path), ServerBusy, RelayError: the
            relay's answer, mapped as the .NET SDK maps it.
        RelayTimeout, ConnectionLost: the relay did not answer.
        RemoteProtocolError: the answer is not runtime information.
    """
    # Imported here: httpsend imports the sender, which imports this module.
    from hyco.client.httpsend import _translate_errors

    headers = {"X-PROCESS-AT": "ServiceBus"}
    if token_provider is not None:
        headers["Authorization"] = (await token_provider.get_token(address.audience, TOKEN_LIFETIME)).token
    url = address.http_url()
    url += f"{'&' if '?' in url else '?'}api-version={API_VERSION}"
    what = f"runtime information for {address}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        with _translate_errors(what, timeout):
            async with session.get(url, headers=headers, ssl=net.ssl, proxy=net.proxy) as response:
                body = await response.text()
                content_type = response.headers.get("Content-Type", "").replace(" ", "").lower()
                if not 200 <= response.status < 300 or response.status == 204:
                    raise _error(response.status, _detail(body, response.reason or ""))
    if content_type.startswith("application/atom+xml") and "type=feed" in content_type:
        # Unknown paths get an Atom feed (the .NET SDK's IsFeedContentType).
        raise EndpointNotFound(f"{what}: the hybrid connection '{address.path}' does not exist")
    return parse_runtime_information(body)
