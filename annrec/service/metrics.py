"""Prometheus metrics of one app (its own :class:`~prometheus_client.CollectorRegistry`).

Exposed at ``GET /metrics`` in the Prometheus text format:

* ``annrec_http_requests_total{method,route,status}`` and ``annrec_http_errors_total{route,status}``
  (4xx and 5xx answers);
* ``annrec_http_request_duration_seconds{method,route}``: latency histogram per route template;
* ``annrec_http_requests_in_progress``;
* ``annrec_index_items{index,backend}``, ``annrec_index_dim{index}``, ``annrec_index_memory_bytes{index}``
  (read at scrape time), ``annrec_registry_generation``;
* ``annrec_index_writes_total{index,op}``, ``annrec_search_batch_size``, ``annrec_search_batch_queue_seconds``, ``annrec_index_snapshot_seconds{index}``, ``annrec_index_snapshot_failures_total``,
  ``annrec_reloads_total{result}``.

With ``--workers N`` > 1 each worker process keeps its own figures; the answering worker's are shown.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily

disable_created_metrics()  # no *_created series: they double the output and nobody graphs them

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _IndexCollector:
    def __init__(self, snapshot: Callable[[], object]) -> None:
        self._snapshot = snapshot

    def collect(self):
        snap = self._snapshot()
        items = GaugeMetricFamily("annrec_index_items", "Live items in each served index", labels=["index", "backend"])
        dim = GaugeMetricFamily("annrec_index_dim", "Vector dimension of each served index", labels=["index"])
        mem = GaugeMetricFamily("annrec_index_memory_bytes", "Approximate size of each index's backend structure",
                                labels=["index"])
        gen = GaugeMetricFamily("annrec_registry_generation", "Reload generation of the served artifacts")
        if snap is not None:
            for name, srv in sorted(snap.indexes.items()):
                items.add_metric([name, srv.index.backend], len(srv.index))
                dim.add_metric([name], srv.index.dim)
                size = srv.memory_bytes()
                mem.add_metric([name], size or 0)
            gen.add_metric([], snap.generation)
        yield from (items, dim, mem, gen)


class ServiceMetrics:
    """The metric objects of one app; ``render()`` gives the ``/metrics`` body."""

    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self, snapshot: Callable[[], object]) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("annrec_http_requests_total", "HTTP requests answered",
                                ["method", "route", "status"], registry=r)
        self.errors = Counter("annrec_http_errors_total", "HTTP answers with a 4xx or 5xx status",
                              ["route", "status"], registry=r)
        self.latency = Histogram("annrec_http_request_duration_seconds", "Time to answer a request, per route",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_progress = Gauge("annrec_http_requests_in_progress", "Requests being answered now", registry=r)
        self.writes = Counter("annrec_index_writes_total", "Items upserted or deleted", ["index", "op"], registry=r)
        self.saves = Histogram("annrec_index_snapshot_seconds", "Time to write a snapshot of an index (background)",
                               ["index"],
                               buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self.save_failures = Counter("annrec_index_snapshot_failures_total", "Failed snapshots (the log keeps the writes)",
                                     ["index"], registry=r)
        self.reloads = Counter("annrec_reloads_total", "Admin reloads", ["result"], registry=r)
        self.batch_size = Histogram("annrec_search_batch_size", "Searches answered together by one batch search "
                                    "(dynamic batching)", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.batch_queue = Histogram("annrec_search_batch_queue_seconds", "Wait of a batch's oldest search before "
                                     "its batch started", buckets=LATENCY_BUCKETS, registry=r)
        r.register(_IndexCollector(snapshot))
        self._children: dict[tuple[str, str], tuple] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route)
        child = self._children.get(key)
        if child is None:
            child = (self.latency.labels(method, route), {})
            self._children[key] = child
        hist, counters = child
        hist.observe(seconds)
        c = counters.get(status)
        if c is None:
            c = counters[status] = self.requests.labels(method, route, str(status))
        c.inc()
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def on_batch(self, size: int, queued: float) -> None:
        self.batch_size.observe(size)
        self.batch_queue.observe(queued)

    def on_save(self, index: str, seconds: float, ok: bool) -> None:
        self.saves.labels(index).observe(seconds)
        if not ok:
            self.save_failures.labels(index).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
