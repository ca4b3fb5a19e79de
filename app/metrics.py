"""Prometheus metrics of the service, served at `/metrics` with faust's own sensors.

Counters are incremented once per batch (with the batch's count), never per tick, so
they stay off the hot path's per-tick cost.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
SOURCE_CONNECTED = Gauge(
    "ingest_source_connected", "1 while a broker stream is connected.", ["source"]
)
SOURCE_RECONNECTS = Counter(
    "ingest_source_reconnects_total", "Broker stream reconnects.", ["source"]
)
BRIDGE_PUBLISHED = Counter(
    "ingest_bridge_published_total", "Messages acknowledged by NATS, per subject.", ["subject"]
)
BRIDGE_LAG = Gauge(
    "ingest_bridge_lag_messages", "Kafka messages consumed by the bridge but not yet acked."
)
NATS_CONNECTED = Gauge("ingest_nats_connected", "1 while the bridge is connected to NATS.")
