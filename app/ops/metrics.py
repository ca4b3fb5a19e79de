"""Prometheus metrics of the service, served at `/metrics` with faust's own sensors.

Counters are incremented once per batch (with the batch's count), never per tick, so
they stay off the hot path's per-tick cost.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from app.ops.health import HealthRegistry

TICKS_IN = Counter(
    "ingest_ticks_in_total", "Raw records consumed by the pipeline, per source.", ["source"]
)
TICKS_OUT = Counter(
    "ingest_ticks_out_total", "Ticks written to market-data-stream, per stream source.", ["stream"]
)
REJECTS = Counter(
    "ingest_rejects_total",
    "Records sent to market-data-rejects, per stage and reason.",
    ["stage", "reason"],
)
CONTEXT_OUT = Counter(
    "ingest_context_out_total", "Observations written to market-context-stream.", ["provider"]
)
SOURCE_RESTARTS = Counter(
    "ingest_source_restarts_total",
    "Source tasks (broker streams, collectors) restarted after a crash or an early return.",
    ["source", "kind"],
)
BATCH_SECONDS = Histogram(
    "ingest_batch_processing_seconds",
    "Time to process one raw Kafka message (a batch).",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
END_TO_END_SECONDS = Histogram(
    "ingest_end_to_end_latency_seconds",
    "From a source reading a tick off the wire to its best price being produced.",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0),
)


class LiveStateCollector(Collector):
    """Connection state of the broker feeds and the NATS bridge, read at scrape time.

    The values come from the same live objects that /health reports, so the two never
    disagree and the hot paths do no extra bookkeeping for metrics.
    """

    def __init__(self, health: HealthRegistry) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        brokers = self.health.section("broker_connections") or {}
        connected = GaugeMetricFamily(
            "ingest_source_connected", "1 while a broker stream is connected.", labels=["source"]
        )
        reconnects = CounterMetricFamily(
            "ingest_source_reconnects", "Broker stream reconnects.", labels=["source"]
        )
        for name, state in sorted(brokers.items()):
            if state["status"] == "elsewhere":
                continue  # another worker of the group streams it and reports it
            connected.add_metric([name], 1.0 if state["status"] == "connected" else 0.0)
            reconnects.add_metric([name], state.get("reconnects", 0))  # 0 when disabled
        yield connected
        yield reconnects
        bridge = self.health.section("nats_bridge")
        if bridge is not None:
            yield GaugeMetricFamily(
                "ingest_nats_connected",
                "1 while the bridge is connected to NATS.",
                value=1.0 if bridge["state"] == "connected" else 0.0,
            )
            yield GaugeMetricFamily(
                "ingest_bridge_lag_messages",
                "Kafka messages consumed by the bridge and not yet acknowledged by NATS.",
                value=bridge["lag_messages"],
            )
            yield CounterMetricFamily(
                "ingest_bridge_published", "Messages acknowledged by NATS.", value=bridge["acked"]
            )
            yield CounterMetricFamily(
                "ingest_bridge_resends", "NATS publishes sent again.", value=bridge["resends"]
            )
