"""The management REST API under ``/$management/``, in Azure Relay's resource model (docs/operations.md).

Resources and their JSON bodies follow ARM's ``Microsoft.Relay`` shapes: hybrid connections
(``/$management/hybridConnections[/{hc}]``), authorization rules at entity scope
(``.../hybridConnections/{hc}/authorizationRules[/{rule}]``) and namespace scope
(``/$management/authorizationRules[/{rule}]``), with ``POST .../listKeys`` and ``.../regenerateKeys``.
Every call needs a SAS token with **Manage** rights in ``Authorization`` or ``ServiceBusAuthorization``; its
audience is the namespace, or the hybrid connection itself for that entity's own objects. ``api-version`` is
accepted and ignored. One property is hyco's own, as Azure has no inspector: ``inspect`` on a hybrid
connection (the HTTP inspector records its relayed requests). Errors use ARM's shape,
``{"error": {"code": ..., "message": ...}}``, and change nothing.

Writes go to the :class:`~hyco.server.store.base.Store`; the relay's view follows from the store's change
notification, so a rotated key is refused from the moment ``regenerateKeys`` returns. Entities and rules
defined in the configuration file are read-only here (409: edit the file, then reload).

The runtime-information GET of the official .NET SDK (protocol.md "Management runtime information GET") is
answered by :meth:`ManagementApi.runtime_information` in its Atom/XML shape.

Why this module is longer than ~600 lines: it is the whole REST surface of one resource model (hybrid
connections, rules at two scopes, keys, runtime information), whose handlers share one error mapping.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web

from hyco.exceptions import InvalidConfig, RelayError
from hyco.protocol.connection_string import RelayConnectionString
from hyco.protocol.sas import MAX_KEY_NAME_LENGTH, Right
from hyco.server.config import AuthorizationRule, EntityStatus, Secret, generate_key, validate_entity_path
from hyco.server.dashboard.inspector import Inspector
from hyco.server.dashboard.replay import replay
from hyco.server.metrics import CONTENT_TYPE, FamilyData, RelayMetrics, merged_text
from hyco.server.registry import HybridConnection, Registry
from hyco.server.store import EntityRecord, Namespace, RuleRecord, RuleView

__all__ = [
    "MANAGEMENT_PREFIX",
    "SESSION_COOKIE",
    "ManagementApi",
    "ManagementError",
    "is_runtime_information_request",
]

MANAGEMENT_PREFIX = "/$management"
#: The dashboard's session cookie: a Manage token the dashboard's login made (see dashboard/handler.py).
SESSION_COOKIE = "hyco_session"
HC_TYPE = "Microsoft.Relay/Namespaces/HybridConnections"
RULE_TYPE = {
    True: "Microsoft.Relay/Namespaces/HybridConnections/AuthorizationRules",
    False: "Microsoft.Relay/Namespaces/AuthorizationRules",
}
RULES_SEGMENT = "authorizationrules"
_MAX_BODY = 64 * 1024
_MAX_METADATA = 1024
_KEY_BYTES = 32
_READ_ONLY = {"createdAt", "updatedAt", "listenerCount"}
_ENVELOPE = {"properties", "id", "name", "type", "location"}
_RULE_NAME = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_KEY_NAME_LENGTH}}}")
_CONNECT_NS = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"

#: Checks a token text for Manage rights on an entity path ("" for the namespace); raises RelayError.
AuthorizeManage = Callable[[web.Request, str | None, str], object]


class ManagementError(RelayError):
    """A management call that cannot be done; answered as ``{"error": {"code", "message"}}``."""

    def __init__(self, http_status: int, code: str, message: str) -> None:
        super().__init__(message, http_status=http_status)
        self.code = code


def _not_found(what: str) -> ManagementError:
    return ManagementError(404, "NotFound", f"{what} does not exist.")


def _read_only(what: str) -> ManagementError:
    return ManagementError(
        409,
        "Conflict",
        f"{what} is defined in the relay's configuration file and is read-only here; edit the file and "
        "reload the relay (SIGHUP or `hyco relay --reload`).",
    )


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class _Target:
    """What a management path names."""

    entity: str | None  # hybrid connection path; None for the collection or for namespace rules
    rules: bool  # the path is under authorizationRules
    rule: str | None
    action: str | None  # listKeys / regenerateKeys


def _parse_target(tail: str) -> _Target:
    """Split the path after ``/$management`` into what it names."""
    segments = [s for s in tail.split("/") if s]
    if not segments:
        raise _not_found("This management path")
    head, rest = segments[0].lower(), segments[1:]
    entity: str | None = None
    if head == "hybridconnections":
        # Entity paths may contain '/', so the rules part is found from the end (at most 3 segments).
        cut = next(
            (
                i
                for i in range(max(0, len(rest) - 3), len(rest))
                if rest[i].lower() == RULES_SEGMENT and i > 0
            ),
            len(rest),
        )
        entity = "/".join(rest[:cut]) or None
        rest = rest[cut:]
        if not rest:
            return _Target(entity, False, None, None)
        rest = rest[1:]
    elif head != RULES_SEGMENT:
        raise _not_found(f"The management path '/{segments[0][:64]}'")
    if len(rest) > 2 or (len(rest) == 2 and rest[1] not in ("listKeys", "regenerateKeys")):
        raise _not_found("This management path")
    return _Target(entity, True, rest[0] if rest else None, rest[1] if len(rest) == 2 else None)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        raise ManagementError(400, "BadRequest", f"The body is larger than {_MAX_BODY} bytes.")
    raw = await request.content.read(_MAX_BODY + 1)
    if len(raw) > _MAX_BODY:
        raise ManagementError(400, "BadRequest", f"The body is larger than {_MAX_BODY} bytes.")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManagementError(400, "BadRequest", f"The body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise ManagementError(400, "BadRequest", "The body must be a JSON object.")
    return body


def _properties(body: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    unknown = sorted(set(body) - _ENVELOPE)
    if unknown:
        raise ManagementError(
            400, "BadRequest", f'Unknown member(s) {", ".join(unknown)}; send {{"properties": {{...}}}}.'
        )
    props = body.get("properties", {})
    if not isinstance(props, dict):
        raise ManagementError(400, "BadRequest", "'properties' must be a JSON object.")
    unknown = sorted(set(props) - allowed - _READ_ONLY)
    if unknown:
        raise ManagementError(
            400,
            "BadRequest",
            f"Unknown properties {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}.",
        )
    return {k: v for k, v in props.items() if k in allowed}


def _flag(props: dict[str, Any], name: str) -> bool:
    value = props[name]
    if not isinstance(value, bool):
        raise ManagementError(400, "BadRequest", f"'{name}' must be true or false.")
    return value


def _rights(value: Any) -> frozenset[Right]:
    names = {r.value for r in Right}
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v in names for v in value):
        raise ManagementError(
            400, "BadRequest", "'rights' must be a non-empty list of 'Listen', 'Send' and 'Manage'."
        )
    return frozenset(Right(v) for v in value)


def _check_key(value: Any) -> str:
    try:
        if isinstance(value, str) and len(base64.b64decode(value, validate=True)) == _KEY_BYTES:
            return value
    except (binascii.Error, ValueError):
        pass
    raise ManagementError(400, "BadRequest", "'key' must be 32 bytes in base64 (44 characters).")


class ManagementApi:
    """Serves ``/$management/...`` and the runtime-information GET.

    Args:
        namespace: the relay's view of entities and rules (reads) and its store (writes).
        registry: live listener counts.
        authorize_manage: the Manage-token check (see :data:`AuthorizeManage`).
        public_url: the relay's public URL, or None (connection strings then use the request's host).
        clock: seconds since the epoch, for createdAt/updatedAt.
        metrics: the relay's metrics (``/$metrics``, ``/$management/status``).
        health: the ``/$health`` counts (totals of ``/$management/status``).
        metrics_public: serve ``/$metrics`` without a token.
        inspector: recorded HTTP requests (``/$management/requests/http``, ngrok's inspection API).
        own_url: the relay's own HTTP base URL (replays are sent there).
        listener_count: a hybrid connection's listeners on every worker or node.
        other_metrics: the other workers' metrics, merged into this worker's ``/$metrics`` answer.
    """

    def __init__(
        self,
        namespace: Namespace,
        registry: Registry,
        authorize_manage: AuthorizeManage,
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
        *,
        metrics: RelayMetrics,
        health: Callable[[], dict[str, Any]],
        metrics_public: bool = False,
        inspector: Inspector | None = None,
        own_url: Callable[[], str] = lambda: "",
        listener_count: Callable[[HybridConnection], int] = lambda hc: len(hc.listeners),
        other_metrics: Callable[[], Awaitable[list[list[FamilyData]]]] | None = None,
    ) -> None:
        self.inspector = inspector or Inspector()
        self._listener_count = listener_count
        self._own_url = own_url
        self._metrics = metrics
        self._other_metrics = other_metrics
        self._health = health
        self._metrics_public = metrics_public
        self._namespace = namespace
        self._registry = registry
        self._authorize = authorize_manage
        self._public_url = public_url
        self._clock = clock
        #: createdAt of the entities the configuration file defines: when this relay started.
        self._started = clock()

    async def handle(self, request: web.Request) -> web.Response:
        """Serve one request whose path starts with ``/$management``."""
        try:
            tail = request.rel_url.path[len(MANAGEMENT_PREFIX) :]
            if tail.strip("/").lower().startswith("requests/http"):
                self._authorize(request, self._token(request), "")
                return await self._requests(request, tail.strip("/")[len("requests/http") :].strip("/"))
            if tail.strip("/").lower() == "status":
                self._authorize(request, self._token(request), "")
                if request.method != "GET":
                    raise ManagementError(405, "MethodNotAllowed", f"{request.method} is not supported here.")
                return _json(self.status())
            target = _parse_target(tail)
            scope = self._scope(target)
            self._authorize(request, self._token(request), scope)
            return await self._dispatch(request, target, scope)
        except ManagementError as exc:
            return _error(exc.http_status, exc.code, exc.description)
        except RelayError as exc:
            code = {401: "Unauthorized", 403: "Forbidden"}.get(exc.http_status, "Error")
            return _error(exc.http_status, code, exc.description)

    async def metrics(self, request: web.Request) -> web.Response:
        """``GET /$metrics``: Prometheus text; needs a Manage token unless ``metrics_public``."""
        if not self._metrics_public:
            try:
                self._authorize(request, self._token(request), "")
            except RelayError as exc:
                return web.Response(status=exc.http_status, text=exc.description + "\n")
        if self._other_metrics is None:
            body = self._metrics.text()
        else:  # the workers of one relay answer as one relay
            others = await self._other_metrics()
            # Merging costs about twice a single worker's text (0.8 s for 4 workers of 2,000 busy hybrid
            # connections): off the event loop, which keeps relaying meanwhile.
            body = await asyncio.to_thread(lambda: merged_text([self._metrics.families(), *others]))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    def check_manage(self, request: web.Request, token: str | None) -> None:
        """Raise RelayError (401/403) unless ``token`` has Manage rights on the namespace."""
        self._authorize(request, token, "")

    def status(self) -> dict[str, Any]:
        """The ``hyco status`` body: live totals; per hybrid connection its listeners and traffic (bytes
        include the running connections'); and each relayed WebSocket connection now spliced."""
        rows = []
        for hc in sorted(self._registry.all(), key=lambda h: h.path.lower()):
            totals = self._metrics.totals.get(hc.path)
            bytes_in, bytes_out = self._metrics.bytes_moved(hc.path)
            rows.append(
                {
                    "name": hc.path,
                    "status": hc.config.status.value,
                    "listeners": self._listener_count(hc),
                    "activeConnections": totals.active_connections if totals else 0,
                    "bytesIn": bytes_in,
                    "bytesOut": bytes_out,
                    "httpRequests": totals.http_requests if totals else 0,
                }
            )
        connections = [c.json() for c in self._metrics.live]
        return {"totals": self._health(), "hybridConnections": rows, "connections": connections}

    @staticmethod
    def _token(request: web.Request) -> str | None:
        return (
            request.headers.get("Authorization")
            or request.headers.get("ServiceBusAuthorization")
            or request.cookies.get(SESSION_COOKIE)
        )

    # --- the inspector (ngrok's /api/requests/http shapes) ---

    async def _requests(self, request: web.Request, capture_id: str) -> web.Response:
        method = request.method
        if not capture_id:
            if method == "GET":
                limit = request.query.get("limit", "")
                recent = self.inspector.recent(int(limit) if limit.isdigit() else None)
                return _json(
                    {"uri": f"{MANAGEMENT_PREFIX}/requests/http", "requests": [c.summary() for c in recent]}
                )
            if method == "DELETE":
                self.inspector.clear()
                return web.Response(status=204)
            if method == "POST":
                body = await _json_body(request)
                return await self._replay(str(body.get("id", "")))
        elif method == "GET":
            capture = self.inspector.get(capture_id)
            if capture is None:
                raise _not_found(f"The recorded request '{capture_id[:64]}'")
            return _json(capture.summary())
        raise ManagementError(405, "MethodNotAllowed", f"{method} is not supported on this resource.")

    async def _replay(self, capture_id: str) -> web.Response:
        capture = self.inspector.get(capture_id)
        if capture is None:
            raise _not_found(f"The recorded request '{capture_id[:64]}'")
        if not capture.replayable:
            raise ManagementError(
                409,
                "Conflict",
                "The request cannot be replayed: it is still running or its body was larger "
                "than the inspector keeps.",
            )
        hc = self._registry.get(capture.entity)
        if hc is None or not hc.listeners:
            raise ManagementError(
                409, "NoListener", f"No listener is connected to '{capture.entity}' to replay the request to."
            )
        own = self._own_url()
        host = own.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
        rules = hc.config.authorization_rules + self._namespace.namespace_rules
        try:
            status = await replay(capture, own, host, rules, hc.config.request_timeout + 5)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ManagementError(502, "ReplayFailed", f"The replay did not complete: {exc}.") from None
        return _json({"id": capture.id, "replayStatus": status})

    def _scope(self, target: _Target) -> str:
        """The entity path the call is about ("" for the namespace), checked to be a valid name."""
        if target.entity is None:
            return ""
        try:
            return validate_entity_path(target.entity, "hybrid connection")
        except InvalidConfig as exc:
            raise ManagementError(400, "BadRequest", str(exc)) from None

    async def _dispatch(self, request: web.Request, target: _Target, scope: str) -> web.Response:
        method = request.method
        if not target.rules:
            if target.entity is None:
                if method == "GET":
                    return _json({"value": [self._hc_json(hc.path) for hc in self._registry.all()]})
            elif method == "GET":
                return _json(self._hc_json(self._existing_entity(scope)))
            elif method == "PUT":
                return _json(await self._put_entity(scope, await _json_body(request)))
            elif method == "DELETE":
                return await self._delete_entity(scope)
        elif target.rule is None:
            if method == "GET":
                self._scope_exists(scope)
                return _json({"value": [self._rule_json(v) for v in self._namespace.rules(scope)]})
        elif target.action is None:
            if method == "GET":
                return _json(self._rule_json(self._existing_rule(scope, target.rule)))
            if method == "PUT":
                return _json(await self._put_rule(scope, target.rule, await _json_body(request)))
            if method == "DELETE":
                return await self._delete_rule(scope, target.rule)
        elif method == "POST":
            view = self._existing_rule(scope, target.rule)
            if target.action == "regenerateKeys":
                view = await self._regenerate(view, await _json_body(request))
            return _json(self._keys_json(request, view))
        raise ManagementError(405, "MethodNotAllowed", f"{method} is not supported on this resource.")

    # --- hybrid connections ---

    def _existing_entity(self, path: str) -> str:
        hc = self._registry.get(path)
        if hc is None:
            raise _not_found(f"The hybrid connection '{path}'")
        return hc.path

    def _scope_exists(self, scope: str) -> None:
        if scope:
            self._existing_entity(scope)

    def _hc_json(self, path: str) -> dict[str, Any]:
        hc = self._registry.get(path)
        assert hc is not None
        created, updated = self._times(path)
        return {
            "id": f"{MANAGEMENT_PREFIX}/hybridConnections/{hc.path}",
            "name": hc.path,
            "type": HC_TYPE,
            "properties": {
                "createdAt": _iso(created),
                "updatedAt": _iso(updated),
                "listenerCount": self._listener_count(hc),
                "requiresClientAuthorization": hc.config.requires_client_authorization,
                "userMetadata": hc.config.user_metadata,
                "status": hc.config.status.value,
                # hyco's own (Azure has no inspector): record relayed HTTP requests (docs/operations.md).
                "inspect": hc.config.inspect,
            },
        }

    def _times(self, path: str) -> tuple[float, float]:
        """createdAt and updatedAt of an entity (configured and auto-created ones: the relay's start)."""
        record = self._namespace.record(path)
        return (record.created_at, record.updated_at) if record else (self._started, self._started)

    async def _put_entity(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        props = _properties(body, {"requiresClientAuthorization", "userMetadata", "status", "inspect"})
        if self._namespace.from_config(path):
            raise _read_only(f"The hybrid connection '{path}'")
        now = self._clock()
        record = self._namespace.record(path) or EntityRecord(path=path, created_at=now)
        if "requiresClientAuthorization" in props:
            record = replace(
                record, requires_client_authorization=_flag(props, "requiresClientAuthorization")
            )
        if "userMetadata" in props:
            metadata = props["userMetadata"]
            if not isinstance(metadata, str) or len(metadata) > _MAX_METADATA:
                raise ManagementError(
                    400, "BadRequest", f"'userMetadata' must be text of at most {_MAX_METADATA} characters."
                )
            record = replace(record, user_metadata=metadata)
        if "inspect" in props:
            record = replace(record, inspect=_flag(props, "inspect"))
        if "status" in props:
            try:
                record = replace(record, status=EntityStatus(props["status"]))
            except ValueError:
                allowed = ", ".join(s.value for s in EntityStatus)
                raise ManagementError(400, "BadRequest", f"'status' must be one of {allowed}.") from None
        if self._registry.get(path) is None and self._registry.full:
            raise ManagementError(
                403, "QuotaExceeded", "The namespace has the most hybrid connections allowed."
            )
        await self._namespace.store.put_entity(replace(record, updated_at=now))
        return self._hc_json(path)

    async def _delete_entity(self, path: str) -> web.Response:
        if self._namespace.from_config(path):
            raise _read_only(f"The hybrid connection '{path}'")
        deleted = await self._namespace.store.delete_entity(path)
        return web.Response(status=200 if deleted else 204)

    # --- authorization rules ---

    def _existing_rule(self, scope: str, name: str) -> RuleView:
        self._scope_exists(scope)
        view = self._namespace.rule(scope, name)
        if view is None:
            where = f"hybrid connection '{scope}'" if scope else "namespace"
            raise _not_found(f"The authorization rule '{name[:64]}' of the {where}")
        return view

    def _rule_json(self, view: RuleView) -> dict[str, Any]:
        base = f"{MANAGEMENT_PREFIX}/hybridConnections/{view.scope}" if view.scope else MANAGEMENT_PREFIX
        return {
            "id": f"{base}/authorizationRules/{view.rule.name}",
            "name": view.rule.name,
            "type": RULE_TYPE[bool(view.scope)],
            "properties": {"rights": sorted(r.value for r in view.rule.rights)},
        }

    async def _put_rule(self, scope: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        props = _properties(body, {"rights"})
        self._scope_exists(scope)
        if scope and not self._namespace.from_config(scope) and self._namespace.record(scope) is None:
            raise ManagementError(
                409,
                "Conflict",
                f"The hybrid connection '{scope}' was created by a listener and is not kept; create it with "
                "PUT first, then add rules to it.",
            )
        if not _RULE_NAME.fullmatch(name):
            raise ManagementError(
                400,
                "BadRequest",
                f"Rule names are 1 to {MAX_KEY_NAME_LENGTH} letters, digits, '.', '-' or '_'.",
            )
        rights = _rights(props.get("rights"))
        existing = self._namespace.rule(scope, name)
        now = self._clock()
        if existing is not None and existing.from_config:
            raise _read_only(f"The authorization rule '{existing.rule.name}'")
        if existing is None:
            rule = AuthorizationRule(name, Secret(generate_key()), rights, Secret(generate_key()))
            record = RuleRecord(scope, rule, now, now)
        else:
            record = RuleRecord(scope, replace(existing.rule, rights=rights), existing.created_at, now)
        await self._namespace.store.put_rule(record)
        return self._rule_json(RuleView(scope, record.rule, False, record.created_at, now))

    async def _delete_rule(self, scope: str, name: str) -> web.Response:
        self._scope_exists(scope)
        existing = self._namespace.rule(scope, name)
        if existing is not None and existing.from_config:
            raise _read_only(f"The authorization rule '{existing.rule.name}'")
        deleted = await self._namespace.store.delete_rule(scope, name)
        return web.Response(status=200 if deleted else 204)

    async def _regenerate(self, view: RuleView, body: dict[str, Any]) -> RuleView:
        unknown = sorted(set(body) - {"keyType", "key"})
        if unknown:
            raise ManagementError(
                400, "BadRequest", f"Unknown member(s) {', '.join(unknown)}; send keyType and key."
            )
        key_type = body.get("keyType")
        if key_type not in ("PrimaryKey", "SecondaryKey"):
            raise ManagementError(400, "BadRequest", "'keyType' must be 'PrimaryKey' or 'SecondaryKey'.")
        key = Secret(_check_key(body["key"]) if body.get("key") is not None else generate_key())
        if view.from_config:
            raise _read_only(f"The authorization rule '{view.rule.name}'")
        now = self._clock()
        if key_type == "PrimaryKey":
            rule = replace(view.rule, primary_key=key)
        else:
            rule = replace(view.rule, secondary_key=key)
        await self._namespace.store.put_rule(RuleRecord(view.scope, rule, view.created_at, now))
        return RuleView(view.scope, rule, False, view.created_at, now)

    def _keys_json(self, request: web.Request, view: RuleView) -> dict[str, Any]:
        endpoint = self._endpoint(request)
        rule = view.rule

        def connection_string(key: Secret | None) -> str:
            if key is None:
                return ""
            return str(
                RelayConnectionString(
                    endpoint=endpoint,
                    entity_path=view.scope or None,
                    shared_access_key_name=rule.name,
                    shared_access_key=key.value,
                )
            )

        return {
            "primaryConnectionString": connection_string(rule.primary_key),
            "secondaryConnectionString": connection_string(rule.secondary_key),
            "primaryKey": rule.primary_key.value,
            "secondaryKey": rule.secondary_key.value if rule.secondary_key else "",
            "keyName": rule.name,
        }

    def _endpoint(self, request: web.Request) -> str:
        """The namespace address clients use: sb:// for TLS (as Azure), ws:// for a plain relay."""
        if self._public_url:
            base = self._public_url
            for scheme, new in (("wss://", "sb://"), ("https://", "sb://"), ("http://", "ws://")):
                base = base.replace(scheme, new, 1)
            return f"{base}/"
        return f"{'sb' if request.secure else 'ws'}://{request.host}/"

    # --- runtime information (the .NET SDK's GetRuntimeInformationAsync) ---

    async def runtime_information(self, request: web.Request, raw_path: str) -> web.Response:
        """Answer ``GET /{hc}?api-version=...`` with ``X-PROCESS-AT: ServiceBus`` (protocol.md 1.8).

        An unknown path gets an empty Atom feed (the SDK maps it to EndpointNotFound); errors are
        ``<Error><Code/><Detail/></Error>``.
        """
        path = raw_path.strip("/")
        hc = self._registry.get(path)
        try:
            self._authorize(request, self._token(request), hc.path if hc is not None else path)
        except RelayError as exc:
            # Service Bus answers a missing Manage claim with 401 (the .NET SDK reads 403 as QuotaExceeded).
            status = 401 if exc.http_status == 403 else exc.http_status
            body = f"<Error><Code>{status}</Code><Detail>{escape(exc.description)}</Detail></Error>"
            return web.Response(status=status, text=body, content_type="application/xml")
        if hc is None:
            feed = (
                '<feed xmlns="http://www.w3.org/2005/Atom">'
                '<title type="text">Publicly Listed Services</title>'
                f"<id>{escape(str(request.url))}</id><updated>{_iso(self._clock())}</updated></feed>"
            )
            return web.Response(
                text=feed, headers={"Content-Type": "application/atom+xml;type=feed;charset=utf-8"}
            )
        created, updated = self._times(hc.path)
        parts = [f"<CreatedAt>{_iso(created)}</CreatedAt><UpdatedAt>{_iso(updated)}</UpdatedAt>"]
        parts.append(
            f"<RequiresClientAuthorization>{str(hc.config.requires_client_authorization).lower()}"
            "</RequiresClientAuthorization>"
        )
        if hc.config.user_metadata:
            parts.append(f"<UserMetadata>{escape(hc.config.user_metadata)}</UserMetadata>")
        parts.append(f"<ListenerCount>{self._listener_count(hc)}</ListenerCount>")
        entry = (
            '<entry xmlns="http://www.w3.org/2005/Atom">'
            f'<id>{escape(str(request.url))}</id><title type="text">{escape(hc.path)}</title>'
            f"<updated>{_iso(updated)}</updated>"
            '<content type="application/xml">'
            f'<HybridConnectionDescription xmlns="{_CONNECT_NS}" '
            'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
            f"{''.join(parts)}</HybridConnectionDescription></content></entry>"
        )
        return web.Response(
            text=entry, headers={"Content-Type": "application/atom+xml;type=entry;charset=utf-8"}
        )


def is_runtime_information_request(request: web.Request) -> bool:
    """Whether a request to an entity path is the SDKs' runtime-information GET rather than relayed HTTP."""
    return request.method == "GET" and request.headers.get("X-PROCESS-AT", "").lower() == "servicebus"


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": {"code": code, "message": message}}, status)
