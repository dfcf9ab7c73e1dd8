"""How a listener answers one relayed HTTP request (protocol.md 2.4, 2.5, 4.2, 4.3).

Theory of operation, following the .NET listener (``HybridHttpConnection``, protocol.md 4.2):

* **Inline request** (``request`` JSON + one binary message on the control channel): the listener already read
  the body; the handler runs in its own task.
* **Stub request** (only ``address``/``id``): dial the address; the relay sends the full ``request`` JSON and
  the body as one binary message of many frames, which the handler reads as it arrives.
* **Response**: on a rendezvous socket if the request came on one. Otherwise inline on the control channel
  when the whole body is at most 64 KiB *and* complete within 2 s (``WriteBufferFlushTimeout``); else the
  listener dials the request address itself and streams the body there (hyco-https does the same). A streamed
  body is one binary message: BINARY without FIN, continuations, an empty final frame with FIN.
* Control-channel writes of a JSON and its binary message go through one callback that holds the listener's
  write lock, so they never interleave with other writes (protocol.md 2.2).
* No handler: 501; a handler that raises: 500; both with .NET's descriptions.
* After a rendezvous response the listener closes the socket (as .NET), waiting for the relay's own Close so
  the last bytes are never lost to a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from hyco.client._rawws import RawWebSocket
from hyco.client.http import HttpBody, RelayedHttpRequest, RelayedHttpResponse, RequestHandler
from hyco.exceptions import HycoError, RemoteProtocolError
from hyco.protocol.messages import MAX_INLINE_BODY, MAX_INLINE_HEADERS, Request, Response, decode, encode

__all__ = ["HttpServing", "serve_request"]

logger = logging.getLogger("hyco.client.http")

# protocol.md 4.2, 6: a response stays on the control channel only when its body is at most MAX_INLINE_BODY,
# its JSON at most MAX_INLINE_HEADERS (the control channel's 64 KiB message buffer holds both, protocol.md
# 2.2), and the body is complete within INLINE_FLUSH_TIMEOUT.
#: Seconds a response body may take and still go inline (.NET ``WriteBufferFlushTimeout``).
INLINE_FLUSH_TIMEOUT = 2.0
#: How long to wait for the relay to close a rendezvous after the response (the relay's body deadline).
RENDEZVOUS_CLOSE_TIMEOUT = 60.0

NOT_CONFIGURED = "The listener RequestHandler has not been configured. TrackingId: {id}."
HANDLER_FAILED = (
    "The listener RequestHandler threw an exception. See listener logs for more details. TrackingId: {id}."
)


@dataclass(frozen=True, slots=True)
class HttpServing:
    """What :func:`serve_request` needs from its listener.

    Attributes:
        handler: the user's request handler, or None (answer 501).
        send_control: ``send_control(response, body)`` writes a response and (when ``body`` is not None)
            its binary message on the control channel, atomically with respect to other control writes.
        dial: ``dial(address)`` opens a request rendezvous.
        base_url: ``http(s)://host[:port]`` as senders see the relay.
        hybrid_connection_path: the listener's hybrid connection path.
    """

    handler: RequestHandler | None
    send_control: Callable[[Response, bytes | None], Awaitable[None]]
    dial: Callable[[str], Awaitable[RawWebSocket]]
    base_url: str
    hybrid_connection_path: str


def _has_no_body(method: str, status: int) -> bool:
    return method == "HEAD" or status < 200 or status in (204, 304)


async def serve_request(serving: HttpServing, command: Request, inline_body: bytes | None) -> None:
    """Answer one ``request`` command; logs and swallows every failure (the relay answers the sender).

    Args:
        serving: the listener's side of the exchange.
        command: the ``request`` from the control channel (full or stub).
        inline_body: the body that followed a full inline request, or None.
    """
    ws: RawWebSocket | None = None
    try:
        if command.is_stub:
            ws = await serving.dial(command.address)
            full = decode(await ws.receive_text())
            if not isinstance(full, Request) or full.is_stub:
                raise RemoteProtocolError("the request rendezvous did not start with a full request")
            command = dataclasses.replace(full, address=command.address)
            body = HttpBody(ws.receive_binary_stream() if full.body else None)
        else:
            body = HttpBody(inline_body if command.body else None)
        assert command.id is not None and command.method is not None
        request = RelayedHttpRequest(
            id=command.id,
            method=command.method,
            target=command.request_target or "/",
            headers=command.request_headers or {},
            remote_endpoint=command.remote_endpoint,
            body=body,
            has_body=bool(command.body),
            base_url=serving.base_url,
            hybrid_connection_path=serving.hybrid_connection_path,
        )
        response = await _run_handler(serving.handler, request)
        await _send_response(serving, command, request, response, ws)
    except asyncio.CancelledError:
        raise
    except (HycoError, OSError) as exc:
        logger.warning("! could not answer HTTP request %s: %s", command.id, exc)
    except Exception:
        logger.exception("! answering HTTP request %s failed", command.id)
    finally:
        if ws is not None:
            ws.abort()


async def _run_handler(handler: RequestHandler | None, request: RelayedHttpRequest) -> RelayedHttpResponse:
    if handler is None:
        return RelayedHttpResponse(501, reason=NOT_CONFIGURED.format(id=request.id))
    try:
        response = await handler(request)
        if not isinstance(response, RelayedHttpResponse):
            raise TypeError(
                f"the request handler returned {type(response).__name__}, not RelayedHttpResponse"
            )
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("! the request handler raised for %s %s", request.method, request.target)
        return RelayedHttpResponse(500, reason=HANDLER_FAILED.format(id=request.id))


def _command(request_id: str, response: RelayedHttpResponse, body: bool) -> Response:
    return Response(
        request_id=request_id,
        status_code=response.status,
        status_description=response.reason,
        response_headers=response.headers or None,
        body=body,
    )


async def _send_response(
    serving: HttpServing,
    command: Request,
    request: RelayedHttpRequest,
    response: RelayedHttpResponse,
    ws: RawWebSocket | None,
) -> None:
    assert command.id is not None
    no_body = _has_no_body(request.method, response.status)
    source = None if no_body else response.body
    if no_body and response.body is not None and not isinstance(response.body, bytes):
        await _close_iterable(response.body)
    if ws is not None:
        # The request came over a rendezvous: answer there, whatever the size (protocol.md 4.3).
        await _respond_on_rendezvous(ws, command.id, response, source, request.body, b"")
        return
    # Inline request: stay on the control channel if the body is small and ready quickly (4.2).
    head = b""
    rest: _Rest | None = None
    if isinstance(source, bytes):
        head = source
    elif source is not None:
        try:
            head, rest = await _buffer_head(source)
        except Exception:
            # Nothing was sent yet: the sender gets a clean 500 instead of a broken body.
            logger.exception("! the response body of %s %s raised", request.method, request.target)
            response = RelayedHttpResponse(500, reason=HANDLER_FAILED.format(id=command.id))
            source, head, rest = None, b"", None
    answer = _command(command.id, response, source is not None)
    if rest is None and len(head) <= MAX_INLINE_BODY and len(encode(answer)) <= MAX_INLINE_HEADERS:
        await serving.send_control(answer, head if source is not None else None)
        return
    try:
        rendezvous = await serving.dial(command.address)
    except BaseException:
        if rest is not None:
            await rest.aclose()  # the step in flight and the handler's body must not be left running
        raise
    try:
        await _respond_on_rendezvous(rendezvous, command.id, response, rest, request.body, head)
    finally:
        rendezvous.abort()


async def _buffer_head(source: AsyncIterable[bytes]) -> tuple[bytes, _Rest | None]:
    """Read ``source`` until it ends (-> ``(body, None)``) or passes 64 KiB or 2 s (-> ``(head, rest)``)."""
    iterator = aiter(source)
    parts: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + INLINE_FLUSH_TIMEOUT
    while True:
        # Never cancel the iterator's own step (an async generator would be closed): wait on a task.
        step = asyncio.ensure_future(anext(iterator))
        done, _ = await asyncio.wait({step}, timeout=max(0.0, deadline - loop.time()))
        if not done:
            return b"".join(parts), _Rest(step, iterator)
        try:
            chunk = step.result()
        except StopAsyncIteration:
            return b"".join(parts), None
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_INLINE_BODY:
            return b"".join(parts), _Rest(None, iterator)


class _Rest:
    """The rest of a response body after its inline head: the read already in flight, then the iterator."""

    def __init__(self, step: asyncio.Future[bytes] | None, iterator: AsyncIterator[bytes]) -> None:
        self._step = step
        self._iterator = iterator

    async def __aiter__(self) -> AsyncIterator[bytes]:
        step, self._step = self._step, None
        if step is not None:
            try:
                yield await step
            except StopAsyncIteration:
                return
        async for chunk in self._iterator:
            yield chunk

    async def aclose(self) -> None:
        """Abandon the body: cancel the read in flight and close the handler's iterator."""
        step, self._step = self._step, None
        if step is not None:
            step.cancel()
        await _close_iterable(self._iterator)


