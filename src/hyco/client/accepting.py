"""Answering one sender's ``accept`` (protocol.md 3.2, 3.3): what the accept handler sees
(:class:`AcceptContext`), and the listener's dial of the rendezvous address to accept or to reject."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote_plus, urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from hyco.client._net import NetOptions, open_websocket
from hyco.client.stream import LISTENER_CLEAN_CLOSE_CODES, HybridConnectionStream
from hyco.exceptions import ConnectionRejected, InvalidInput
from hyco.protocol.messages import Accept, RemoteEndpoint, has_control_characters
from hyco.protocol.uri import strip_sb_hc_params

__all__ = ["AcceptContext", "AcceptHandler", "dial_rejection", "dial_rendezvous"]


class AcceptContext:
    """What an accept handler learns about a waiting sender, and how it answers.

    Attributes:
        id: the connection's tracking id.
        url: the address the sender dialed, as the listener sees it (suffix and query kept, ``sb-hc-*`` gone).
        path: the hybrid connection path plus the sender's suffix.
        query: the sender's application query, raw, without ``?``.
        headers: the sender's upgrade headers (case-insensitive; ``ServiceBusAuthorization`` removed).
        remote_endpoint: the sender's IP and port, when the relay says.
        subprotocol: the sub-protocol to answer with; defaults to the sender's first offer (as .NET does).
        status_code, status_description: the rejection to send (set by :meth:`reject`).
    """

    def __init__(self, accept: Accept, base_url: str) -> None:
        parts = urlsplit(accept.address)
        path = parts.path
        if path.startswith("/$hc/"):
            path = path[len("/$hc/") :]
        self.id = accept.id
        self.path = path.strip("/")
        self.query = strip_sb_hc_params(parts.query)
        self.url = f"{base_url}/{self.path}" + (f"?{self.query}" if self.query else "")
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(accept.connect_headers))
        self.remote_endpoint: RemoteEndpoint | None = accept.remote_endpoint
        offered = self.offered_subprotocols
        self.subprotocol: str | None = offered[0] if offered else None
        self.status_code = 400
        self.status_description = "Rejected by user code"
        self.rejected = False
        self.address = accept.address

    @property
    def offered_subprotocols(self) -> list[str]:
        """The sender's ``Sec-WebSocket-Protocol`` offers, in order."""
        raw = self.headers.get("Sec-WebSocket-Protocol", "")
        return [p.strip() for p in raw.split(",") if p.strip()]

    def reject(self, status_code: int = 400, description: str = "Rejected by user code") -> None:
        """Refuse the sender, who gets ``status_code`` and ``description`` (protocol.md 3.3).

        Raises:
            InvalidInput: the status is not 100-999 or the description has control characters.
        """
        if not 100 <= status_code <= 999:
            raise InvalidInput("a reject status code must be from 100 to 999")
        if has_control_characters(description):
            raise InvalidInput("a reject description must not contain control characters")
        self.status_code = status_code
        self.status_description = description
        self.rejected = True

    def __repr__(self) -> str:
        return f"<AcceptContext {self.id} {self.url}>"


#: ``handler(context) -> bool | None`` (or awaitable). False or ``context.reject()`` refuses the sender.
AcceptHandler = Callable[[AcceptContext], "bool | Awaitable[bool | None] | None"]


async def dial_rendezvous(
    accept: Accept, context: AcceptContext, net: NetOptions, timeout: float, stream_options: dict[str, Any]
) -> HybridConnectionStream:
    """Accept: dial the rendezvous address and return the relayed stream (3.2).

    Raises:
        HycoError: the dial failed (the sender gave up, the relay refused, the network broke).
    """
    ws, session = await open_websocket(
        accept.address,
        what=f"accepting connection {accept.id}",
        options=net,
        protocols=(context.subprotocol,) if context.subprotocol else (),
        handshake_timeout=timeout,
        take_over=True,
    )
    return HybridConnectionStream._from_websocket(
        ws,
        session,
        tracking_id=accept.id,
        headers=dict(context.headers),
        remote_endpoint=accept.remote_endpoint,
        clean_close_codes=LISTENER_CLEAN_CLOSE_CODES,
        **stream_options,
    )


async def dial_rejection(accept: Accept, context: AcceptContext, net: NetOptions, timeout: float) -> None:
    """Reject: dial the address with the status appended; the relay's 410 Gone means delivered (3.3).

    Raises:
        HycoError: the dial failed with anything but 410.
    """
    url = (
        f"{accept.address}&sb-hc-statusCode={context.status_code}"
        f"&sb-hc-statusDescription={quote_plus(context.status_description)}"
    )
    try:
        ws, session = await open_websocket(
            url, what=f"rejecting connection {accept.id}", options=net, handshake_timeout=timeout
        )
    except ConnectionRejected as exc:
        if exc.http_status != 410:
            raise
        return
    await ws.close()
    await session.close()
