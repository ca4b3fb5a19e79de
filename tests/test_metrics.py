"""The Prometheus endpoint: counters move when ticks flow; live state is read at scrape time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from app.ops.health import HealthRegistry
from app.ops.metrics import LiveStateCollector
from app.wire import codec
from devstack.stack import StackConfig
from tests.support.kafka import create_topics, produce
from tests.support.worker import Worker


def sample(text: str, name: str) -> float:
    """Value of one sample line `name value` in the exposition text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_live_state_collector_reads_the_health_sections() -> None:
    health = HealthRegistry("data-ingestion", "1")
    health.add_section(
        "broker_connections",
        lambda: {
            "ic_markets": {"status": "connected", "reconnects": 2},
            "fxcm": {"status": "auth_failed", "reconnects": 7},
            "pepperstone": {"status": "disabled"},
        },
    )
    health.add_section(
        "nats_bridge",
        lambda: {"state": "disconnected", "lag_messages": 5, "acked": 40, "resends": 3},
    )
    registry = CollectorRegistry()
    registry.register(LiveStateCollector(health))
    text = generate_latest(registry).decode()
    assert sample(text, 'ingest_source_connected{source="ic_markets"}') == 1.0
    assert sample(text, 'ingest_source_connected{source="fxcm"}') == 0.0
    assert sample(text, 'ingest_source_reconnects_total{source="fxcm"}') == 7.0
    assert sample(text, 'ingest_source_connected{source="pepperstone"}') == 0.0
    assert sample(text, "ingest_nats_connected") == 0.0
    assert sample(text, "ingest_bridge_lag_messages") == 5.0
    assert sample(text, "ingest_bridge_published_total") == 40.0


def _batch(n: int, start_ms: int) -> bytes:
    t0 = 1_796_029_200_000_000_000 + start_ms * 1_000_000
    records = []
    for i in range(n):
        at = t0 + i * 100_000_000
        bid = 1_100_000_000 + i * 10_000
        if i == n - 1:
            bid = 1_100_100_000 + i * 10_000  # bid above ask: crossed_quote
        tick = codec.MarketTick(
            symbol="EURUSD",
            source="ic_markets",
            bid_e9=bid,
            ask_e9=1_100_050_000 + i * 10_000,
            event_time_ns=at,
            receive_time_ns=at + 2_000_000,
        )
        records.append(codec.RawRecord(source="ic_markets", format="tick", tick=tick))
    return codec.encode_raw_batch(records)


@pytest.mark.integration
async def test_counters_move_when_ticks_flow(
    clean_kafka: StackConfig, tmp_path: Path, app_id: str
) -> None:
    await create_topics(clean_kafka.kafka_bootstrap, ["raw.broker.ticks"], partitions=4)
    env = {
        "INGEST__NATS__STREAM_NAME": f"M{app_id[5:].upper()}",
        "INGEST__NATS__SUBJECT_PREFIX": f"m{app_id[5:]}",
        "INGEST__CANDLES__ENABLED": "false",  # the bridge counts the tick messages only
    }
    with Worker(clean_kafka, tmp_path, app_id, env=env) as worker:
        before = worker.get_text("/metrics")
        assert sample(before, 'ingest_ticks_in_total{source="ic_markets"}') == 0.0
        await produce(
            clean_kafka.kafka_bootstrap,
            "raw.broker.ticks",
            [(b"EURUSD", _batch(10, 0)), (b"EURUSD", _batch(5, 5000))],
        )
        deadline = time.monotonic() + 30
        text = before
        while time.monotonic() < deadline:
            text = worker.get_text("/metrics")
            if sample(text, "ingest_bridge_published_total") >= 2:
                break
            await asyncio.sleep(0.5)
    assert sample(text, 'ingest_ticks_in_total{source="ic_markets"}') == 15.0
    assert sample(text, 'ingest_rejects_total{reason="crossed_quote",stage="validate"}') == 2.0
    assert sample(text, 'ingest_ticks_out_total{stream="data-ingestion"}') == 13.0
    assert sample(text, "ingest_end_to_end_latency_seconds_count") >= 1
    assert sample(text, "ingest_nats_connected") == 1.0
    assert sample(text, "ingest_bridge_published_total") == 2.0
    assert sample(text, "ingest_bridge_lag_messages") == 0.0
