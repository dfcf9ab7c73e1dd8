"""The relay's metrics: Prometheus text at ``/$metrics`` and per-entity live counts for ``hyco status``.

Names follow Azure Monitor's Hybrid Connections metrics with Prometheus conventions (docs/operations.md maps
each one). Labels stay bounded: ``entity`` is a registered hybrid connection's path (``""`` for requests that
named none), ``result`` one of a few words, ``code`` an HTTP status; never a connection or tracking id.

The front door reports how each request ended (:meth:`RelayMetrics.listener_ended`,
:meth:`RelayMetrics.sender_ended`, :meth:`RelayMetrics.http_done`); the listener hub reports each channel that
opened (:meth:`RelayMetrics.listener_online`) and the stream forwarder each splice
(:meth:`RelayMetrics.splice_started`, :meth:`RelayMetrics.splice_ended`), so successes count at once; listener
counts are read from the registry at scrape time, so they are never out of step.

The running splices are kept as :class:`LiveConnection` objects (:attr:`RelayMetrics.live`) that read their
splice's running byte counts, so ``hyco status`` and the dashboard show bytes as they move, not only when a
connection ends.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from hyco.server.registry import HybridConnection

__all__ = [
    "CONTENT_TYPE",
    "EntityTotals",
    "FamilyData",
    "LiveConnection",
    "RelayMetrics",
    "families_of",
    "merged_text",
    "result_of",
]

#: The Prometheus text format's content type (version 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_Metric = TypeVar("_Metric", bound=MetricWrapperBase)
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def result_of(status: int) -> str:
    """The ``result`` label for a handshake that ended with ``status`` (101 = success)."""
    return {
        101: "success",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        408: "timeout",
        503: "busy",
        504: "timeout",
    }.get(status, "rejected" if 400 <= status < 500 else "error")


@dataclass
class EntityTotals:
    """Counts for one hybrid connection since the relay started (``hyco status``, the dashboard)."""

    active_connections: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    http_requests: int = 0


@dataclass(eq=False)
class LiveConnection:
    """A relayed WebSocket connection now spliced, as ``hyco status`` and the dashboard show it.

    Attributes:
        entity: the hybrid connection's path.
        tracking_id: the connection's tracking id (as in the relay's log lines).
        remote: the sender's address.
        since: when it was spliced (seconds since the epoch).
        moved: the splice's running byte counts, sender to listener and back
            (:meth:`~hyco.server.splice.Splice.moved`).
    """

    entity: str
    tracking_id: str
    remote: str
    since: float
    moved: Callable[[], tuple[int, int]]

    @property
    def bytes_in(self) -> int:
        """Bytes moved so far from the sender to the listener."""
        return self.moved()[0]

    @property
    def bytes_out(self) -> int:
        """Bytes moved so far from the listener to the sender."""
        return self.moved()[1]

    def json(self) -> dict[str, object]:
        """The connection in ``/$management/status``."""
        return {
            "entity": self.entity,
            "trackingId": self.tracking_id,
            "remote": self.remote,
            "since": self.since,
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
        }


class _ListenerGauge(Collector):
    """``hyco_active_listeners{entity}``, read from the registry at scrape time."""

    def __init__(self, entities: Callable[[], list[HybridConnection]]) -> None:
        self._entities = entities

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "hyco_active_listeners",
            "Listeners connected (Azure: ListenerConnections-Active).",
            labels=["entity"],
        )
        for hc in self._entities():
            family.add_metric([hc.path], len(hc.listeners))
        yield family


class RelayMetrics:
    """Every metric of one relay, in a registry of its own (two relays in one process do not mix).

    Args:
        entities: the registry's hybrid connections (for the listener gauge).
    """

    def __init__(self, entities: Callable[[], list[HybridConnection]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._listener_connections = Counter(
            "hyco_listener_connections",
            "Listener control-channel attempts by result.",
            ["entity", "result"],
            registry=r,
        )
        self._sender_connections = Counter(
            "hyco_sender_connections",
            "Sender WebSocket connection attempts by result.",
            ["entity", "result"],
            registry=r,
        )
        self._active_connections = Gauge(
            "hyco_active_connections", "Relayed WebSocket connections now spliced.", ["entity"], registry=r
        )
        self._listener_disconnects = Counter(
            "hyco_listener_disconnects", "Listener control channels that ended.", ["entity"], registry=r
        )
        self._sender_disconnects = Counter(
            "hyco_sender_disconnects", "Relayed WebSocket connections that ended.", ["entity"], registry=r
        )
        self._bytes = Counter(
            "hyco_bytes_transferred",
            "Bytes relayed; direction in = sender to listener, out = listener to sender.",
            ["entity", "direction"],
            registry=r,
        )
        self._http_requests = Counter(
            "hyco_http_requests", "Relayed HTTP requests by status code.", ["entity", "code"], registry=r
        )
        self._http_duration = Histogram(
            "hyco_http_request_duration_seconds",
            "Relayed HTTP requests, from arrival to the end of the response.",
            ["entity"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self._rendezvous_duration = Histogram(
            "hyco_rendezvous_duration_seconds",
            "From a sender's arrival to its splice with the accepting listener.",
            ["entity"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        build = Gauge("hyco_build_info", "hyco's version and Python's.", ["version", "python"], registry=r)
        build.labels(_hyco_version(), platform.python_version()).set(1)
        r.register(_ListenerGauge(entities))
        self.totals: dict[str, EntityTotals] = {}
        #: The relayed WebSocket connections now spliced, oldest first.
        self.live: dict[LiveConnection, None] = {}
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}

    def _labels(self, metric: _Metric, *values: str) -> _Metric:
        """``metric.labels(*values)``, kept: prometheus_client checks and locks on every ``labels()`` call,
        several times per rendezvous and per HTTP request (its children live as long as the metric anyway)."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def text(self) -> bytes:
        """The ``/$metrics`` body."""
        return generate_latest(self.registry)

    def families(self) -> list[FamilyData]:
        """Every metric as plain data, for another worker's merged ``/$metrics`` (:func:`merged_text`)."""
        return families_of(self.registry)

    def _totals(self, entity: str) -> EntityTotals:
        totals = self.totals.get(entity)
        if totals is None:
            totals = self.totals[entity] = EntityTotals()
        return totals

    # --- reports ---

    def listener_online(self, entity: str) -> None:
        """A listener's control channel opened."""
        self._labels(self._listener_connections, entity, "success").inc()

    def listener_ended(self, entity: str, status: int) -> None:
        """A listener's ``listen`` request ended: refused with ``status``, or 101 once its channel closed."""
        if status == 101:
            self._labels(self._listener_disconnects, entity).inc()
        else:
            self._labels(self._listener_connections, entity, result_of(status)).inc()

    def sender_ended(self, entity: str, status: int) -> None:
        """A sender's ``connect`` ended: refused or rejected with ``status``, or 101 after its splice."""
        if status == 101:
            self._labels(self._sender_disconnects, entity).inc()
        else:
            self._labels(self._sender_connections, entity, result_of(status)).inc()

    def splice_started(self, connection: LiveConnection, waited: float) -> None:
        """A sender and a listener were spliced ``waited`` seconds after the sender arrived."""
        entity = connection.entity
        self._labels(self._sender_connections, entity, "success").inc()
        self._labels(self._active_connections, entity).inc()
        self._labels(self._rendezvous_duration, entity).observe(waited)
        self._totals(entity).active_connections += 1
        self.live[connection] = None

    def splice_ended(self, connection: LiveConnection) -> None:
        """A splice ended; its bytes count from now on in the totals."""
        self.live.pop(connection, None)
        entity, bytes_in, bytes_out = connection.entity, connection.bytes_in, connection.bytes_out
        self._labels(self._active_connections, entity).dec()
        self._labels(self._bytes, entity, "in").inc(bytes_in)
        self._labels(self._bytes, entity, "out").inc(bytes_out)
        totals = self._totals(entity)
        totals.active_connections -= 1
        totals.bytes_in += bytes_in
        totals.bytes_out += bytes_out

    def bytes_moved(self, entity: str) -> tuple[int, int]:
        """Bytes relayed for ``entity`` so far (in, out), the running connections' included."""
        totals = self.totals.get(entity) or EntityTotals()
        running = [c for c in self.live if c.entity == entity]
        return (
            totals.bytes_in + sum(c.bytes_in for c in running),
            totals.bytes_out + sum(c.bytes_out for c in running),
        )

    def http_done(self, entity: str, code: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        """A relayed HTTP request ended with ``code`` after ``seconds``."""
        self._labels(self._http_requests, entity, str(code)).inc()
        self._labels(self._http_duration, entity).observe(seconds)
        self._labels(self._bytes, entity, "in").inc(bytes_in)
        self._labels(self._bytes, entity, "out").inc(bytes_out)
        totals = self._totals(entity)
        totals.http_requests += 1
        totals.bytes_in += bytes_in
        totals.bytes_out += bytes_out


def _hyco_version() -> str:
    try:
        return version("hyco")
    except PackageNotFoundError:
        return "unknown"


#: One metric family as plain data (picklable, for the other workers): name, type, help text, and its samples
#: as (sample name, labels, value).
FamilyData = tuple[str, str, str, list[tuple[str, dict[str, str], float]]]


class _Families(Collector):
    """Metric families made elsewhere, for ``generate_latest``."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def families_of(registry: CollectorRegistry) -> list[FamilyData]:
    """What ``registry`` would expose, as plain data (another worker merges it: :func:`merged_text`)."""
    return [
        (f.name, f.type, f.documentation, [(x.name, dict(x.labels), x.value) for x in f.samples])
        for f in registry.collect()
    ]


def merged_text(processes: Sequence[list[FamilyData]]) -> bytes:
    """Several processes' metrics (the workers of one relay) as one relay's ``/$metrics`` text.

    Samples with the same name and labels are summed: every hyco metric is a count, a sum or a histogram over
    the connections each process served, or a gauge of what each holds (listeners, spliced connections).
    ``*_created`` samples take the earliest time, and ``hyco_build_info`` (the same in every process) is
    kept once. A family or sample only some processes have is kept as they report it.
    """
    heads: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for families in processes:
        for name, kind, documentation, samples in families:
            heads.setdefault(name, (kind, documentation))
            into = values.setdefault(name, {})
            for sample_name, labels, value in samples:
                key = (sample_name, tuple(sorted(labels.items())))
                if key not in into:
                    into[key] = value
                elif sample_name.endswith("_created"):
                    into[key] = min(into[key], value)
                elif name != "hyco_build_info":
                    into[key] += value
    out = []
    for name, (kind, documentation) in heads.items():
        merged = Metric(name, documentation, kind)
        for (sample_name, label_pairs), value in values[name].items():
            merged.add_sample(sample_name, dict(label_pairs), value)
        out.append(merged)
    registry = CollectorRegistry()
    registry.register(_Families(out))
    return generate_latest(registry)
