"""Prometheus metrics: requests, bytes in and out, blocks, bytes stored, pins."""

from __future__ import annotations

from collections.abc import Callable

from edgefiles.node.core import Core
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class StoreCollector:
    def __init__(self, core: Core):
        self.core = core

    def collect(self):
        blocks, size = self.core.store_totals()
        yield GaugeMetricFamily("edgefiles_blocks", "Blocks stored", value=blocks)
        yield GaugeMetricFamily("edgefiles_block_bytes", "Bytes of stored blocks", value=size)
        yield GaugeMetricFamily("edgefiles_pins", "Pinned roots", value=self.core.pinned_roots())
        yield GaugeMetricFamily("edgefiles_names", "Names set", value=len(self.core.registry.live()))


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


class Metrics:
    def __init__(self, core: Core, swarm_counters: Callable[[], dict[str, int]] | None = None):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgefiles_http_requests", "HTTP requests answered", ["method", "status"], registry=self.registry
        )
        self.bytes_in = Counter("edgefiles_http_received_bytes", "Request body bytes", registry=self.registry)
        self.bytes_out = Counter("edgefiles_http_sent_bytes", "Response body bytes", registry=self.registry)
        self.registry.register(StoreCollector(core))
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

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            metrics.requests.labels(scope["method"], str(status)).inc()