async def _close_iterable(body: AsyncIterable[bytes]) -> None:
    close = getattr(body, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


async def _respond_on_rendezvous(
    ws: RawWebSocket,
    request_id: str,
    response: RelayedHttpResponse,
    source: bytes | AsyncIterable[bytes] | None,
    request_body: HttpBody,
    head: bytes,
) -> None:
    await ws.send_text(encode(_command(request_id, response, source is not None or bool(head))))
    drain: asyncio.Task[None] | None = None
    if not request_body.at_eof and (source is None or isinstance(source, bytes)):
        # The relay sends the whole request body before it reads the response (protocol.md 4.3): read what
        # the handler left, or both sides would wait on each other. A streamed response body might still read
        # the request body (an echo), so that case drains only after it ends.
        drain = asyncio.ensure_future(request_body.discard())
    try:
        if source is not None or head:
            await ws.send_binary_stream(_prepend(head, source))
        if drain is None and not request_body.at_eof:
            await request_body.discard()
    finally:
        if drain is not None:
            await drain
    # .NET closes the rendezvous after each response; the relay closes its side once the sender has it all.
    await ws.close(1000, "Normal Closure", timeout=RENDEZVOUS_CLOSE_TIMEOUT)


async def _prepend(head: bytes, rest: bytes | AsyncIterable[bytes] | None) -> AsyncIterator[bytes]:
    if head:
        yield head
    if isinstance(rest, bytes):
        if rest:
            yield rest
    elif rest is not None:
        async for chunk in rest:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError(f"a response body iterator yielded {type(chunk).__name__}, not bytes")
            if chunk:
                yield bytes(chunk)
