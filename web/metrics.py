"""Prometheus metrics: requests, bytes in and out, blocks, bytes stored, pins."""

from __future__ import annotations

import time
from collections.abc import Callable

from edgefiles.ans.registry import Registry
from edgefiles.node.core import Core
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    Summary,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class StoreCollector:
    def __init__(self, core: Core, registry: Registry):
        self.core = core
        self.registry = registry

    def collect(self):
        blocks, size = self.core.store_totals()
        yield GaugeMetricFamily("edgefiles_blocks", "Blocks stored", value=blocks)
        yield GaugeMetricFamily("edgefiles_block_bytes", "Bytes of stored blocks", value=size)
        yield GaugeMetricFamily("edgefiles_pins", "Pinned roots", value=self.core.pinned_roots())
        yield GaugeMetricFamily("edgefiles_names", "Names set", value=len(self.registry.live()))


class SwarmCollector:
    def __init__(self, counters: Callable[[], dict[str, int]]):
        self.counters = counters

    def collect(self):
        c = self.counters()
        if not c:
            return
        yield CounterMetricFamily(
            "edgefiles_bitswap_sent_bytes", "Block bytes served to peers", value=c["sent"]
        )
        yield CounterMetricFamily(
            "edgefiles_bitswap_received_bytes", "Block bytes fetched from peers", value=c["received"]
        )
        yield CounterMetricFamily(
            "edgefiles_bitswap_rejected_blocks", "Blocks from peers that matched no wanted CID",
            value=c["rejected"],
        )
        yield CounterMetricFamily(
            "edgefiles_names_table_records_sent", "Name records sent in table exchanges on joins",
            value=c["table_records_sent"],
        )
        yield CounterMetricFamily(
            "edgefiles_names_table_exchanges", "Name table exchanges with members finished (either side)",
            value=c["table_exchanges"],
        )
        yield CounterMetricFamily(
            "edgefiles_peers_refused",
            "Connections refused because the peer did not prove it holds the swarm key",
            value=c["peers_refused"],
        )
        hits = CounterMetricFamily(
            "edgefiles_peer_limit_hits", "Times a peer went over a --peer-max-* limit (bad_records: forged)",
            labels=["limit"],
        )
        for key, value in c.items():
            if key.startswith("limit_hits_"):
                hits.add_metric([key.removeprefix("limit_hits_")], value)
        yield hits


class Metrics:
    def __init__(self, core: Core, names: Registry,
                 swarm_counters: Callable[[], dict[str, int]] | None = None):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgefiles_http_requests", "HTTP requests answered", ["method", "status"], registry=self.registry
        )
        self.bytes_in = Counter("edgefiles_http_received_bytes", "Request body bytes", registry=self.registry)
        self.bytes_out = Counter("edgefiles_http_sent_bytes", "Response body bytes", registry=self.registry)
        # what upstream's fastify-metrics shows: per route, method and status
        labels = ["method", "route", "status_code"]
        self.duration = Histogram("http_request_duration_seconds", "request duration in seconds", labels,
                                  registry=self.registry)
        self.summary = Summary("http_request_summary_seconds", "request duration in seconds summary", labels,
                               registry=self.registry)
        ProcessCollector(registry=self.registry)
        self.registry.register(StoreCollector(core, names))
        if swarm_counters is not None:
            self.registry.register(SwarmCollector(swarm_counters))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        status = 500

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                metrics.bytes_in.inc(len(message.get("body", b"")))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                metrics.bytes_out.inc(len(message.get("body", b"")))
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            seconds = time.perf_counter() - started
            metrics.requests.labels(scope["method"], str(status)).inc()
            labels = (scope["method"], route_label(scope.get("path", "")), str(status))
            metrics.duration.labels(*labels).observe(seconds)
            metrics.summary.labels(*labels).observe(seconds)


_PLAIN_ROUTES = {"/", "/health", "/metrics", "/uploader", "/uploader/"}
# the labels of /api/ routes: their first three segments. Any other path under /api/ is one
# label: a label per path let anyone grow the registry without end, and published on /metrics
# whatever a client put in a mistyped URL (a token, say)
_API_ROUTES = {"/api/v2/auth", "/api/v2/names", "/api/v2/car", "/api/v2/node", "/api/v1/storage",
               "/api/v1/admin", "/api/v1/user", "/api/openapi.json"}
_CONTEXT_ROUTES = {"clean": "/v1/context/:projectId/clean", "cache": "/v1/context/:projectId/cache"}


def route_label(path: str) -> str:
    """The route pattern, as upstream labels it (bounded: never the concrete file path)."""
    parts = path.split("/")
    if path.startswith("/v1/files/"):
        return "/v1/files/:teamId/:projectId/*"
    if path.startswith("/v1/quota/"):
        return "/v1/quota/:teamId/:projectId"
    if path.startswith("/v1/context/"):
        if len(parts) > 4 and parts[4] in _CONTEXT_ROUTES:
            return _CONTEXT_ROUTES[parts[4]] + ("/:scope" if len(parts) > 5 else "")
        return "/v1/context/:projectId/:scope" + ("/keys" if path.endswith("/keys") else "")
    if path.startswith("/api/v2/files"):
        return "/api/v2/files/*"
    if path.startswith("/api/"):
        label = "/".join(parts[:4])
        return label if label in _API_ROUTES else "/api/*"
    return path if path in _PLAIN_ROUTES else "/*"  # host-route content: any path at all
