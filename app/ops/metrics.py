"""Prometheus metrics of the service, served at `/metrics` with faust's own sensors.

Counters are incremented once per batch (with the batch's count), never per tick, so
they stay off the hot path's per-tick cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
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
SYMBOL_TICKS_IN = Counter(
    "ingest_symbol_ticks_in_total",
    "Live broker records consumed, per symbol (all brokers): the 'no ticks' alert's input.",
    ["symbol", "asset_class"],
)
MARKET_OPEN = Gauge(
    "ingest_market_open",
    "1 while the market of an asset class is open, 0 while closed (set by the market hours).",
    ["asset_class"],
)
CANDLES_OUT = Counter(
    "ingest_candles_out_total",
    "Candles written to market-candles (revisions included), per timeframe.",
    ["timeframe"],
)
CANDLE_LATE_REJECTS = Counter(
    "candle_late_rejects_total",
    "Ticks refused by a candle timeframe because its window was final (late_for_candle).",
    ["source", "timeframe"],
)
END_TO_END_SECONDS = Histogram(
    "ingest_end_to_end_latency_seconds",
    "From a source reading a tick off the wire to its best price being produced.",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0),
)


class LabelledCounter:
    """A counter's children looked up once per label value (`labels()` is costly per call)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.children: dict[str, Any] = {}

    def child(self, label: str) -> Any:
        child = self.children.get(label)
        if child is None:
            child = self.children[label] = self.counter.labels(label)
        return child


class PipelineTimings:
    """Live timing of this worker's processing (observability only; never in Kafka or tables)."""

    def __init__(self, alpha: float = 0.05) -> None:
        self.alpha = alpha
        self.batches = 0
        self.ticks = 0
        self.batch_ms = 0.0
        self.distribution_latency_ms: float | None = None

    def observe(self, started: float, messages: int, records: int, last_receive_ns: int) -> None:
        elapsed = time.perf_counter() - started
        BATCH_SECONDS.observe(elapsed / max(messages, 1))
        self.batches += messages
        self.ticks += records
        self.batch_ms += self.alpha * (elapsed * 1000 / max(messages, 1) - self.batch_ms)
        if last_receive_ns:
            latency_s = (time.time_ns() - last_receive_ns) / 1e9
            END_TO_END_SECONDS.observe(latency_s)
            prev = self.distribution_latency_ms
            latency = latency_s * 1000
            self.distribution_latency_ms = (
                latency if prev is None else prev + self.alpha * (latency - prev)
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
        enabled = GaugeMetricFamily(
            "ingest_source_enabled",
            "1 for a configured broker stream that is enabled (alerts skip disabled ones).",
            labels=["source"],
        )
        for name, state in sorted(brokers.items()):
            if state["status"] == "elsewhere":
                continue  # another worker of the group streams it and reports it
            connected.add_metric([name], 1.0 if state["status"] == "connected" else 0.0)
            reconnects.add_metric([name], state.get("reconnects", 0))  # 0 when disabled
            enabled.add_metric([name], 0.0 if state["status"] == "disabled" else 1.0)
        yield connected
        yield reconnects
        yield enabled
        yield from _collector_metrics(self.health.section("collectors") or {})
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


COLLECTOR_STATUSES = ("starting", "ok", "failing", "rate_limited", "missing_api_key", "disabled")


def _collector_metrics(collectors: dict[str, dict]) -> Iterator[Metric]:
    """The collectors' /health state as series: status (one-hot), failures, polls."""
    status = GaugeMetricFamily(
        "ingest_collector_status",
        "1 for the collector's current status (starting, ok, failing, rate_limited, ...).",
        labels=["collector", "provider", "status"],
    )
    consecutive = GaugeMetricFamily(
        "ingest_collector_consecutive_failures",
        "Failed polls in a row (0 after a successful poll).",
        labels=["collector", "provider"],
    )
    polls = CounterMetricFamily(
        "ingest_collector_polls", "Polls made by a collector.", labels=["collector", "provider"]
    )
    failures = CounterMetricFamily(
        "ingest_collector_failures", "Polls that failed.", labels=["collector", "provider"]
    )
    records = CounterMetricFamily(
        "ingest_collector_records",
        "Provider answers written to raw.external.data.",
        labels=["collector", "provider"],
    )
    for name, state in sorted(collectors.items()):
        labels = [name, state["provider"]]
        current = state["status"]
        for value in sorted({*COLLECTOR_STATUSES, current}):
            status.add_metric([*labels, value], 1.0 if value == current else 0.0)
        consecutive.add_metric(labels, state["consecutive_failures"])
        polls.add_metric(labels, state["polls"])
        failures.add_metric(labels, state.get("failures", 0))
        records.add_metric(labels, state["records"])
    yield from (status, consecutive, polls, failures, records)
